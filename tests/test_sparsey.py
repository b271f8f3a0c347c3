"""Tests of Sparsey and its Code Selection Algorithm (structure, CSA math, memory properties)."""

from __future__ import annotations

import math

import pytest
import torch

from sparseforge.errors import ConfigError, DataFormatError
from sparseforge.registry import METHODS
from sparseforge.sdr import Readout, Sparsey, SparseyConfig, codes_to_cells
from sparseforge.sdr import sparsey as S
from sparseforge.sdr.preprocess import boundary, digits_binary, load_sparsey_raw, zhang_suen


def one_mac(side: int, **kw) -> Sparsey:
    """A single mac seeing the whole side x side input."""
    return Sparsey(SparseyConfig(input_shape=(side, side), grids=(1,), windows=(side,), **kw))


def random_sparse(n: int, units: int, active: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.zeros(n, units)
    for i in range(n):
        x[i, torch.randperm(units, generator=gen)[:active]] = 1.0
    return x


# ---- structure and pure math --------------------------------------------------------------------
def test_registered_and_defaults_work():
    assert METHODS.get("sparsey") is Sparsey
    assert "sparsey" in METHODS.names(family="sdr")
    net = Sparsey(SparseyConfig())
    assert net.n_macs == [16, 1]
    x = (torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.15).float()
    net.learn(x)
    assert net.encode(x).shape == (3, 8) and net.encode(x).dtype == torch.long
    assert net.familiarity(x).shape == (3,)


def test_every_code_has_one_winner_per_cm():
    net = Sparsey(SparseyConfig())
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(12, 16, 16, generator=g) < 0.15).float()
    learned = net.learn(x)
    codes = net.encode(x, level=0)  # (B, 16, Q)
    for c in (learned, codes.flatten(1)):
        active = c >= 0
        assert bool(((c >= 0) & (c < net.K) | ~active).all())
    cells = codes_to_cells(codes, net.K).view(12, 16, net.Q, net.K)
    per_cm = cells.sum(-1)  # exactly one winner per CM of an active mac, none for an inactive one
    act = (codes >= 0).all(-1)
    assert bool((per_cm[act] == 1).all()) and bool((per_cm[~act] == 0).all())
    assert bool(act.any())


def test_csa_quantities_in_range():
    g = torch.Generator().manual_seed(0)
    Q, K = 4, 5
    V = torch.rand(3, 7, Q * K, generator=g)
    G = S.familiarity_from_support(V, Q, K)
    assert bool(((G >= 0) & (G <= 1)).all())
    eta = S.expansivity(G, g_minus=0.1, gamma=2.0, chi=100.0, K=K)
    mu = S.win_likelihood(V, eta, slope=32.0, inflection=0.42)
    assert bool((mu >= 1).all()) and bool((mu <= eta.unsqueeze(-1) + 1e-4).all())
    rho = S.cm_probabilities(mu, Q, K)
    assert torch.allclose(rho.sum(-1), torch.ones(3, 7, Q))
    # G <= G-  ->  eta == 1 and rho exactly uniform
    Vlow = torch.full((2, 1, Q * K), 0.05)
    Glow = S.familiarity_from_support(Vlow, Q, K)
    eta1 = S.expansivity(Glow, g_minus=0.1, gamma=2.0, chi=100.0, K=K)
    assert bool((eta1 == 1).all())
    rho1 = S.cm_probabilities(S.win_likelihood(Vlow, eta1, slope=32.0, inflection=0.42), Q, K)
    assert bool((rho1 == 1.0 / K).all())
    # java form keeps the mu >= 1 floor
    muj = S.win_likelihood(V, eta, slope=4.0, inflection=0.5, form="java")
    assert bool((muj >= 1).all())


def test_normalised_signals_and_support_in_unit_interval():
    net = Sparsey(SparseyConfig())
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(20, 16, 16, generator=g) < 0.2).float()
    net.learn(x[:10])
    src = torch.cat([net._images(x), torch.zeros(20, 1)], 1)
    xs = {"U": src[:, net.u_index_0]}
    V, parts = net._support(0, xs)
    assert bool(((V >= 0) & (V <= 1)).all()) and bool(((parts["U"] >= 0) & (parts["U"] <= 1 + 1e-6)).all())
    G = net.familiarity(x, level=0)
    assert bool(((G >= 0) & (G <= 1)).all())


