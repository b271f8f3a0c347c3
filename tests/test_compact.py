"""Physical compaction on our own models: exact outputs, smaller layers, coupled slices, one-line errors."""

from __future__ import annotations

import copy
import io
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge import metrics
from sparseforge.compaction import HANDLERS, CompactReport, compact, register_handler, structural_bound
from sparseforge.compaction.handlers import Elementwise
from sparseforge.errors import TraceError, UserError
from sparseforge.models import create_model, example_input
from sparseforge.registry import MODELS

TOL = 1e-5

# Models of the conv / MLP / residual families: compaction must strictly shrink them.
SHRINKING_MODULES = {f"sparseforge.models.{m}" for m in ("mlp", "lenet", "vgg", "resnet", "mobilenet")}


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@torch.no_grad()
def zero_random_groups_(model: nn.Module, frac: float = 0.5, seed: int = 0) -> None:
    """Zero random output filters / neurons of every Conv2d and Linear (with their biases).

    BatchNorm running statistics and affine parameters are randomised so that a BN after a zero
    filter outputs a non-zero constant; for every other zeroed filter the BN entry is
    neutralised (gamma = beta = 0), making that channel exactly zero.
    """
    g = torch.Generator().manual_seed(seed)
    last: tuple[nn.Module, torch.Tensor] | None = None
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.copy_(torch.randn(m.num_features, generator=g))
            m.bias.copy_(torch.randn(m.num_features, generator=g))
            if last is not None and last[1].numel() == m.num_features:
                neutral = last[1] & (torch.rand(m.num_features, generator=g) < 0.5)
                m.weight[neutral] = 0
                m.bias[neutral] = 0
            last = None
        elif isinstance(m, nn.Conv2d | nn.Linear) and m.weight.dim() >= 2:
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                last = None
                continue
            z = torch.rand(m.weight.shape[0], generator=g) < frac
            m.weight[z] = 0
            if m.bias is not None:
                m.bias[z] = 0
            last = (m, z)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_compacts_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    zero_random_groups_(model)
    x = example_input(name, batch=2, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, report = compact(model, x, return_report=True)
    assert isinstance(report, CompactReport)
    assert _max_diff(model, small, x) <= TOL
    x3 = example_input(name, batch=3, generator=torch.Generator().manual_seed(2))
    assert _max_diff(model, small, x3) <= TOL  # the batch dimension stays free
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "original was modified"
    assert report.params_before == _n_params(model) and report.params_after == _n_params(small)
    if type(model).__module__ in SHRINKING_MODULES:
        assert _n_params(small) < _n_params(model)
        assert report.removed


def conv_bn_net(pad2: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3 if pad2 else 1, padding=pad2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 4),
    ).eval()


