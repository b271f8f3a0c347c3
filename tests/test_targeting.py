"""One targeting vocabulary: ``select`` / ``targets=`` give every family the same layers, on our models and on a
Hugging Face model built from a config (random weights, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseforge
from sparseforge import masks, spectral
from sparseforge.errors import UserError
from sparseforge.models import create_model
from sparseforge.optim import build_prox_map
from sparseforge.pruning import prune_global, scores
from sparseforge.targeting import classifier_name, residual_joined, structured_targets


def _layers_of(keys) -> set[str]:
    return {k.rpartition(".")[0] for k in keys}


def _opt_model():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                                 max_position_embeddings=32, word_embed_proj_dim=16)
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(cfg).eval()


def _same_layers_everywhere(model, names, batch):
    """WGSEF, SNIP, SST and masks all act on exactly ``names``."""
    pm = build_prox_map(model, "wgsef", weight=0.1, k=0.5, targets=names)
    s = scores(model, "snip", batch=batch, targets=names)
    m = prune_global(model, s, 0.5, targets=names)
    ms = masks.from_model(model, targets=names)
    assert _layers_of(pm) == _layers_of(s) == _layers_of(m) == _layers_of(ms) == set(names)
    spectral.convert(model, "sst", rank=2, targets=names)
    converted = {n for n, mod in model.named_modules() if isinstance(mod, spectral.SpectralLinear)}
    assert converted == set(names)


def test_same_targets_same_layers_on_our_model():
    model = create_model("digits_mlp")
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    names = sparseforge.select(model, types=nn.Linear, skip_classifier=True, example_inputs=x)
    assert names == ["net.1", "net.3"]
    _same_layers_everywhere(model, names, (x, y))


def test_same_targets_same_layers_on_a_hugging_face_model():
    model = _opt_model()
    ids = torch.randint(0, 64, (2, 8))
    names = sparseforge.select(model, include="*.fc?", types=nn.Linear)
    assert names == [f"model.decoder.layers.{i}.fc{j}" for i in range(2) for j in (1, 2)]
    pm = build_prox_map(model, "wgsef", weight=0.1, k=0.5, targets=names)
    s = scores(model, "snip", batch=(ids, ids), targets=names)  # next-token-style targets (B, T)
    ms = masks.from_model(model, targets=names)
    assert _layers_of(pm) == _layers_of(s) == _layers_of(ms) == set(names)
    spectral.convert(model, "sst", rank=2, targets=names)
    assert {n for n, m in model.named_modules() if isinstance(m, spectral.SpectralLinear)} == set(names)


def test_classifier_found_from_the_graph_not_registration_order():
    class HeadFirst(nn.Module):  # the classifier is registered first, used last
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 3)
            self.body = nn.Linear(4, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    m = HeadFirst()
    assert classifier_name(m) == "head"  # torch.fx
    assert classifier_name(m, example_inputs=torch.randn(2, 4)) == "head"  # autograd graph
    assert sparseforge.select(m, skip_classifier=True) == ["body"]
    opt = _opt_model()  # not fx-traceable: Hugging Face's get_output_embeddings, or one forward pass
    assert classifier_name(opt) == "lm_head"
    assert classifier_name(opt, example_inputs={"input_ids": torch.randint(0, 64, (2, 8))}) == "lm_head"


def test_default_is_every_layer_of_the_family_types_classifier_included():
    model = create_model("lenet5")
    everything = ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    assert sparseforge.select(model, types=(nn.Conv2d, nn.Linear)) == everything
    assert _layers_of(build_prox_map(model, "group_lasso", weight=0.1)) == set(everything)
    assert _layers_of(scores(model, "magnitude")) == set(everything)
    assert structured_targets(model, example_inputs=torch.randn(2, 1, 8, 8)) == everything[:-1]


def test_residual_models_keep_block_internals_only():
    model = create_model("resnet20")
    joined = set(residual_joined(model))
    names = structured_targets(model, example_inputs=torch.randn(2, 3, 32, 32))
    assert names and all(n.endswith("conv1") for n in names if "layer" in n) and not joined & set(names)


def test_bad_targets_are_one_line_errors():
    model = create_model("lenet5")
    with pytest.raises(UserError, match="matches no module") as e:
        sparseforge.select(model, include="featurez.*")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="exclude"):
        sparseforge.select(model, exclude="nope")
    with pytest.raises(UserError, match="cannot act on"):
        spectral.convert(model, "sst", rank=2, targets=["features.0"])  # a conv is no nn.Linear
    with pytest.raises(UserError, match="no module"):
        sparseforge.select(model, types=nn.Embedding)