def test_gate_outside_band_is_inactive_and_learns_nothing():
    net = one_mac(8, band_l1=(0.1, 0.3))
    dense = torch.zeros(1, 8, 8)
    dense[0, :4] = 1.0  # 32/64 = 0.5 > 0.3
    empty = torch.zeros(1, 8, 8)
    for x in (dense, empty):
        before = net.W_U_0.clone()
        code = net.learn(x)
        assert bool((code == -1).all())
        assert float(net.familiarity(x)[0]) == 0.0
        assert torch.equal(before, net.W_U_0)


def test_learning_sets_exactly_outer_product_and_never_decreases():
    net = one_mac(8, Q=4, K=4)
    g = torch.Generator().manual_seed(3)
    xs = random_sparse(3, 64, 10, g).view(3, 8, 8)
    W_prev = net.W_U_0.clone()
    for i in range(3):
        code = net.learn(xs[i : i + 1])[0]  # (Q,)
        cells = codes_to_cells(code.view(1, 1, -1), net.K)[0]  # (C,)
        outer = xs[i].flatten()[:, None] * cells[None, :]  # (64, C)
        expected = torch.maximum(W_prev[0], outer)
        assert torch.equal(net.W_U_0[0], expected)
        assert bool((net.W_U_0 >= W_prev).all())
        W_prev = net.W_U_0.clone()


# ---- memory properties ---------------------------------------------------------------------------
def test_store_then_recall_exact_code_and_full_familiarity():
    net = one_mac(8)
    x = random_sparse(1, 64, 16, torch.Generator().manual_seed(4)).view(1, 8, 8)
    code = net.learn(x)
    assert torch.equal(net.encode(x), code)
    assert float(net.familiarity(x)[0]) == pytest.approx(1.0)


def test_many_items_recall_their_own_distinct_codes_and_novel_is_less_familiar():
    g = torch.Generator().manual_seed(5)
    items: list[torch.Tensor] = []
    while len(items) < 20:  # 16 active of 256, pairwise overlap <= 4
        cand = random_sparse(1, 256, 16, g)[0]
        if all(float((cand * it).sum()) <= 4 for it in items):
            items.append(cand)
    x = torch.stack(items).view(20, 16, 16)
    net = one_mac(16)
    learned = net.learn(x)
    assert torch.equal(net.encode(x), learned)
    assert len({tuple(c.tolist()) for c in learned}) == 20
    novel = random_sparse(20, 256, 16, torch.Generator().manual_seed(99)).view(20, 16, 16)
    g_seen, g_novel = net.familiarity(x), net.familiarity(novel)
    assert bool((g_seen == 1).all())
    assert float(g_novel.mean()) < float(g_seen.mean()) - 0.3


def _sisc_inputs(A: torch.Tensor, shared: list[int], gen: torch.Generator) -> torch.Tensor:
    on = torch.nonzero(A).flatten()
    off = torch.nonzero(A == 0).flatten()
    out = torch.zeros(len(shared), A.numel())
    for i, k in enumerate(shared):
        keep = on[torch.randperm(len(on), generator=gen)[:k]]
        add = off[torch.randperm(len(off), generator=gen)[: 16 - k]]
        out[i, keep] = 1.0
        out[i, add] = 1.0
    return out


def test_sisc_mean_curve_and_rank_correlation():
    """Similar inputs -> similar codes (learning-mode CSA, no weight update)."""
    from scipy.stats import spearmanr

    net = one_mac(8)
    gen = torch.Generator().manual_seed(6)
    A = random_sparse(1, 64, 16, gen)[0]
    code_a = net.learn(A.view(1, 8, 8))[0]
    Q, K = net.Q, net.K
    means, ses = [], []
    for o in (0.0, 0.25, 0.5, 0.75, 1.0):
        B = _sisc_inputs(A, [round(o * 16)] * 200, gen).view(200, 8, 8)
        codes, _ = net.present(B, mode="learn", update_weights=False)
        inter = (codes[0][:, 0] == code_a).sum(-1).float()  # (200,)
        means.append(float(inter.mean()))
        ses.append(float(inter.std() / math.sqrt(200)))
    assert means[4] >= 0.9 * Q
    assert abs(means[0] - Q / K) <= 3 * ses[0] + 1e-9
    assert means[2] - means[0] > 3 * max(ses[0], ses[2])
    for i in range(4):
        assert means[i + 1] - means[i] >= -3 * max(ses[i], ses[i + 1], 1e-3)
    # rank form: o uniform in {0, 1/16, ..., 1}
    shared = torch.randint(0, 17, (200,), generator=gen).tolist()
    B = _sisc_inputs(A, shared, gen).view(200, 8, 8)
    codes, _ = net.present(B, mode="learn", update_weights=False)
    inter = (codes[0][:, 0] == code_a).sum(-1).float()
    rho = spearmanr(shared, inter.tolist()).statistic
    assert rho > 0.5