@torch.no_grad()
def test_removes_filters_bn_entries_and_next_input_slices() -> None:
    torch.manual_seed(0)
    net = conv_bn_net()
    net[0].weight[[1, 4]] = 0
    net[1].weight[[1, 4]] = 0
    net[1].bias[[1, 4]] = 0
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert isinstance(small.get_submodule("0"), nn.Conv2d)
    assert small.get_submodule("0").weight.shape == (6, 3, 3, 3)
    assert small.get_submodule("1").running_mean.numel() == 6
    assert small.get_submodule("3").weight.shape == (6, 6, 3, 3)
    assert rep.removed["0"] == [1, 4] and rep.removed["1"] == [1, 4] and rep.inputs_removed["3"] == [1, 4]
    assert rep.layers["0"].zeroed == [1, 4] and rep.layers["0"].removed == [1, 4]
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_flatten_linear_columns_follow_removed_channel() -> None:
    torch.manual_seed(0)
    net = conv_bn_net()
    net[3].weight[2] = 0
    net[3].bias[2] = 0
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("3").weight.shape[0] == 5
    assert small.get_submodule("6").weight.shape == (4, 5 * 25)
    assert rep.inputs_removed["6"] == list(range(50, 75))
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_constant_bn_channel_kept_before_padded_conv() -> None:
    torch.manual_seed(0)
    net = conv_bn_net(pad2=1)
    net[1].running_mean.normal_()
    net[0].weight[3] = 0  # BN then outputs the constant beta - mean * gamma / sqrt(var + eps)
    net[1].bias[3] = 1.0
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("0").weight.shape[0] == 8  # not exact at zero-padded borders
    assert rep.layers["0"].zeroed == [3] and not rep.layers["0"].removed
    assert "zero-padded" in rep.layers["0"].kept_alive[3] and "'3'" in rep.layers["0"].kept_alive[3]
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_constant_bn_channel_folded_into_unpadded_consumer() -> None:
    torch.manual_seed(0)
    net = conv_bn_net(pad2=0)
    net[0].weight[3] = 0
    net[1].bias[3] = 1.5  # constant relu(1.5 - mean*gamma/sqrt(var+eps)) != 0 at the 1x1 conv
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("0").weight.shape[0] == 7
    assert small.get_submodule("3").weight.shape == (6, 7, 1, 1)
    assert rep.folded["3"] == [3]
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_negative_constant_through_relu_is_removed_before_padded_conv() -> None:
    net = conv_bn_net(pad2=1)
    net[0].weight[5] = 0
    net[1].bias[5] = -2.0  # relu(-2) = 0: the channel is exactly zero downstream
    x = torch.randn(2, 3, 5, 5)
    small = compact(net, x)
    assert small.get_submodule("0").weight.shape[0] == 7
    assert small.get_submodule("3").bias is not None and _n_params(small.get_submodule("3")) == 6 * 7 * 9 + 6
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_zero_input_channel_removes_producer_filter() -> None:
    torch.manual_seed(0)
    net = conv_bn_net()
    net[3].weight[:, 2] = 0  # nobody reads channel 2 of the first conv
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("0").weight.shape[0] == 7
    assert small.get_submodule("1").running_mean.numel() == 7
    assert rep.removed["0"] == [2]
    assert rep.layers["0"].zeroed == [] and rep.layers["0"].removed == [2]
    assert _max_diff(net, small, x) <= TOL


def _zero_channel_in_stage1_(model: nn.Module, c: int, *, all_branches: bool) -> None:
    """Zero channel c in every producer of ResNet stage 1's residual stream (or only the stem)."""
    pairs = [(model.stem[0], model.stem[1])]
    if all_branches:
        pairs += [(blk.conv2, blk.bn2) for blk in model.stages[0]]
    with torch.no_grad():
        for conv, bn in pairs:
            conv.weight[c] = 0
            bn.weight[c] = 0
            bn.bias[c] = 0


def test_residual_add_channels_removed_only_when_zero_in_every_branch() -> None:
    torch.manual_seed(0)
    x = example_input("resnet20", batch=2)
    model = create_model("resnet20").eval()
    _zero_channel_in_stage1_(model, 5, all_branches=True)
    small = compact(model, x)
    assert small.get_submodule("stem.0").weight.shape[0] == 15
    for i in range(3):
        assert small.get_submodule(f"stages.0.{i}.conv1").weight.shape[1] == 15
        assert small.get_submodule(f"stages.0.{i}.conv2").weight.shape[0] == 15
    assert small.get_submodule("stages.1.0.shortcut.0").weight.shape[1] == 15
    assert _max_diff(model, small, x) <= TOL

    partial = create_model("resnet20").eval()
    _zero_channel_in_stage1_(partial, 5, all_branches=False)
    small = compact(partial, x)
    assert small.get_submodule("stem.0").weight.shape[0] == 16
    assert _max_diff(partial, small, x) <= TOL


@torch.no_grad()
def test_depthwise_conv_couples_input_and_output_channels() -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=0.25).eval()
    blk0, blk1 = model.blocks[0], model.blocks[1]
    blk0.pw.weight[[0, 3]] = 0
    blk0.bn2.weight[[0, 3]] = 0
    blk0.bn2.bias[[0, 3]] = 0
    x = example_input("mobilenet_v1", batch=2)
    small = compact(model, x)
    dw = small.get_submodule("blocks.1.dw")
    assert dw.weight.shape[0] == blk1.dw.weight.shape[0] - 2 and dw.groups == dw.weight.shape[0]
    assert small.get_submodule("blocks.1.pw").weight.shape[1] == blk1.pw.weight.shape[1] - 2
    assert small.get_submodule("blocks.0.pw").weight.shape[0] == blk0.pw.weight.shape[0] - 2
    assert _max_diff(model, small, x) <= TOL


