"""sparseforge.deploy: compaction, BatchNorm folding, the compiled path and its fallback."""

from __future__ import annotations

import copy
import math
import sys
import warnings

import pytest
import torch
from torch import nn

import sparseforge
from sparseforge import deploy, metrics  # deploy: the package's lazy attribute (the function)
from sparseforge.compaction import compact
from sparseforge.deployment import Deployed, compile_available, fold_batchnorm
from sparseforge.errors import UserError

deploy_module = sys.modules["sparseforge.deployment"]

TOL = 1e-5


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.normal_(1, 0.2)
            bn.bias.normal_(0, 0.2)
        net[0].weight[[1, 5]] = 0
        net[1].weight[[1, 5]] = 0
        net[1].bias[[1, 5]] = 0
    return net


def _diff(a, b, x) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def test_eager_strategy_is_the_compacted_model() -> None:
    net, x = small_cnn(), torch.randn(2, 3, 8, 8)
    d = deploy(net, x, strategy="eager")
    assert isinstance(d, Deployed) and d.strategy == "eager"
    assert _diff(net, d, x) <= TOL and _diff(net, d, torch.randn(5, 3, 8, 8)) <= TOL
    assert metrics.count_params(d) < metrics.count_params(net)
    assert d.compact_report is not None and d.compact_report.removed["0"] == [1, 5]
    s = metrics.summary(d, x, repeats=2, warmup=1)
    assert s["params"] == metrics.count_params(d.eager) and s["flops"] == metrics.flops(d.eager, x)
    assert s["latency_ms"] > 0
    clone = copy.deepcopy(d)
    assert _diff(d, clone, x) == 0.0


def test_fold_batchnorm_removes_bn_and_keeps_outputs() -> None:
    net, x = small_cnn(), torch.randn(2, 3, 8, 8)
    small = compact(net, x)
    folded = fold_batchnorm(small)
    bn = torch.ops.aten._native_batch_norm_legit_no_training.default
    assert sum(n.target is bn for n in small.graph.nodes) == 2
    assert not any(n.target is bn for n in folded.graph.nodes)
    assert _diff(small, folded, x) <= TOL
    assert sum(n.target is bn for n in small.graph.nodes) == 2  # the input is not modified


def test_auto_times_the_candidates_and_keeps_the_fastest(monkeypatch) -> None:
    monkeypatch.setenv("SPARSEFORGE_NO_COMPILE", "1")  # the compiled candidate has its own test
    net, x = small_cnn(), torch.randn(4, 3, 8, 8)
    d = deploy(net, x, strategy="auto", repeats=3, warmup=1)
    assert set(d.timings_ms) == {"eager", "eager+fold_bn", "eager+channels_last"}
    assert d.strategy == min(d.timings_ms, key=d.timings_ms.__getitem__)
    assert all(math.isfinite(v) and v > 0 for v in d.timings_ms.values())
    assert "compile unavailable" in d.note
    assert _diff(net, d, x) <= TOL


def test_compile_falls_back_to_eager_with_a_one_line_warning(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(deploy_module, "_compile", broken)
    net, x = small_cnn(), torch.randn(2, 3, 8, 8)
    with pytest.warns(RuntimeWarning) as rec:
        d = deploy(net, x, strategy="compile")
    msg = str(rec[0].message)
    assert "\n" not in msg and "torch.compile failed" in msg and "eager" in msg
    assert d.strategy == "eager" and _diff(net, d, x) <= TOL


def test_missing_compiler_is_reported(monkeypatch) -> None:
    monkeypatch.setattr(deploy_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    ok, why = compile_available()
    assert not ok and "C++ compiler" in why
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compiler"):
        d = deploy(small_cnn(), torch.randn(2, 3, 8, 8), strategy="compile")
    assert d.strategy == "eager"


def test_bad_strategy_is_a_user_error() -> None:
    with pytest.raises(UserError, match="strategy"):
        deploy(small_cnn(), torch.randn(2, 3, 8, 8), strategy="fast")


def test_package_exposes_deploy() -> None:
    assert sparseforge.deploy is deploy


@pytest.mark.skipif(not compile_available()[0], reason=compile_available()[1] or "torch.compile unavailable")
def test_compiled_path_matches_eager_and_summary_times_it() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        net[0].weight[:8] = 0
        net[0].bias[:8] = -1.0
    x = torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback expected here
        d = deploy(net, x, strategy="compile")
    assert d.strategy == "compile"
    assert _diff(net, d, x) <= TOL
    s = metrics.summary(d, x, repeats=2, warmup=1)
    assert s["params"] == 6 * 8 + 8 + 8 * 3 + 3 and s["flops"] == metrics.flops(d.eager, x)
    clone = copy.deepcopy(d)  # recompiles on its first call
    assert _diff(d, clone, x) <= TOL