def test_code_overlap_tracks_pixel_overlap_over_random_pairs():
    """Issue test: random (probe, stored item) pairs over a memory of 5 items; code intersection
    ranks with pixel overlap (learning-mode CSA without storing)."""
    from scipy.stats import spearmanr

    gen = torch.Generator().manual_seed(7)
    stored = random_sparse(5, 256, 16, gen)
    net = one_mac(16)
    codes = net.learn(stored.view(5, 16, 16))
    owner = torch.randint(0, 5, (200,), generator=gen).tolist()
    shared = torch.randint(0, 17, (200,), generator=gen).tolist()
    probes = torch.cat([_sisc_inputs(stored[k], [o], gen) for k, o in zip(owner, shared)])
    pcodes, _ = net.present(probes.view(200, 16, 16), mode="learn", update_weights=False)
    # random pairs (probe, stored item): half with the probe's own source, half with any item
    other = torch.randint(0, 5, (200,), generator=gen)
    partner = torch.where(torch.rand(200, generator=gen) < 0.5, torch.tensor(owner), other)
    pix = (probes * stored[partner]).sum(1)
    inter = (pcodes[0][:, 0] == codes[partner]).sum(1).float()
    assert spearmanr(pix.tolist(), inter.tolist()).statistic > 0.5


def test_freezing_rule_leaves_weights_bitwise_unchanged():
    net = one_mac(8, freeze_threshold=0.1)
    gen = torch.Generator().manual_seed(8)
    X = random_sparse(40, 64, 16, gen).view(40, 8, 8)
    n = 0
    while not bool(net.frozen_U_0.all()):
        net.learn(X[n : n + 1])
        n += 1
        assert n < 40
    assert float(net.saturation(0)[0]) > 0.1
    W = net.W_U_0.clone()
    net.learn(X[n:])
    assert torch.equal(W, net.W_U_0)


def test_single_pass_learn_equals_items_one_at_a_time():
    g = torch.Generator().manual_seed(9)
    X = (torch.rand(8, 16, 16, generator=g) < 0.15).float()
    a, b = Sparsey(SparseyConfig(seed=3)), Sparsey(SparseyConfig(seed=3))
    ca = a.learn(X)
    cb = torch.cat([b.learn(X[i : i + 1]) for i in range(8)])
    assert torch.equal(ca, cb)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_determinism_and_seed_dependence():
    g = torch.Generator().manual_seed(10)
    X = (torch.rand(6, 16, 16, generator=g) < 0.15).float()
    c1 = Sparsey(SparseyConfig(seed=0)).learn(X)
    c2 = Sparsey(SparseyConfig(seed=0)).learn(X)
    c3 = Sparsey(SparseyConfig(seed=1)).learn(X)
    assert torch.equal(c1, c2)
    assert not torch.equal(c1, c3)


def test_level2_input_is_concatenation_of_level1_codes():
    net = Sparsey(SparseyConfig())
    g = torch.Generator().manual_seed(11)
    X = (torch.rand(5, 16, 16, generator=g) < 0.15).float()
    net.learn(X)
    codes, _ = net.encode_levels(X)
    cells1 = codes_to_cells(codes[0], net.K)  # (B, 16*C)
    src = torch.cat([cells1, torch.zeros(5, 1)], 1)
    xU2 = src[:, net.u_index_1]  # (B, 1, aU)
    assert torch.equal(xU2[:, 0], cells1)  # RF = all macs, in mac order
    inactive = (codes[0] < 0).all(-1)
    assert bool(inactive.any() or True)
    for b, m in torch.nonzero(inactive).tolist():  # inactive macs contribute zeros
        assert float(cells1[b, m * net.C : (m + 1) * net.C].sum()) == 0.0