@torch.no_grad()
def test_mlp_rows_and_columns() -> None:
    model = create_model("mlp", sizes=(10, 20, 15, 3)).eval()
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    lin[0].weight[:7] = 0
    lin[0].bias[:7] = 0
    lin[2].weight[:, 3] = 0  # hidden-2 unit 3 feeds nothing
    x = torch.randn(4, 10)
    small = compact(model, x)
    shapes = [tuple(m.weight.shape) for m in small.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(13, 10), (14, 13), (3, 14)]
    assert _max_diff(model, small, x) <= TOL


@torch.no_grad()
def test_nonzero_bias_of_dead_neuron_is_folded() -> None:
    model = create_model("mlp", sizes=(6, 5, 2)).eval()
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    lin[0].weight[1] = 0
    lin[0].bias[1] = 0.7  # the neuron outputs relu(0.7) = 0.7 always
    x = torch.randn(3, 6)
    small, rep = compact(model, x, return_report=True)
    assert [tuple(m.weight.shape) for m in small.modules() if isinstance(m, nn.Linear)] == [(4, 6), (2, 4)]
    assert rep.folded
    assert _max_diff(model, small, x) <= TOL


class DenseBlock(nn.Module):
    """DenseNet-style: each layer's output is concatenated to the running feature map."""

    def __init__(self, c0: int = 4, growth: int = 3, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, c0, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(c0 + i * growth, growth, 3, padding=1) for i in range(layers))
        self.head = nn.Conv2d(c0 + layers * growth, 5, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        for conv in self.convs:
            h = torch.cat([h, F.relu(conv(h))], 1)
        return self.head(h).mean((2, 3))


@torch.no_grad()
def test_cat_slices_map_through_the_concatenation() -> None:
    torch.manual_seed(0)
    net = DenseBlock().eval()
    net.stem.weight[1] = 0
    net.stem.bias[1] = 0
    net.convs[0].weight[2] = 0
    net.convs[0].bias[2] = -1.0  # relu(-1) = 0
    x = torch.randn(2, 2, 6, 6)
    small, rep = compact(net, x, return_report=True)
    assert small.stem.weight.shape[0] == 3
    assert small.convs[0].weight.shape == (2, 3, 3, 3)
    assert small.convs[1].weight.shape[1] == 3 + 2  # reads stem (3 left) ++ convs[0] (2 left)
    assert small.convs[2].weight.shape[1] == 3 + 2 + 3
    assert rep.inputs_removed["head"] == [1, 6]  # positions of the removed channels in the concatenation
    assert _max_diff(net, small, x) <= TOL and _max_diff(net, small, torch.randn(5, 2, 6, 6)) <= TOL


class SEBlock(nn.Module):
    """EfficientNet-style: expand conv, BN, SiLU, depthwise, squeeze-excite gate (``mul``), project."""

    def __init__(self, c: int = 4, e: int = 12) -> None:
        super().__init__()
        self.expand, self.bn1 = nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e)
        self.dw, self.bn2 = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e)
        self.reduce, self.gate = nn.Conv2d(e, 3, 1), nn.Conv2d(3, e, 1)
        self.project, self.bn3 = nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.silu(self.bn1(self.expand(x)))
        h = F.silu(self.bn2(self.dw(h)))
        s = torch.sigmoid(self.gate(F.silu(self.reduce(h.mean((2, 3), keepdim=True)))))
        return x + self.bn3(self.project(h * s))


