"""The sst-hyperbolic recipe (smoke) and the training procedures it wires."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge import spectral
from sparseforge.data.graphs import GraphData, disease_tree
from sparseforge.engine import FitState
from sparseforge.errors import ConfigError, UserError
from sparseforge.hyperbolic.models import build_graph_model
from sparseforge.hyperbolic.tasks import (
    METHODS,
    BestValCallback,
    NegativeSampler,
    prepare_lp,
    prepare_nc,
    setup_method,
    train_lp,
    train_nc,
    warmup_cosine,
)
from sparseforge.recipes import run_recipe
from sparseforge.recipes.sst_hyperbolic import SSTHyperbolicConfig, gaps
from sparseforge.registry import RECIPES


def test_recipe_smoke_writes_every_metric(tmp_path) -> None:
    path, s = run_recipe("sst-hyperbolic", preset="smoke", out=tmp_path)
    for task, metric, geos in (("nc", "f1", ("hyperbolic", "euclidean")), ("lp", "roc_auc", ("hyperbolic", "euclidean")),
                               ("mt", "bleu", ("lorentz", "euclidean"))):
        for geo in geos:
            assert f"gap_reduction/{task}/{geo}" in s and f"gap_reduction_paper/{task}/{geo}" in s
            for m in ("full", "lora", "relora_star", "sst"):
                v = s[f"{metric}/{task}/{geo}/{m}"]
                assert 0.0 <= v <= (100.0 if task == "mt" else 1.0)
    series = {json.loads(line)["series"] for line in (path / "metrics.jsonl").read_text().splitlines()}
    assert {"nc/hyperbolic/sst", "lp/euclidean/lora", "mt/lorentz/relora_star"} <= series
    tables = json.loads((path / "tables.json").read_text())
    assert len(tables["results"]["rows"]) == 24
    assert (path / "figures" / "metrics.png").exists()
    assert "sst-hyperbolic" in RECIPES.names()


def test_config_validation_is_one_line() -> None:
    for bad in ({"tasks": ("nc", "xx")}, {"methods": ("nope",)}, {"rank": 16}, {"d_model": 30, "n_heads": 4},
                {"graph": "planetoid"}, {"mt_rank": 32}):
        with pytest.raises(ConfigError) as e:
            SSTHyperbolicConfig(**bad)
        assert "\n" not in str(e.value)


def test_gap_reduction_helper() -> None:
    full, paper = gaps({"full": 0.9, "lora": 0.7, "relora_star": 0.8, "sst": 0.85})
    assert full == pytest.approx(0.5) and paper == pytest.approx(0.5)
    g_all, g_paper = gaps({"full": 0.9, "lora": 0.7, "relora_star": 0.6, "relora": 0.8, "sst": 0.85})
    assert g_all == pytest.approx(0.5) and g_paper == pytest.approx(0.75)
    assert gaps({"full": 0.5, "lora": 0.7, "sst": 0.6}) == (None, None)  # full not better: undefined
    assert gaps({"full": 0.9, "lora": 0.7, "sst": 0.9})[0] == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS)
def test_setup_method_trains_only_the_method_parameters(method: str) -> None:
    torch.manual_seed(0)
    m = build_graph_model("hyperbolic", "nc", 20, 2, dim=8)
    n_dense = sum(p.numel() for p in m.parameters())
    m, opt, cb = setup_method(m, method, rank=2, lr=1e-2, sst_T3=3, sst_warmup=1, relora_reset_every=3, seed=0)
    if method in ("sst", "relora", "relora_star"):
        assert cb.controller is not None and cb.state_dict()
    else:
        assert cb.controller is None and cb.state_dict() == {}
    n_train = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert (n_train < n_dense) == (method in ("sst", "lora", "relora", "relora_star"))
    g = disease_tree(40, 20, seed=0)
    data = prepare_nc(g)
    res = train_nc(m, data, opt, epochs=7, eval_every=1, callbacks=[cb])
    assert res["epochs_run"] == 7 and 0 <= res["test_f1"] <= 1 and 0 <= res["best_epoch"] <= 7
    if method == "sst":
        assert cb.controller.iteration >= 3  # resampled every 3 steps
        sd = cb.state_dict()
        cb.load_state_dict(sd)
        assert cb.controller.step == 7
    spectral.merge(m)
    assert all(type(layer.lin.linear) is torch.nn.Linear for layer in m.encoder.layers)


def test_best_val_callback_tracks_best_and_stops_and_resumes() -> None:
    vals = iter([0.5, 0.7, 0.6, 0.65, 0.6, 0.9])
    cb = BestValCallback(lambda m: {"val_f1": next(vals), "test_f1": 0.1}, key="val_f1", every=1, patience=3)
    state = FitState(model=torch.nn.Linear(1, 1), optimizer=None)  # type: ignore[arg-type]
    for epoch in range(1, 6):
        state.epoch = epoch
        cb.on_epoch_end(state)
        if state.stop:
            break
    assert cb.best["val_f1"] == 0.7 and cb.best_epoch == 2 and state.stop and state.epoch == 5
    fresh = BestValCallback(lambda m: {}, key="val_f1")
    fresh.load_state_dict(cb.state_dict())
    assert fresh.best == cb.best and fresh.bad == cb.bad == 3
    bad = BestValCallback(lambda m: {"x": 1.0}, key="val_f1")
    with pytest.raises(UserError):
        bad.on_epoch_end(state)


def test_negative_sampler_state_round_trip() -> None:
    g = disease_tree(60, 8, seed=1)
    data = prepare_lp(g, split_seed=0)
    a = NegativeSampler(data.split, seed=3)
    a.sample()
    b = NegativeSampler(data.split, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(), b.sample())


def test_link_prediction_learns_an_easy_graph() -> None:
    """A random geometric graph with positions as features: held-out edges rank above non-edges."""
    gen = torch.Generator().manual_seed(0)
    n = 120
    pos = torch.rand(n, 2, generator=gen)
    iu = torch.triu_indices(n, n, 1)
    close = torch.cdist(pos, pos)[iu[0], iu[1]] < 0.15
    x = torch.cat([pos, 0.05 * torch.randn(n, 6, generator=gen)], 1)
    g = GraphData(x=x, edge_index=iu[:, close], y=None, num_classes=0)
    data = prepare_lp(g, split_seed=0, val=0.1, test=0.2)
    for geometry in ("hyperbolic", "euclidean"):
        torch.manual_seed(0)
        m = build_graph_model(geometry, "lp", 8, dim=8)
        m, opt, cb = setup_method(m, "full", rank=2, lr=0.01)
        res = train_lp(m, data, opt, epochs=40, eval_every=10, grad_clip=0.5, callbacks=[cb])
        assert res["test_roc_auc"] > 0.85, geometry


def test_warmup_cosine_shape() -> None:
    f = warmup_cosine(100, warmup=10, min_frac=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert all(f(i) >= f(i + 1) for i in range(10, 99))


def test_recipe_runs_on_user_planetoid_and_parallel_text_files(tmp_path) -> None:
    import pickle

    import numpy as np
    import scipy.sparse as sp

    from sparseforge.errors import DataFormatError

    root = tmp_path / "planetoid"
    root.mkdir()
    rng = np.random.default_rng(0)
    parts = {"x": sp.csr_matrix(rng.random((2, 3))), "y": np.eye(2)[[0, 1]], "allx": sp.csr_matrix(rng.random((4, 3))),
             "ally": np.eye(2)[[0, 1, 1, 0]], "tx": sp.csr_matrix(rng.random((2, 3))), "ty": np.eye(2)[[1, 0]],
             "graph": {0: [1], 1: [0, 2], 2: [1, 5], 3: [4], 4: [3], 5: [2]}}
    for k, v in parts.items():
        (root / f"ind.toy.{k}").write_bytes(pickle.dumps(v, protocol=2))
    (root / "ind.toy.test.index").write_text("5\n4\n")
    corpus = tmp_path / "iwslt"
    corpus.mkdir()
    lines = [(f"w{i % 5} w{(i + 1) % 5} w{(i * 3) % 5}", f"v{(i * 3) % 5} v{(i + 1) % 5} v{i % 5}") for i in range(40)]
    (corpus / "train.de").write_text("".join(s + "\n" for s, _ in lines))
    (corpus / "train.en").write_text("".join(t + "\n" for _, t in lines))
    common = ["graph=planetoid", f"graph_path={tmp_path / 'planetoid'}", "graph_name=toy", "tasks=nc,mt",
              "methods=full,sst", "rank=1", "dim=4", "mt_rank=2", f"corpus={corpus}", "src_lang=de", "tgt_lang=en"]
    with pytest.raises(DataFormatError, match="allow_pickle"):
        run_recipe("sst-hyperbolic", preset="smoke", overrides=common, out=tmp_path / "r0")
    _, s = run_recipe("sst-hyperbolic", preset="smoke", overrides=[*common, "allow_pickle=true"], out=tmp_path / "r1")
    assert s["graph_nodes"] == 6 and 0 <= s["f1/nc/hyperbolic/sst"] <= 1 and 0 <= s["bleu/mt/lorentz/full"] <= 100
    (corpus / "train.en").write_text("only one line\n")
    with pytest.raises(DataFormatError, match="train.de"):
        run_recipe("sst-hyperbolic", preset="smoke", overrides=[*common, "allow_pickle=true", "tasks=mt"],
                   out=tmp_path / "r2")