# ---- reference equivalence -----------------------------------------------------------------------
def _reference_learn_encode(cfg: SparseyConfig, X: torch.Tensor) -> tuple[list, list, list]:
    """Plain-loop CSA (loops over macs, CMs and cells) for a grid of windows + one top mac.

    Consumes the generator exactly like the vectorised code: priorities (M, Q, K) per level at
    construction, then one (1, M, Q) uniform draw per level per learning frame. Q, K, lambda_U
    and the freeze threshold may differ per level.
    """
    Hs, Ws = cfg.input_shape
    Qs, Ks = [cfg.at("Q", lvl) for lvl in range(2)], [cfg.at("K", lvl) for lvl in range(2)]
    Cs = [q * k for q, k in zip(Qs, Ks)]
    gen = torch.Generator().manual_seed(cfg.seed)
    g1, w = cfg.grids[0], cfg.windows[0]
    h = w // 2
    cy = [int(round(v)) for v in torch.linspace(h, Hs - 1 - h, g1, dtype=torch.float64).tolist()]
    cx = [int(round(v)) for v in torch.linspace(h, Ws - 1 - h, g1, dtype=torch.float64).tolist()]
    rf1 = [[r * Ws + c for r in range(y - h, y - h + w) for c in range(x - h, x - h + w)] for y in cy for x in cx]
    M1 = len(rf1)
    rf2 = [[m * Cs[0] + i for m in range(M1) for i in range(Cs[0])]]
    levels = [(rf1, [len(r) for r in rf1], cfg.band_l1), (rf2, [M1 * Qs[0]], cfg.band_higher)]
    prio = [torch.rand(len(rf), Qs[lvl], Ks[lvl], generator=gen) for lvl, (rf, _, _) in enumerate(levels)]
    fewest = cfg.tie_order == "fewest_links"

    def key(lvl, m, q, k, extra=0.0):  # larger wins: fewest links first, then the fixed priority
        links = sum(row[q * Ks[lvl] + k] for row in W[lvl][m]) + extra
        return (-links, float(prio[lvl][m, q, k])) if fewest else float(prio[lvl][m, q, k])

    W = [[[[0.0] * Cs[lvl] for _ in rf[m]] for m in range(len(rf))] for lvl, (rf, _, _) in enumerate(levels)]
    frozen = [[False] * len(rf) for rf, _, _ in levels]

    def step(lvl, src, learn):
        rf, cap, band = levels[lvl]
        Q, K, C, lam = Qs[lvl], Ks[lvl], Cs[lvl], cfg.at("lambda_u", lvl)
        M = len(rf)
        u = torch.rand(1, M, Q, generator=gen) if learn else None
        codes = []
        for m in range(M):
            x = [src[j] for j in rf[m]]
            pi = sum(x)
            if not (pi >= band[0] * cap[m] and pi <= band[1] * cap[m] and pi > 0):
                codes.append([-1] * Q)
                continue
            V = [(sum(x[j] * W[lvl][m][j][i] for j in range(len(x))) / pi) ** lam for i in range(C)]
            G = sum(max(V[q * K + k] for k in range(K)) for q in range(Q)) / Q
            code = []
            for q in range(Q):
                Vq = V[q * K : (q + 1) * K]
                best = max(Vq)
                recog = max((k for k in range(K) if Vq[k] == best), key=lambda k: key(lvl, m, q, k))
                if learn and frozen[lvl][m]:  # past the critical period: recognition's winner
                    code.append(recog)
                elif learn:
                    gp = max(0.0, (G - cfg.g_minus) / (1 - cfg.g_minus))
                    eta = 1 + gp**cfg.gamma * cfg.chi * K
                    mu = [(eta - 1) / (1 + math.exp(-cfg.slope * (v - cfg.inflection))) + 1 for v in Vq]
                    tot, acc, win = sum(mu), 0.0, 0
                    for k in range(K):
                        acc += mu[k] / tot
                        if acc < float(u[0, m, q]):
                            win = k + 1
                    win = min(win, K - 1)
                    # the cell recognition picks once the draw is stored: full-support cells and the draw
                    cands = [k for k in range(K) if Vq[k] >= 1.0] + [win]
                    missing = sum(x[j] * (1 - W[lvl][m][j][q * K + win]) for j in range(len(x)))  # links storing adds
                    code.append(max(cands, key=lambda k: key(lvl, m, q, k, missing if k == win else 0.0)))
                else:
                    code.append(recog)
            codes.append(code)
            if learn and not frozen[lvl][m]:
                for j in range(len(x)):
                    if x[j]:
                        for q in range(Q):
                            W[lvl][m][j][q * K + code[q]] = 1.0
                ones = sum(sum(row) for row in W[lvl][m])
                if ones / (len(x) * C) > cfg.at("freeze_threshold", lvl):
                    frozen[lvl][m] = True
        return codes

    def forward(img, learn):
        src = img.flatten().tolist()
        out = []
        for lvl in range(2):
            codes = step(lvl, src, learn)
            out.append(codes)
            src = [0.0] * (len(codes) * Cs[lvl])
            for m, code in enumerate(codes):
                for q, k in enumerate(code):
                    if k >= 0:
                        src[m * Cs[lvl] + q * Ks[lvl] + k] = 1.0
        return out

    learned = [forward(X[i], True) for i in range(X.shape[0])]
    recalled = [forward(X[i], False) for i in range(X.shape[0])]
    return learned, recalled, W