@torch.no_grad()
def test_squeeze_excite_gate_follows_the_channel_it_scales() -> None:
    torch.manual_seed(0)
    net = SEBlock().eval()
    dead = [2, 5, 7]
    net.expand.weight[dead] = 0
    net.bn1.weight[dead] = 0
    net.bn1.bias[dead] = -3.0  # silu(-3) is a non-zero constant ...
    net.dw.weight[dead] = 0  # ... that the zeroed depthwise filter stops: bn2 then gives a constant
    net.bn2.weight[dead] = 0
    net.bn2.bias[dead] = 0  # silu(0) = 0: the channel is exactly zero before the gate
    x = torch.randn(2, 4, 5, 5)
    small, rep = compact(net, x, return_report=True)
    e = 12 - len(dead)
    assert small.expand.weight.shape[0] == e and small.dw.weight.shape[0] == e == small.dw.groups
    assert small.gate.weight.shape[0] == e  # the gate's rows for dead channels go with them
    assert small.reduce.weight.shape[1] == e and small.project.weight.shape[1] == e
    assert _max_diff(net, small, x) <= TOL and _max_diff(net, small, torch.randn(3, 4, 5, 5)) <= TOL


@torch.no_grad()
def test_grouped_conv_loses_the_same_number_of_channels_per_group() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
                        nn.Conv2d(8, 4, 1)).eval()  # fmt: skip
    net[0].weight[[0, 1, 5]] = 0  # group 0 loses 0 and 1, group 1 loses 5
    net[0].bias[[0, 1, 5]] = 0
    x = torch.randn(2, 3, 6, 6)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("2").groups == 2
    assert small.get_submodule("2").weight.shape == (8, 3, 3, 3)  # one channel per group left to keep them equal
    assert small.get_submodule("0").weight.shape[0] == 6
    assert "same removal in every group" in next(iter(rep.layers["0"].kept_alive.values()))
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_attention_heads_of_our_causal_lm() -> None:
    torch.manual_seed(0)
    model = create_model("causal_lm", n_layers=1, d_model=32, n_heads=4).eval()
    attn = model.blocks[0].attn
    d = 8
    attn.v_proj.weight[2 * d : 3 * d] = 0  # head 2: V rows zero, V bias stays and is folded
    attn.v_proj.bias[2 * d : 3 * d] = 0.3
    attn.q_proj.weight[0:d] = 0  # head 0: zero Q rows make attention uniform, not absent
    attn.q_proj.bias[0:d] = 0
    x = example_input("causal_lm", batch=2)
    small, rep = compact(model, x, return_report=True)
    assert rep.heads == {"blocks.0.attn": [2]}
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert small.get_submodule(f"blocks.0.attn.{proj}").weight.shape == (24, 32)
    assert small.get_submodule("blocks.0.attn.out_proj").weight.shape == (32, 24)
    assert _max_diff(model, small, x) <= TOL and _max_diff(model, small, example_input("causal_lm", batch=3)) <= TOL


class ChannelsLastBlock(nn.Module):
    """ConvNeXt-style: depthwise conv, permute to channels-last, LayerNorm, MLP, layer scale, residual."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.gamma * self.fc2(F.gelu(self.fc1(h)))
        return x + h.permute(0, 3, 1, 2)


@torch.no_grad()
def test_channels_last_mlp_hidden_units_go_and_the_normalised_width_stays() -> None:
    torch.manual_seed(0)
    net = ChannelsLastBlock().eval()
    net.fc1.weight[::2] = 0
    net.fc1.bias[::2] = 0  # gelu(0) = 0: the hidden unit is dead
    net.fc2.weight[1] = 0  # a residual channel: normalised by the LayerNorm of the next block / output
    x = torch.randn(2, 8, 6, 6)
    small, rep = compact(net, x, return_report=True)
    assert small.fc1.weight.shape == (16, 8) and small.fc2.weight.shape == (8, 16)
    assert small.gamma.shape == (8,) and small.dw.weight.shape[0] == 8
    assert rep.layers["fc2"].zeroed == [1] and 1 in rep.layers["fc2"].kept_alive
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_layer_norm_keeps_its_channels_with_the_reason() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)).eval()
    net[0].weight[2] = 0
    net[0].bias[2] = 0
    small, rep = compact(net, torch.randn(2, 6), return_report=True)
    assert small.get_submodule("0").weight.shape == (8, 6)
    assert "layer_norm" in rep.layers["0"].kept_alive[2]
    assert structural_bound(net, torch.randn(2, 6)) < _n_params(small)  # what exactness costs here


class Mixer(nn.Module):
    """A channel op without a handler (cumsum over channels) between two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.cumsum(self.fc1(x), dim=1))


