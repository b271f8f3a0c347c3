"""Fidelity fixes of Sparsey: learning winners that recognition recalls, frozen macs' max-V
winners, per-level freezing / Q / K / lambda, sparse raw sums, and the measurement helpers of
:mod:`sparseforge.sdr.evaluate` (recall over stored items, familiarity AUC, capacity curve)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparseforge.data.videos import random_sparse_sequences
from sparseforge.errors import ConfigError, UserError
from sparseforge.sdr import Sparsey, SparseyConfig
from sparseforge.sdr import evaluate as E
from sparseforge.sdr import sparsey as S
from sparseforge.sdr.preprocess import digits_binary, digits_edges
from sparseforge.sdr.readout import pixel_knn_accuracy, readout_accuracies


def _immediate_recall(net: Sparsey, x: torch.Tensor) -> float:
    """Fraction of items whose top-level code comes back right after they are learned."""
    ok = [torch.equal(net.learn(x[i : i + 1]), net.encode(x[i : i + 1])) for i in range(len(x))]
    return sum(ok) / len(ok)


# ---- the tie-break: learning picks what recognition will recall ----------------------------------
def test_learning_winners_equal_recognition_after_storing():
    """Reference equivalence: the learning winner is recognition's argmax once the drawn cell is
    raised to full support (what storing does to it)."""
    g = torch.Generator().manual_seed(0)
    Q, K = 3, 5
    for _ in range(20):
        V = torch.randint(0, 3, (4, 2, Q * K), generator=g).float() / 2  # many exact ties, some at 1
        drawn = torch.randint(0, K, (4, 2, Q), generator=g)
        prio = torch.rand(2, Q, K, generator=g)
        got = S.learning_winners(V, drawn, prio, Q, K)
        stored = V.unflatten(-1, (Q, K)).scatter(-1, drawn.unsqueeze(-1), 1.0).flatten(-2)
        assert torch.equal(got, S.argmax_winners(stored, prio, Q, K))
        none_full = (V.unflatten(-1, (Q, K)) < 1).all(-1)
        assert torch.equal(got[none_full], drawn[none_full])  # no cell at full support: the draw stands


@pytest.mark.parametrize("tie_order", ["priority", "fewest_links"])
def test_items_come_back_right_after_learning(tie_order):
    """A new user's check: learn one item, present it again at once (random sparse patterns and
    binarised digits, default config)."""
    pats = E.random_sparse(80, (16, 16), 26, seed=1)
    digits = digits_binary(0)[0][:80]
    for x in (pats, digits):
        assert _immediate_recall(Sparsey(SparseyConfig(tie_order=tie_order)), x) >= 0.9
    # the plain draw breaks ties differently from recognition: far fewer come back
    assert _immediate_recall(Sparsey(SparseyConfig(tie_break="sample", frozen_winners="sample")), digits) < 0.7


def test_frozen_macs_pick_max_v_winners_while_learning():
    X = E.random_sparse(30, (8, 8), 12, seed=2)
    net = Sparsey(SparseyConfig(input_shape=(8, 8), grids=(1,), windows=(8,), freeze_threshold=0.1))
    i = 0
    while not bool(net.frozen_mask(0).all()):
        net.learn(X[i : i + 1])
        i += 1
    W = net.W_U_0.clone()
    learned = net.learn(X[i:])
    assert torch.equal(learned, net.encode(X[i:]))  # recognition's winners ...
    assert torch.equal(W, net.W_U_0)  # ... and nothing stored
    trace = Sparsey(SparseyConfig(input_shape=(8, 8), grids=(1,), windows=(8,), freeze_threshold=0.1)).learn_trace(X)
    assert not bool(trace.stored[0][i:].any())  # frozen macs store nothing
    sampler = Sparsey(
        SparseyConfig(input_shape=(8, 8), grids=(1,), windows=(8,), freeze_threshold=0.1, frozen_winners="sample")
    )
    sampler.learn(X[:i])
    assert not torch.equal(sampler.learn(X[i:]), sampler.encode(X[i:]))  # random codes, stored nowhere


def test_per_level_freeze_q_k_lambda():
    cfg = SparseyConfig(Q=(8, 6), K=(8, 20), freeze_threshold=(0.05, 1.0), lambda_u=(1.0, 4.0))
    assert cfg.level_freeze(0) == 0.05 and cfg.level_freeze(1) == 1.0 and cfg.at("lambda_u", 1) == 4.0
    net = Sparsey(cfg)
    assert net.Qs == [8, 6] and net.Ks == [8, 20] and net.W_U_1.shape == (1, 16 * 64, 120)
    X = E.random_sparse(40, (16, 16), 30, seed=3)
    net.learn(X)
    assert bool(net.frozen_mask(0).all()) and not bool(net.frozen_mask(1).any())
    assert net.encode(X).shape == (40, 6)
    codes, _ = net.encode_levels(X)
    assert codes[0].shape == (40, 16, 8) and codes[1].shape == (40, 1, 6)
    assert net.cells(X, levels=[1]).shape == (40, 120) and net.cells(X).shape == (40, 16 * 64 + 120)
    for bad in ({"freeze_threshold": (0.2, 0.3, 0.4)}, {"K": (8, 1)}, {"Q": (8, 8, 8)}, {"lambda_u": (1.0, 0.0)}):
        with pytest.raises(ConfigError):
            SparseyConfig(**bad)
    with pytest.raises(UserError):
        net.cells(X, levels=[2])


def test_lambda_u_lowers_novel_familiarity_not_stored():
    """V = U**lambda: stored items keep G = 1, partly matching ones fall (G can only drop)."""
    X = E.random_sparse(30, (16, 16), 20, seed=4)
    novel = E.random_sparse(30, (16, 16), 20, seed=5)
    g = {}
    for lam in (1.0, 6.0):
        net = Sparsey(SparseyConfig(input_shape=(16, 16), grids=(1,), windows=(16,), K=16, lambda_u=lam))
        net.learn(X)
        g[lam] = (net.familiarity(X), net.familiarity(novel))
    assert bool((g[6.0][0] == 1).all()) and bool((g[1.0][0] == 1).all())
    assert bool((g[6.0][1] <= g[1.0][1] + 1e-6).all()) and float(g[6.0][1].mean()) < float(g[1.0][1].mean())


def test_sparse_raw_sums_equal_dense():
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(5, 3, 700, generator=g) < 0.05).float()
    Wb = (torch.rand(3, 700, 9, generator=g) < 0.4).float()
    den = x.sum(-1).clamp_min(1)
    assert torch.equal(S.normalised_sum(x, Wb, den, sparse=True), S.normalised_sum(x, Wb, den))  # exact: integer sums
    Wf = torch.rand(3, 700, 9, generator=g)
    assert torch.allclose(S.normalised_sum(x, Wf, den, sparse=True), S.normalised_sum(x, Wf, den), atol=1e-6)


def test_large_rf_top_mac_learns_the_same_either_way(monkeypatch):
    """The sparse path (large RFs) and the dense path give identical networks."""
    X = E.random_sparse(12, (16, 16), 30, seed=7)
    cfg = SparseyConfig(Q=(8, 4), K=(8, 16))
    a = Sparsey(cfg)
    ca = a.learn(X)
    monkeypatch.setattr(S, "_SPARSE_MIN_AFFERENTS", 10**9)
    b = Sparsey(cfg)
    assert torch.equal(b.learn(X), ca) and torch.equal(a.W_U_1, b.W_U_1)


@pytest.mark.parametrize("decay", ["off", "sparseypy"])
def test_incremental_saturation_and_links_match_weights(tmp_path, decay):
    X = E.random_sparse(25, (16, 16), 30, seed=8)
    net = Sparsey(SparseyConfig(tie_order="fewest_links", decay=decay))
    net.learn_sequence(X.view(5, 5, 16, 16))
    for lvl, s in itertools.product(range(2), "UHD"):
        W = net._buf("W", s, lvl)
        assert torch.equal(net._buf("ones", s, lvl), W.sum((1, 2)).long()), (lvl, s)
        assert torch.equal(net._buf("cell_ones", s, lvl), W.sum(1).long()), (lvl, s)
    net.save(tmp_path / "n.pt")
    back = Sparsey.load(tmp_path / "n.pt")
    assert torch.equal(back._buf("ones", "U", 0), net._buf("ones", "U", 0))
    assert torch.equal(back.learn(X[:3]), net.learn(X[:3]))


def test_trace_marks_stored_items():
    X = E.random_sparse(6, (16, 16), 30, seed=9)
    net = Sparsey(SparseyConfig(grids=(1,), windows=(16,)))
    first = net.learn_trace(X)
    assert bool(first.stored[0].all())  # novel items: the mac stores each
    again = net.learn_trace(X[:1])  # fully familiar now (G = 1): nothing new is stored
    assert float(again.G[0][0, 0]) == 1.0 and not bool(again.stored[0].any())
    assert torch.equal(again.codes[0], first.codes[0][:1])


# ---- sequences ----------------------------------------------------------------------------------
def test_shared_frame_gets_a_context_dependent_code_and_both_chains_recall():
    frames = random_sparse_sequences(2, 4, 16, 26, seed=10)
    frames[1, 2] = frames[0, 2]  # one frame shared by two sequences
    net = Sparsey(SparseyConfig())
    learned = net.learn_sequence(frames)
    assert not torch.equal(learned[0, 2], learned[1, 2])  # the shared frame coded per context
    assert torch.equal(net.encode_sequence(frames), learned)


def test_sequence_capacity_rows():
    rows = E.sequence_capacity(SparseyConfig(), n_sequences=(1, 4), frames=4, seeds=(0,))
    assert [r["n_sequences"] for r in rows] == [1, 4]
    assert rows[0]["top_recall"] == 1.0 and rows[0]["top_recall_now"] == 1.0
    for r in rows:
        for k in ("top_recall", "top_recall_stored", "top_cm_match", "L1_cm_match", "frozen_frac_L1"):
            assert 0.0 <= r[k] <= 1.0, k


def test_random_sparse_sequences():
    X = random_sparse_sequences(3, 5, (8, 12), 7, seed=1)
    assert X.shape == (3, 5, 8, 12) and bool((X.sum((2, 3)) == 7).all())
    assert torch.equal(X, random_sparse_sequences(3, 5, (8, 12), 7, seed=1))


# ---- measurement helpers -------------------------------------------------------------------------
def test_recall_metrics_on_a_hand_built_trace():
    learned = torch.tensor([[[0, 1]], [[1, 1]], [[-1, -1]]])  # (N=3, M=1, Q=2); item 2 inactive
    trace = S.LearnTrace([learned], [torch.tensor([[0.2], [1.0], [0.0]])], [torch.tensor([[True], [False], [False]])])
    recalled = torch.tensor([[[0, 0]], [[1, 1]], [[-1, -1]]])
    now = learned.clone()
    m = E.recall_metrics(trace, [recalled], immediate=[now])
    assert m["L1"]["stored_frac"] == 0.5
    assert m["L1"]["exact_stored_end"] == 0.0 and m["L1"]["cm_match_stored_end"] == 0.5
    assert m["L1"]["exact_active_end"] == 0.5 and m["L1"]["exact_stored_now"] == 1.0
    assert m["items"]["exact_end"] == pytest.approx(2 / 3) and m["items"]["exact_now"] == 1.0


def test_roc_auc_matches_pairwise_count():
    g = torch.Generator().manual_seed(11)
    pos = torch.randint(0, 5, (40,), generator=g).float()
    neg = torch.randint(0, 5, (30,), generator=g).float()
    pairs = (pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()
    assert E.roc_auc(pos, neg) == pytest.approx(float(pairs.mean()))
    f = E.familiarity_separation(torch.ones(5), torch.zeros(5), torch.zeros(3))
    assert f["auc_seen_vs_novel"] == 1.0 and f["seen_full_frac"] == 1.0 and f["G_random"] == 0.0


def test_displace_pixels_moves_exactly_k_and_keeps_density():
    x = E.random_sparse(50, (10, 10), 20, seed=12)
    y = E.displace_pixels(x, 0.25, generator=torch.Generator().manual_seed(0))
    assert bool((y.sum((1, 2)) == 20).all())
    assert bool(((x * y).sum((1, 2)) == 15).all())  # 5 of 20 moved, to positions that were off
    assert torch.equal(E.displace_pixels(x, 0.0, generator=torch.Generator()), x)


def test_overlap_pairs_and_random_like():
    x = E.random_sparse(30, (8, 8), 10, seed=13)
    xin, cov, rho = E.overlap_pairs(x, x.flatten(1), n_pairs=50, seed=0)  # codes = pixels: identical ranks
    assert torch.allclose(xin, cov) and rho == pytest.approx(1.0)
    r = E.random_like(x, 400, seed=0)
    assert r.shape == (400, 8, 8) and abs(float(r.mean()) - 10 / 64) < 0.03


def test_readout_helpers_and_accuracy_curve():
    xtr, ytr, xte, yte = digits_edges(0, per_class=12)
    xte, yte = xte[:100], yte[:100]
    assert 0.3 < pixel_knn_accuracy(xtr, ytr, xte, yte) <= 1.0
    rows = E.accuracy_vs_items(
        lambda: Sparsey(SparseyConfig(grids=(6,), windows=(5,), use_h=False, use_d=False)),
        xtr, ytr, xte, yte, per_class=(3, 12), kinds=("count", "nn_overlap"),
    )  # fmt: skip
    assert [r["per_class"] for r in rows] == [3, 12] and set(rows[0]) >= {"count", "nn_overlap", "knn_pixels"}
    A = torch.eye(4).repeat(2, 1)
    y = torch.arange(4).repeat(2)
    assert readout_accuracies(A, y, A, y, kinds=("count", "binary")) == {"count": 1.0, "binary": 1.0}


# ---- whole experiments and data paths ------------------------------------------------------------
def _write_mnist(root, n_train=40, n_test=20):
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    for pre, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.zeros((n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for i in range(n):  # a bar whose position encodes the label, plus noise
            c = 4 + 2 * int(labels[i])
            imgs[i, 4:24, c : c + 3] = 255
            imgs[i][rng.random((28, 28)) < 0.02] = 255
        (root / f"{pre}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + imgs.tobytes())
        (root / f"{pre}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_mnist_sparsey_format_and_recipe_path(tmp_path):
    from sparseforge.recipes import run_recipe
    from sparseforge.sdr.preprocess import mnist_sparsey

    _write_mnist(tmp_path)
    xtr, ytr, xte, yte = mnist_sparsey(tmp_path, train_per_class=3, test_per_class=2, seed=0)
    assert xtr.shape == (30, 24, 16) and xte.shape == (20, 24, 16)
    assert torch.bincount(ytr).tolist() == [3] * 10 and set(torch.unique(xtr).tolist()) <= {0.0, 1.0}
    _, s = run_recipe("sparsey", preset="smoke", out=tmp_path / "run", report=False,
                      overrides={"image_data": "mnist", "data_dir": str(tmp_path), "train_per_class": "3",
                                 "test_per_class": "2", "input_mode": "skeleton", "video_data": "none",
                                 "capacity_counts": "1", "probe_items": "4"})  # fmt: skip
    assert s["images"]["n_train"] == 30 and 0.0 <= s["images"]["acc_svm"] <= 1.0


def test_image_memory_and_probe_and_sequence_classification():
    xtr, ytr, xte, yte = digits_edges(0, per_class=6)
    xte, yte = xte[:60], yte[:60]
    net = Sparsey(SparseyConfig(grids=(8, 1), windows=(5, 0), Q=(16, 4), K=(10, 32), lambda_u=(1.0, 10.0), band_l1=(0.08, 0.3),
                                freeze_threshold=(0.2, 1.0), inflection=0.9, use_h=False, use_d=False))  # fmt: skip
    r = E.image_memory(net, xtr, ytr, xte, yte, kinds=("count", "nn_overlap"), n_pairs=40)
    assert set(r["acc"]) == {"count", "nn_overlap"} and r["summary"]["recall_now_items"] >= 0.9
    assert r["familiarity"]["G_seen"] > r["familiarity"]["G_novel"] and len(r["pairs"][0]) == 40
    rows = E.recall_probe({"a": SparseyConfig(), "b": SparseyConfig(tie_break="sample")}, {"x": xtr[:10]})
    assert [(r["data"], r["config"]) for r in rows] == [("x", "a"), ("x", "b")] and rows[0]["recall_now"] == 1.0
    from sparseforge.data.videos import moving_shapes_splits

    Xtr, ytr_v, Xte, yte_v = moving_shapes_splits(2, 1, 4, 16, 0)
    out = E.sequence_classification(Sparsey(SparseyConfig()), list(Xtr), ytr_v, list(Xte), yte_v, kinds=("count",))
    assert set(out["acc"]) == {"count"} and out["summary"]["chain_recall_frac"] == 1.0
