"""The compare leaderboard: every method reaches each level exactly, results reload, speed-ups are measured."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge import masks as M
from sparseforge.compress import Compressor, register_compressor
from sparseforge.models import create_model
from sparseforge.recipes import run_recipe


@register_compressor("test_random_filter", structure="filter")
class RandomFilters(Compressor):
    """Dense training, then random filters kept (a compressor defined in a test: it joins the leaderboard)."""

    dense_training = True

    def group_importance(self, model, *, batch=None):
        g = torch.Generator().manual_seed(0)
        return {n: torch.rand(w.shape[0], generator=g) for n, w in self.weights(model).items()}


METHODS = ("magnitude", "magnitude_filter", "imp", "snip", "wgsef_filter", "group_lasso_filter", "test_random_filter")


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory):
    """One smoke run with a fake timer: every model's latency is 10 ms per 1,000 parameters."""
    from sparseforge import metrics

    real = metrics.compare_latency
    metrics.compare_latency = lambda models, x, **kw: {n: 10.0 * sum(p.numel() for p in m.parameters()) / 1000
                                                       for n, m in models.items()}
    try:
        out = tmp_path_factory.mktemp("compare")
        path, summary = run_recipe("compare", preset="smoke", out=out,
                                   overrides={"methods": ",".join(METHODS), "weight_levels": "0.5",
                                              "filter_levels": "0.5"})
    finally:
        metrics.compare_latency = real
    return path, summary


def test_every_method_reaches_each_level_exactly(leaderboard):
    _, s = leaderboard
    for m in METHODS:
        assert s[f"removed/{m}/0.5"] == pytest.approx(0.5, abs=0.01), m
        assert 0.0 <= s[f"acc/{m}/0.5"] <= 1.0
        assert s[f"natural_sparsity/{m}/0.5"] is None or 0.0 <= s[f"natural_sparsity/{m}/0.5"] <= 1.0
    assert s["params/magnitude_filter/0.5"] < s["params/dense"]  # structured: physically smaller


def test_speedups_come_from_the_measured_latency(leaderboard):
    _, s = leaderboard
    for m in METHODS:
        expect = s["params/dense"] / s[f"params/{m}/0.5"]  # the fake timer: latency ∝ parameters
        assert s[f"speedup/{m}/0.5"] == pytest.approx(expect, rel=1e-9), m


def test_a_compressor_registered_in_a_test_joins_the_table(leaderboard):
    path, s = leaderboard
    assert "acc/test_random_filter/0.5" in s
    tables = json.loads((path / "tables.json").read_text())
    rows = next(t["rows"] for name, t in tables.items() if name.startswith("level 1"))
    assert "test_random_filter" in {r["method"] for r in rows}


def test_sparsity_files_reload_onto_a_fresh_model_and_reproduce_accuracy(leaderboard):
    from sparseforge.recipes._common import accuracy, load_classification

    path, s = leaderboard
    data = load_classification("digits")
    files = sorted((path / "sparsity").glob("*.pt"))
    assert len(files) == len(METHODS)
    for f in files:
        model = create_model("lenet5")
        rec = M.load_sparsity(model, f)
        assert accuracy(model, data) == pytest.approx(rec["extra"]["acc"], abs=1e-12), f.name
        assert rec["extra"]["acc"] == pytest.approx(s[f"acc/{rec['extra']['method']}/0.5"])


def test_imp_resumed_after_a_round_keeps_its_pruned_weights_at_zero() -> None:
    """A resume restores the rounds' masks; the callback re-attaches them before training goes on."""
    from types import SimpleNamespace

    from sparseforge.compress import get_compressor
    from sparseforge.models import create_model, example_input
    from sparseforge.pruning.prune import topk_masks

    model = create_model("mlp")
    c = get_compressor("imp")(level=0.5, epochs=4)
    cb = c.callbacks(model)[0]
    masks = topk_masks({n: p.detach().abs() for n, p in c.weights(model).items()}, 0.3)
    cb.load_state_dict({"masks": masks, "done": 1})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb.on_fit_start(SimpleNamespace(optimizer=opt))
    model(example_input("mlp", batch=4)).square().sum().backward()
    opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.all(params[n].detach()[~m] == 0), n


def test_deployed_models_are_timed_as_deployed_not_compacted_again(monkeypatch) -> None:
    """An unstructured model keeps its zeros after compaction: timing its deployed form must not re-export it."""
    from sparseforge.bayes import measure
    from sparseforge.recipes.compare import CompareConfig, measure_all

    torch.manual_seed(0)
    dense = create_model("lenet5").eval()
    sparse = create_model("lenet5").eval()
    with torch.no_grad():
        for p in sparse.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand_like(p) > 0.5).float())  # unstructured zeros: nothing for compaction to remove
    seen = []
    real = measure.compact_and_measure

    def spy(models, example, **kw):
        seen.append(kw.get("compact", True))
        return real(models, example, **kw)

    monkeypatch.setattr(measure, "compact_and_measure", spy)
    cfg = CompareConfig(deploy=True, deploy_strategy="eager", latency_repeats=2, latency_blocks=1)
    out = measure_all({"dense": dense, "sparse": sparse}, torch.randn(4, 1, 8, 8), cfg)
    assert seen == [True, False]  # eager rows compacted once; deployed rows timed as they are
    assert out["sparse"]["deploy_speedup"] > 0
    assert measure.compact_and_measure({"s": sparse}, torch.randn(4, 1, 8, 8), repeats=1, blocks=1,
                                       compact=False)["s"]["model"] is sparse