@torch.no_grad()
def test_op_without_handler_keeps_channels_or_errors_when_strict() -> None:
    net = Mixer().eval()
    net.fc1.weight[1] = 0
    net.fc1.bias[1] = 0
    x = torch.randn(3, 4)
    small, rep = compact(net, x, return_report=True)
    assert _n_params(small) == _n_params(net)
    assert any("cumsum" in u and "Mixer" in u for u in rep.unhandled)
    assert "cumsum" in rep.layers["fc1"].kept_alive[1]
    with pytest.raises(TraceError) as info:
        compact(net, x, strict=True)
    msg = str(info.value)
    assert "\n" not in msg and "aten.cumsum" in msg and "register_handler" in msg


@torch.no_grad()
def test_a_wrong_handler_is_caught_by_the_check_naming_the_op() -> None:
    class LyingTanh(Elementwise):  # claims tanh outputs the constant 0 everywhere
        def analyze(self, a, node):
            m = super().analyze(a, node)
            m.mask[:] = True
            m.value.zero_()
            return m

    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).eval()
    key = torch.ops.aten.tanh
    saved = HANDLERS[key]
    register_handler(key)(LyingTanh)
    try:
        with pytest.raises(TraceError) as info:
            compact(net, torch.randn(3, 4))
    finally:
        HANDLERS[key] = saved
    msg = str(info.value)
    assert "\n" not in msg and "aten.tanh" in msg and "'1' (Tanh)" in msg


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(self, x):
        return self.gate(x)


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


def test_data_dependent_control_flow_gives_one_line_trace_error() -> None:
    with pytest.raises(TraceError) as info:
        compact(DataDependent(), torch.randn(2, 4))
    msg = str(info.value)
    assert "\n" not in msg
    assert "'gate'" in msg and "Gate" in msg and "x.sum() > 0" in msg


def test_bad_inputs_are_one_line_user_errors() -> None:
    with pytest.raises(UserError, match="nn.Module"):
        compact(lambda x: x, torch.randn(2, 4))
    with pytest.raises(UserError, match="example_inputs"):
        compact(nn.Linear(4, 2), 3.0)
    with pytest.raises(UserError, match="fails on example_inputs"):
        compact(nn.Linear(4, 2), torch.randn(2, 5))
    with pytest.raises(UserError, match="targets"):
        compact(nn.Linear(4, 2), torch.randn(2, 4), targets=[nn.Linear])


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] > 64:
            raise ValueError("batch too large")
        h = self.fc1(x)
        return self.fc2(torch.relu(h.view(int(h.shape[0]), -1)))


@torch.no_grad()
def test_shape_only_control_flow_is_captured() -> None:
    net = ShapeBranch().eval()
    net.fc1.weight[:3] = 0
    net.fc1.bias[:3] = 0
    x = torch.randn(5, 4)
    small = compact(net, x)
    assert small.fc1.weight.shape == (5, 4)
    assert _max_diff(net, small, x) <= TOL


class KwModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc, self.head = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, features, mask=None, *, scale: float = 1.0):
        h = torch.relu(self.enc(features)) * scale
        if mask is not None:
            h = h * mask[..., None]
        return {"logits": self.head(h), "hidden": h.sum(-1)}


@torch.no_grad()
def test_keyword_inputs_and_dict_outputs() -> None:
    net = KwModel().eval()
    net.enc.weight[[0, 4]] = 0
    net.enc.bias[[0, 4]] = -1.0
    inputs = {"features": torch.randn(3, 7, 5), "mask": torch.ones(3, 7)}
    small = compact(net, inputs)
    assert small.enc.weight.shape == (6, 5)
    out, ref = small(**inputs), net(**inputs)
    assert set(out) == {"logits", "hidden"}
    assert float((out["logits"] - ref["logits"]).abs().max()) <= TOL
    other = {"features": torch.randn(6, 7, 5), "mask": torch.rand(6, 7)}
    assert float((small(**other)["logits"] - net(**other)["logits"]).abs().max()) <= TOL