@pytest.mark.parametrize(
    "kw",
    [
        {"Q": 3, "K": 4, "freeze_threshold": 0.3, "tie_order": "priority"},
        {"Q": 3, "K": 4, "freeze_threshold": 0.3, "tie_order": "fewest_links"},
        {"Q": (3, 2), "K": (4, 6), "lambda_u": (1.0, 3.0), "freeze_threshold": (0.3, 0.6)},
    ],
)
def test_vectorised_equals_plain_loop_reference(kw):
    cfg = SparseyConfig(input_shape=(6, 6), grids=(2, 1), windows=(3, 0), seed=5, **kw)
    g = torch.Generator().manual_seed(12)
    X = (torch.rand(15, 6, 6, generator=g) < 0.3).float()
    net = Sparsey(cfg)
    learned_net = [net.present(X[i : i + 1], mode="learn")[0] for i in range(15)]
    rec_net, _ = net.encode_levels(X)
    learned_ref, rec_ref, W_ref = _reference_learn_encode(cfg, X)
    for i in range(15):
        for lvl in range(2):
            assert learned_net[i][lvl][0].tolist() == learned_ref[i][lvl], (i, lvl)
            assert rec_net[lvl][i].tolist() == rec_ref[i][lvl], (i, lvl)
    for lvl in range(2):
        Wn = net._buf("W", "U", lvl)
        for m, Wm in enumerate(W_ref[lvl]):
            assert torch.equal(Wn[m, : len(Wm)], torch.tensor(Wm)), (lvl, m)
    assert bool(net.frozen_U_0.any())  # the freezing path was exercised


# ---- sequences -------------------------------------------------------------------------------------
def _separated_sequences() -> torch.Tensor:
    """4 sequences of 5 random 24-pixel frames, any two frames sharing <= 25% of their pixels."""
    gen = torch.Generator().manual_seed(16)
    frames: list[torch.Tensor] = []
    while len(frames) < 20:
        cand = random_sparse(1, 256, 24, gen)[0]
        if all(float((cand * f).sum()) <= 6 for f in frames):
            frames.append(cand)
    return torch.stack(frames).view(4, 5, 16, 16)


def test_sequences_learn_and_recall_whole_code_chain():
    X = _separated_sequences()
    flat = X.flatten(2)
    for a in range(20):  # frames share <= 25% of their active pixels
        for b in range(a + 1, 20):
            fa, fb = flat.view(20, -1)[a], flat.view(20, -1)[b]
            assert float((fa * fb).sum()) <= 0.25 * float(fa.sum())
    net = Sparsey(SparseyConfig())
    learned = net.learn_sequence(X)  # (4, 5, Q)
    assert net.W_H_0.sum() > 0 and net.W_D_0.sum() > 0  # H and D paths learned
    recalled = net.encode_sequence(X)
    assert torch.equal(recalled, learned)
    # first frame: H/D buffers are cleared, so it equals the static (U-only) code
    assert torch.equal(recalled[:, 0], net.encode(X[:, 0]))
    # familiar: G ~ 1 (a level-1 tie from superposition may flip a lower cell; top codes still match)
    assert float(net.familiarity_sequence(X).min()) > 0.95


