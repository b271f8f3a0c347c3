"""metrics: parameter and non-zero counts, dense / effective FLOPs, latency, per-layer rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseforge import metrics
from sparseforge.models import create_model, example_input


def test_linear_flops_are_two_in_out_batch() -> None:
    lin = nn.Linear(7, 5)
    assert metrics.flops(lin, torch.randn(3, 7)) == 2 * 7 * 5 * 3


def test_conv_flops_match_formula() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    # 2 * C_out * C_in * k * k * H_out * W_out * batch
    assert metrics.flops(conv, torch.randn(2, 3, 6, 6)) == 2 * 4 * 3 * 9 * 36 * 2


@torch.no_grad()
def test_effective_flops_halve_with_half_the_weights_zero() -> None:
    lin = nn.Linear(8, 6)
    x = torch.randn(4, 8)
    dense = metrics.effective_flops(lin, x)
    assert dense == metrics.flops(lin, x)
    lin.weight[:, ::2] = 0
    assert metrics.effective_flops(lin, x) == pytest.approx(dense / 2)
    assert metrics.flops(lin, x) == dense  # the dense count does not change


@torch.no_grad()
def test_effective_flops_weight_each_layer_by_its_own_density() -> None:
    net = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    x = torch.randn(3, 4)
    net[0].weight[:5] = 0  # density 1/2 in the first layer only
    f0, f2 = 2 * 4 * 10 * 3, 2 * 10 * 2 * 3
    assert metrics.effective_flops(net, x) == pytest.approx(f0 / 2 + f2)


@torch.no_grad()
def test_param_counts() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    net[0].weight.zero_()
    net[0].weight[0, 1] = 1.0
    net[0].bias.copy_(torch.tensor([0.0, 2.0, 0.0]))
    s = metrics.summary(net, torch.randn(2, 4), latency=False)
    assert s["params"] == 4 * 3 + 3 + 3 * 2
    assert s["nonzero_params"] == 1 + 1 + int(torch.count_nonzero(net[1].weight))
    assert math.isnan(s["latency_ms"])


def test_summary_keys_and_latency_positive() -> None:
    model = create_model("lenet5")
    s = metrics.summary(model, example_input("lenet5", batch=4), repeats=3, warmup=1)
    assert set(s) == {"params", "nonzero_params", "flops", "effective_flops", "latency_ms"}
    assert s["latency_ms"] > 0 and s["flops"] > 0 and s["effective_flops"] == s["flops"]
    assert model.training  # the training flag is restored


@torch.no_grad()
def test_per_layer_rows() -> None:
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    net[0].weight[1:3] = 0
    rows = metrics.per_layer(net)
    assert [r["name"] for r in rows] == ["0.weight", "2.weight"]
    assert rows[0]["shape"] == (4, 2, 3, 3) and rows[0]["params"] == 72 and rows[0]["nonzero"] == 36
    assert rows[0]["density"] == pytest.approx(0.5)


def test_compare_latency_interleaves_all_models() -> None:
    calls: list[str] = []

    class Tag(nn.Module):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def forward(self, x):
            calls.append(self.tag)
            return x

    out = metrics.compare_latency({"a": Tag("a"), "b": Tag("b")}, torch.zeros(1), repeats=4, warmup=1)
    assert set(out) == {"a", "b"} and all(v > 0 for v in out.values())
    timed = calls[2:]
    assert len(timed) == 8 and timed[:4] == ["a", "b", "b", "a"]  # rotating order per round


class KwNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, features, scale=1.0):
        return self.fc(features) * scale


def test_keyword_inputs_are_passed_as_keywords() -> None:
    net = KwNet()
    inputs = {"features": torch.randn(5, 4), "scale": 2.0}
    s = metrics.summary(net, inputs, repeats=2, warmup=1)
    assert s["flops"] == 2 * 4 * 3 * 5 and s["params"] == 15 and s["latency_ms"] > 0
    lat = metrics.compare_latency({"a": net, "b": KwNet()}, inputs, repeats=2, warmup=1)
    assert set(lat) == {"a", "b"}


def test_compiled_model_is_counted_on_its_eager_module() -> None:
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    compiled = torch.compile(net)  # compiles lazily: counting must not call it
    assert metrics.eager_module(compiled) is net
    x = torch.randn(3, 6)
    s = metrics.summary(compiled, x, latency=False)
    assert s["params"] == metrics.count_params(net) and s["flops"] == metrics.flops(net, x)
    assert math.isnan(s["latency_ms"])


def test_deployed_model_is_timed_as_it_runs_and_counted_on_its_eager_module() -> None:
    from sparseforge.deployment import Deployed

    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    d = Deployed(net, strategy="eager")
    assert metrics.eager_module(d) is net
    x = torch.randn(3, 6)
    s = metrics.summary(d, x, repeats=2, warmup=1)
    assert s["flops"] == metrics.flops(net, x) and s["params"] == metrics.count_params(net) and s["latency_ms"] > 0
