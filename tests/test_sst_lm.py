"""The sst-lm recipe (smoke preset), the causal LM and the gap-reduction metric."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge.models import create_model, example_input
from sparseforge.recipes import run_recipe
from sparseforge.spectral.metrics import gap_reduction


def test_gap_reduction_directions() -> None:
    assert gap_reduction(23.50, 26.98, {"lora": 34.23, "relora": 35.80}) == pytest.approx(0.676, abs=1e-3)
    assert gap_reduction(10.0, 10.0, [12.0, 13.0]) == pytest.approx(1.0)
    assert gap_reduction(0.9, 0.85, [0.7], lower_is_better=False) == pytest.approx(0.75)
    assert gap_reduction(7.6, 7.0, {"lora": 6.7}) is None  # full worse than LoRA: undefined


def test_causal_lm_registered_and_causal() -> None:
    m = create_model("causal_lm")
    x = example_input("causal_lm", batch=2)
    out = m(x)
    assert out.shape == (2, 64, 256)
    x2 = x.clone()
    x2[:, 40:] = (x2[:, 40:] + 1) % 256
    torch.testing.assert_close(m(x2)[:, :40], out[:, :40])  # future tokens do not leak
    assert not torch.allclose(m(x2)[:, 40:], out[:, 40:])


METHODS = ("full", "lora", "relora_star", "relora", "galore", "sst")


def test_recipe_smoke(tmp_path) -> None:
    path, s = run_recipe("sst-lm", preset="smoke", out=tmp_path)
    for m in METHODS:
        assert 1.0 < s[f"val_ppl/{m}"] < 256.0  # learned something: well below uniform at ~V
        assert s[f"optimizer_state_bytes/{m}"] > 0 and s[f"tokens_per_s/{m}"] > 0
    assert s["optimizer_state_bytes/sst"] < 0.7 * s["optimizer_state_bytes/full"]
    assert s["optimizer_state_bytes/galore"] < 0.7 * s["optimizer_state_bytes/full"]
    assert s["trainable_params/sst"] < s["trainable_params/full"]
    # the paper's Γ = (r(m+n)+k)/(mn) over the converted layers, measured from the parameters and Adam's state
    assert s["gamma_measured/sst"] == pytest.approx(s["analytic_gamma/sst"], rel=0.02)
    assert s["opt_state_ratio/sst"] == pytest.approx(s["analytic_gamma/sst"], rel=0.05)
    assert s["gap_reduction/paper"] is None or isinstance(s["gap_reduction/paper"], float)
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert {r["series"] for r in rows} == set(METHODS)
    assert all("val_ppl" in r for r in rows)
    assert (path / "summary.json").exists()


def test_sst_on_a_hugging_face_opt_converts_trains_and_merges() -> None:
    """The paper's model class, built from a config: convert, train, merge back to plain nn.Linear."""
    transformers = pytest.importorskip("transformers")
    from torch import nn

    import sparseforge
    from sparseforge import spectral
    from sparseforge.models.causal_lm import lm_step

    cfg = transformers.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                                 max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.0)
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(cfg).eval()
    x = torch.randint(0, 64, (2, 16))
    ref = model(x).logits
    names = sparseforge.select(model, include=["*_proj", "*fc1", "*fc2"], types=nn.Linear)
    assert len(names) == 12 and "lm_head" not in names
    spectral.convert(model, "sst", rank=2, targets=names)
    torch.testing.assert_close(model(x).logits, ref, atol=1e-4, rtol=0)
    opt = spectral.build_optimizer(model, lr=1e-2)
    spectral.attach("sst", model, opt, T3=2, warmup_iter=0)
    model.train()
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = lm_step(model, (x, x))
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < losses[0]
    model.eval()
    after = model(x).logits
    spectral.merge(model)
    assert not any(isinstance(m, spectral.SpectralLinear) for m in model.modules())
    torch.testing.assert_close(model(x).logits, after, atol=1e-4, rtol=0)


def test_recipe_trains_the_hugging_face_model_class(tmp_path) -> None:
    pytest.importorskip("transformers")
    _, s = run_recipe("sst-lm", preset="smoke", out=tmp_path,
                      overrides={"model_type": "hf_opt", "methods": "full,sst", "measure_memory": "false"})
    assert 1.0 < s["val_ppl/sst"] < 256.0 and s["model_type"] == "hf_opt"


@pytest.mark.parametrize("method", ["full", "sst", "lora", "relora", "galore"])
def test_tied_head_is_optimized_once_and_like_the_native_model(method) -> None:
    """The OPT head shares the embedding's tensor: one optimizer entry, and the same groups as ``causal_lm``."""
    from sparseforge.recipes.sst_lm import SSTLMConfig, build_method

    layouts = {}
    for model_type in ("causal_lm", "hf_opt"):
        _, opt, _, _ = build_method(SSTLMConfig(model_type=model_type), method, seed=0)
        ids = [id(p) for g in opt.param_groups for p in g["params"]]
        assert len(ids) == len(set(ids))
        layouts[model_type] = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    assert layouts["hf_opt"] == layouts["causal_lm"]