def test_sequence_context_changes_codes():
    """The same frame reached through different histories gets a different H input."""
    X = _separated_sequences()
    net = Sparsey(SparseyConfig())
    net.learn_sequence(X)
    swapped = X.clone()
    swapped[0, 1:] = X[1, 1:]  # sequence 0's first frame, then sequence 1's continuation
    lv_sw, g_sw = net.encode_sequence_levels(swapped)
    lv, g = net.encode_sequence_levels(X)
    assert float(g_sw[0][0, 1].mean()) < float(g[0][1, 1].mean())  # wrong history -> less familiar


# ---- read-out, save/load, config ------------------------------------------------------------------------
def test_readouts_fit_separated_classes():
    n_cells, per = 200, 5
    A = torch.zeros(10 * per, n_cells)
    y = torch.arange(10).repeat_interleave(per)
    g = torch.Generator().manual_seed(13)
    for i in range(10 * per):
        c = int(y[i])
        A[i, c * 20 + torch.randperm(20, generator=g)[:8]] = 1.0  # class-specific cells
    for kind in ("count", "binary", "nn_overlap", "svm"):
        assert Readout(kind).fit(A, y).accuracy(A, y) == 1.0, kind


def test_save_load_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(14)
    X = (torch.rand(10, 16, 16, generator=g) < 0.15).float()
    net = Sparsey(SparseyConfig(seed=2))
    net.learn(X[:6])
    net.save(tmp_path / "net.pt")
    back = Sparsey.load(tmp_path / "net.pt")
    assert torch.equal(back.encode(X), net.encode(X))
    assert torch.equal(back.familiarity(X), net.familiarity(X))
    assert torch.equal(back.learn(X[6:]), net.learn(X[6:]))  # generator state travels too
    with pytest.raises(DataFormatError):
        Sparsey.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "kw",
    [
        {"Q": 0},
        {"K": 1},
        {"band_l1": (0.5, 0.1)},
        {"windows": (20, 0)},
        {"grids": (4,)},
        {"freeze_threshold": 0.0},
        {"g_minus": 1.0},
        {"mu_form": "tanh"},
        {"persistence": (0,)},
    ],
)
def test_bad_config_is_one_line_error(kw):
    with pytest.raises(ConfigError) as e:
        SparseyConfig(**kw)
    assert "\n" not in str(e.value)


def test_variants_run():
    g = torch.Generator().manual_seed(15)
    X = (torch.rand(6, 16, 16, generator=g) < 0.15).float()
    for kw in (
        {"rf_mode": "radius", "rf_radius": (0.3, 0.0)},
        {"mu_form": "java", "slope": 4.0},
        {"decay": "sparseypy"},
        {"norm_floor": True},
        {"backoff": True},
        {"persistence": (1, 2)},
    ):
        net = Sparsey(SparseyConfig(**kw))
        net.learn(X)
        seq = net.learn_sequence(X.view(2, 3, 16, 16))
        assert seq.shape == (2, 3, 8)
        assert torch.equal(net.encode(X[:1]), net.encode(X[:1]))


# ---- preprocessing ------------------------------------------------------------------------------------
def test_raw_loader_orientation_label_and_size(tmp_path):
    img = torch.zeros(24, 16, dtype=torch.uint8)
    img[0, :] = 255  # top row on
    img[:, 0] = 255  # left column on
    img[23, 15] = 255
    d = tmp_path / "7_16x24"
    d.mkdir()
    (d / "7_0001.raw").write_bytes(bytes(img.flatten().tolist()))
    x, y = load_sparsey_raw(tmp_path)
    assert x.shape == (1, 24, 16) and int(y[0]) == 7
    assert torch.equal(x[0], (img > 0).float())
    (d / "7_0002.raw").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError):
        load_sparsey_raw(tmp_path)


def test_digits_binary_and_thinning():
    xtr, ytr, xte, yte = digits_binary(0)
    assert xtr.shape == (1000, 16, 16) and xte.shape == (797, 16, 16)
    assert set(torch.unique(xtr).tolist()) <= {0.0, 1.0}
    assert torch.bincount(ytr).tolist() == [100] * 10
    line = torch.zeros(9, 9)
    line[4, 1:8] = 1.0
    assert torch.equal(zhang_suen(line), line)
    sq = torch.zeros(9, 9)
    sq[2:7, 2:7] = 1.0
    th = zhang_suen(sq)
    assert 0 < th.sum() < sq.sum() and bool((th <= sq).all())
    assert torch.equal(zhang_suen(th), th)
    assert torch.equal(boundary(sq).sum(), torch.tensor(16.0))