@torch.no_grad()
def test_targets_limit_which_layers_lose_channels() -> None:
    net = create_model("mlp", sizes=(6, 8, 8, 2)).eval()
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    for m in lin[:2]:
        m.weight[:3] = 0
        m.bias[:3] = 0
    x = torch.randn(2, 6)
    small, rep = compact(net, x, targets=[names[1]], return_report=True)
    shapes = [tuple(m.weight.shape) for m in small.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(8, 6), (5, 8), (2, 5)]
    assert "not in targets" in rep.layers[names[0]].kept_alive[0]
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_result_is_a_module_that_copies_saves_and_measures() -> None:
    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    zero_random_groups_(model)
    x = example_input("lenet5", batch=4)
    small = compact(model, x)
    assert isinstance(small, nn.Module) and isinstance(small.compact_report, CompactReport)
    clone = copy.deepcopy(small)
    assert float((clone(x) - small(x)).abs().max()) == 0.0
    buf = io.BytesIO()
    torch.save(small.state_dict(), buf)
    buf.seek(0)
    fresh = copy.deepcopy(small)
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(torch.load(buf))
    assert float((fresh(x) - small(x)).abs().max()) == 0.0
    assert set(small.state_dict()) <= set(model.state_dict())  # the original names
    small.train()
    assert float((small(x) - model(x)).abs().max()) <= TOL  # an inference graph in either mode
    s = metrics.summary(small, x, repeats=2, warmup=1)
    assert s["params"] == _n_params(small) and s["flops"] < metrics.flops(model, x)


def test_report_feeds_save_sparsity(tmp_path) -> None:
    from sparseforge import masks

    net = conv_bn_net()
    with torch.no_grad():
        net[0].weight[[2, 6]] = 0
        net[1].weight[[2, 6]] = 0
        net[1].bias[[2, 6]] = 0
    small = compact(net, torch.randn(1, 3, 5, 5))
    path = tmp_path / "s.pt"
    masks.save_sparsity(net, path, removed=small.compact_report.removed)
    loaded = masks.load_sparsity(conv_bn_net(), path, attach_masks=False)
    assert loaded["removed"]["0"] == [2, 6]
    rows = small.compact_report.rows()
    assert rows[0]["layer"] == "0" and rows[0]["zeroed"] == 2 and rows[0]["removed"] == 2
    assert "0 (conv2d): 8 channels, 2 zeroed, 2 removed" in str(small.compact_report)


class InplaceAlias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.c1, self.c2 = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        a = self.conv(x)
        b = self.relu(a)  # overwrites a: c1 reads relu(a), not a
        return self.c1(a) + self.c2(b)


@torch.no_grad()
def test_inplace_op_with_other_readers_is_not_folded_with_stale_constant() -> None:
    net = InplaceAlias().eval()
    net.conv.weight[1] = 0
    net.conv.bias[1] = -1.0  # a[:, 1] = -1, but c1 sees relu(-1) = 0
    x = torch.randn(2, 2, 5, 5)
    small = compact(net, x)
    assert small.conv.weight.shape[0] == 3
    assert _max_diff(net, small, x) <= TOL


def test_package_attributes_are_the_functions_whatever_was_imported_first() -> None:
    """No submodule shadows ``sparseforge.compact`` / ``sparseforge.deploy`` (and no module-class swap)."""
    code = (
        "import sparseforge, torch\n"
        "from sparseforge.registry import load_all\n"
        "import sparseforge.compaction, sparseforge.deployment, sparseforge.metrics\n"
        "load_all()\n"
        "from sparseforge.compaction import compact\n"
        "from sparseforge.deployment import deploy\n"
        "assert sparseforge.compact is compact and sparseforge.deploy is deploy\n"
        "m = sparseforge.compact(torch.nn.Linear(3, 2), torch.randn(2, 3))\n"
        "assert sum(p.numel() for p in m.parameters()) == 8\n"
        "assert type(sparseforge).__name__ == 'module'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
