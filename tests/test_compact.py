"""Physical compaction: exact outputs, smaller layers, coupled slices, one-line trace errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseforge
from sparseforge.compact import CompactReport, compact
from sparseforge.errors import TraceError
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
    assert small.get_submodule("0").weight.shape == (6, 3, 3, 3)
    assert small.get_submodule("1").num_features == 6
    assert small.get_submodule("3").weight.shape == (6, 6, 3, 3)
    assert rep.removed["0"] == [1, 4] and rep.inputs_removed["3"] == [1, 4]
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_flatten_linear_columns_follow_removed_channel() -> None:
    torch.manual_seed(0)
    net = conv_bn_net()
    net[3].weight[2] = 0
    net[3].bias[2] = 0
    x = torch.randn(2, 3, 5, 5)
    small = compact(net, x)
    assert small.get_submodule("3").weight.shape[0] == 5
    assert small.get_submodule("6").weight.shape == (4, 5 * 25)
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_constant_bn_channel_kept_before_padded_conv() -> None:
    torch.manual_seed(0)
    net = conv_bn_net(pad2=1)
    net[1].running_mean.normal_()
    net[0].weight[3] = 0  # BN then outputs the constant beta - mean * gamma / sqrt(var + eps)
    net[1].bias[3] = 1.0
    x = torch.randn(2, 3, 5, 5)
    small = compact(net, x)
    assert small.get_submodule("0").weight.shape[0] == 8  # not exact at zero-padded borders
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
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_zero_input_channel_removes_producer_filter() -> None:
    torch.manual_seed(0)
    net = conv_bn_net()
    net[3].weight[:, 2] = 0  # nobody reads channel 2 of the first conv
    x = torch.randn(2, 3, 5, 5)
    small, rep = compact(net, x, return_report=True)
    assert small.get_submodule("0").weight.shape[0] == 7
    assert small.get_submodule("1").num_features == 7
    assert rep.removed["0"] == [2]
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


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


@torch.no_grad()
def test_unknown_ops_are_left_untouched() -> None:
    net = Concat().eval()
    net.a.weight[0] = 0
    net.a.bias[0] = 0
    x = torch.randn(2, 2, 6, 6)
    small = compact(net, x)
    assert _n_params(small) == _n_params(net)
    assert _max_diff(net, small, x) <= TOL


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


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] > 64:
            raise ValueError("batch too large")
        return self.fc2(torch.relu(self.fc1(x)))


@torch.no_grad()
def test_shape_only_control_flow_is_specialised() -> None:
    net = ShapeBranch().eval()
    net.fc1.weight[:3] = 0
    net.fc1.bias[:3] = 0
    x = torch.randn(5, 4)
    small = compact(net, x)
    assert small.fc1.weight.shape == (5, 4)
    assert _max_diff(net, small, x) <= TOL


@torch.no_grad()
def test_module_is_callable_and_package_attribute() -> None:
    import sparseforge.compact as compact_module

    net = conv_bn_net()
    net[3].weight[0] = 0
    net[3].bias[0] = 0
    x = torch.randn(1, 3, 5, 5)
    for fn in (compact_module, sparseforge.compact):
        small = fn(net, x)
        assert small.get_submodule("3").weight.shape[0] == 5
        assert isinstance(small.compact_report, CompactReport)


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
    assert _max_diff(net, small, x) <= TOL
