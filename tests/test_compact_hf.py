"""Compaction of Hugging Face ``transformers`` models built from small configs (random weights, no download)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from sparseforge.compaction import compact, structural_bound, zoo

pytest.importorskip("transformers")

TOL = 1e-5
# the eight (fx failed on five of them) plus OPT and GPT-2 (Hugging Face Conv1D)
HF_FAST = ["resnet_basic", "resnet_bottleneck", "regnet", "mobilenet_v1", "mobilenet_v2", "convnext", "vit", "bert",
           "opt", "gpt2"]  # fmt: skip


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _first(out):
    return out[0] if not isinstance(out, torch.Tensor) else out


def _diff(a: nn.Module, b: nn.Module, inputs: dict) -> float:
    with torch.no_grad():
        return float((_first(a(**inputs)) - _first(b(**inputs))).abs().max())


@functools.cache
def _compacted(name: str):  # shared by the tests of one model (none of them modifies the models)
    model, inputs = zoo.build(name)
    zoo.randomize_(model)
    zeroed = zoo.zero_channels_(model)
    small, rep = compact(model, inputs(2), return_report=True)
    return model, inputs, zeroed, small, rep


@pytest.mark.parametrize("name", HF_FAST)
def test_zoo_model_compacts_exactly_at_any_batch_size(name: str) -> None:
    model, inputs, zeroed, small, rep = _compacted(name)
    assert zeroed
    assert _diff(model, small, inputs(2)) <= TOL
    assert _diff(model, small, inputs(3, seed=7)) <= TOL  # a batch of another size
    assert rep.dynamic_batch
    assert _n(small) < _n(model) and rep.params_after == _n(small)
    for layer, idx in zeroed.items():  # every zeroed channel is removed or kept with a reason
        lr = rep.layers[layer]
        assert set(idx.tolist()) == set(lr.zeroed)
        assert set(lr.zeroed) <= set(lr.removed) | set(lr.kept_alive)
        assert all(isinstance(r, str) and r for r in lr.kept_alive.values())


def test_grouped_convs_of_regnet_keep_equal_groups() -> None:
    model, inputs, _, small, rep = _compacted("regnet")
    for name, m in small.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            orig = model.get_submodule(name)
            assert m.groups == orig.groups and m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0


def test_mobilenet_depthwise_and_tf_padding() -> None:
    model, inputs, _, small, rep = _compacted("mobilenet_v2")
    dws = [(n, m) for n, m in small.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(m.groups == m.in_channels == m.out_channels for _, m in dws)
    assert any(m.out_channels < model.get_submodule(n).out_channels for n, m in dws)  # depthwise filters went too


def test_convnext_removes_mlp_units_and_keeps_the_layernorm_width() -> None:
    model, inputs, zeroed, small, rep = _compacted("convnext")
    for name in [n for n in zeroed if n.endswith("pwconv1")]:
        hidden = model.get_submodule(name).out_features
        assert small.get_submodule(name).out_features == hidden - len(zeroed[name])
    block = "encoder.stages.0.layers.0"
    width = model.get_submodule(f"{block}.dwconv").out_channels
    assert small.get_submodule(f"{block}.dwconv").out_channels == width  # normalised by LayerNorm: stays
    assert small.get_parameter(f"{block}.layer_scale_parameter").numel() == width
    reasons = [r for n, lr in rep.layers.items() if "downsampling" in n or "embeddings" in n for r in lr.kept_alive.values()]
    assert reasons and all("layer_norm" in r or "output" in r for r in reasons)


ATTENTION = {  # model -> (attention module, q, k, v, output projection)
    "vit": ("layers.0.attention", "q_proj", "k_proj", "v_proj", "layers.0.attention.o_proj"),
    "bert": ("encoder.layer.0.attention.self", "query", "key", "value", "encoder.layer.0.attention.output.dense"),
    "opt": ("decoder.layers.0.self_attn", "q_proj", "k_proj", "v_proj", "decoder.layers.0.self_attn.out_proj"),
}


@pytest.mark.parametrize("name", list(ATTENTION))
def test_attention_head_with_zero_value_rows_is_removed(name: str) -> None:
    model, inputs = zoo.build(name)
    zoo.randomize_(model)
    attn, q, k, v, o = ATTENTION[name]
    c = model.get_submodule(o).in_features
    d = c // 4
    with torch.no_grad():
        model.get_submodule(f"{attn}.{v}").weight[d : 2 * d] = 0  # head 1: V rows zero, V bias folded into o's bias
        model.get_submodule(f"{attn}.{v}").bias[d : 2 * d] = 0.2
        model.get_submodule(f"{attn}.{q}").weight[2 * d : 3 * d] = 0  # head 2: Q rows only -> the head stays
    small, rep = compact(model, inputs(2), return_report=True)
    assert rep.heads == {attn: [1]}
    for proj in (q, k, v):
        assert small.get_submodule(f"{attn}.{proj}").out_features == c - d
    assert small.get_submodule(o).in_features == c - d
    assert _diff(model, small, inputs(3, seed=5)) <= TOL


def test_gpt2_conv1d_neurons_and_a_head() -> None:
    model, inputs = zoo.build("gpt2")
    zoo.randomize_(model)
    c, d = 32, 8
    with torch.no_grad():
        model.h[0].attn.c_attn.weight[:, 2 * c + 3 * d : 2 * c + 4 * d] = 0  # V columns of head 3 (Conv1D: (in, out))
        model.h[1].attn.c_proj.weight[0:d] = 0  # o-proj rows reading head 0 of layer 1
        model.h[1].mlp.c_fc.weight[:, ::2] = 0
    small, rep = compact(model, inputs(2), return_report=True)
    assert rep.heads == {"h.0.attn": [3], "h.1.attn": [0]}
    assert tuple(small.get_submodule("h.0.attn.c_attn").weight.shape) == (c, 3 * c - 3 * d)
    assert tuple(small.get_submodule("h.1.attn.c_proj").weight.shape) == (c - d, c)
    assert tuple(small.get_submodule("h.1.mlp.c_fc").weight.shape) == (c, 2 * c)
    assert tuple(small.get_submodule("h.1.mlp.c_proj").weight.shape) == (2 * c, c)
    assert _diff(model, small, inputs(3, seed=3)) <= TOL


def test_opt_fc_neurons_and_structural_bound() -> None:
    model, inputs, zeroed, small, rep = _compacted("opt")
    for name, idx in zeroed.items():
        fc2 = name.replace("fc1", "fc2")
        assert small.get_submodule(fc2).in_features == model.get_submodule(fc2).in_features - len(idx)
    assert structural_bound(model, inputs(2)) <= _n(small)


def test_efficientnet_squeeze_excite_from_transformers() -> None:
    model, inputs, zeroed, small, rep = _compacted("efficientnet")
    assert _diff(model, small, inputs(3, seed=2)) <= TOL and _n(small) < _n(model)
    gates = [n for n in zeroed if n.endswith("squeeze_excite.expand")]
    assert gates and all(rep.layers[n].kept_alive for n in gates)  # a zeroed gate row is sigmoid(bias), not 0
