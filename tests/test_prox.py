# ruff: noqa: B023  (lambdas are called inside the loop that defines them)
"""Tests for sparseforge.prox: SEF value, the §2.5 kernel, SEF/WGSEF prox, group lasso, L1.

Spec: shared/methods/wgsef.md §7 (items 1-20, 25).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from sparseforge.errors import UserError
from sparseforge.groups import GROUPINGS, group_view
from sparseforge.prox import (
    L1,
    GroupEnvelope,
    GroupLasso,
    ProxOperator,
    exact_sef_prox,
    group_prox_scale,
    sef_prox,
    sef_value,
    solve_clip_sum,
    top_k_groups,
)
from sparseforge.registry import METHODS

D = torch.float64


def _rand_vec(rng: np.random.Generator, m: int, zeros: float = 0.0) -> torch.Tensor:
    x = torch.tensor(rng.standard_normal(m), dtype=D)
    x[torch.tensor(rng.random(m) < zeros)] = 0.0
    return x


# ----------------------------------------------------------------------------- value (§2.4)
def _feasible_t(rng, m, k):
    # a random point of {t in [0,1]^m, sum t = k}: scale then clip/renormalise by bisection on a shift
    u = rng.random(m)
    lo, hi = -2.0, 2.0
    for _ in range(60):
        c = 0.5 * (lo + hi)
        s = np.clip(u + c, 0, 1).sum()
        lo, hi = (c, hi) if s < k else (lo, c)
    return np.clip(u + 0.5 * (lo + hi), 0, 1)


def test_value_is_min_over_t_and_attained():  # §7.1
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = int(rng.integers(3, 12))
        k = int(rng.integers(1, m))
        y = _rand_vec(rng, m).abs()
        v = float(sef_value(y, k))
        for _ in range(100):
            t = _feasible_t(rng, m, k)
            assert abs(t.sum() - k) < 1e-6
            with np.errstate(divide="ignore", invalid="ignore"):
                obj = 0.5 * np.where(y.numpy() == 0, 0.0, y.numpy() ** 2 / t).sum()
            assert v <= obj + 1e-9
        t_opt = solve_clip_sum(y, torch.zeros(m, dtype=D), k)
        attained = 0.5 * float((y**2 / t_opt).sum())
        assert abs(attained - v) < 1e-9 * max(1.0, v)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(0, 10_000), st.floats(0.0, 0.7))
def test_value_lower_bound_and_equality_iff_k_sparse(m, seed, zeros):  # §7.2
    rng = np.random.default_rng(seed)
    x = _rand_vec(rng, m, zeros)
    k = int(rng.integers(1, m + 1))
    v = float(sef_value(x, k))
    half = 0.5 * float((x**2).sum())
    assert v >= half - 1e-12 * max(1, half)
    if int((x != 0).sum()) <= k:
        assert v == pytest.approx(half, rel=1e-12, abs=1e-15)
    else:
        assert v > half * (1 + 1e-9)


def test_value_homogeneity_convexity_permutation_special_cases_monotone():  # §7.3-7.7
    rng = np.random.default_rng(1)
    for _ in range(30):
        m = int(rng.integers(2, 15))
        k = int(rng.integers(1, m + 1))
        x, y = _rand_vec(rng, m, 0.2), _rand_vec(rng, m, 0.2)
        c = float(rng.uniform(0.1, 5))
        assert float(sef_value(c * x, k)) == pytest.approx(c * c * float(sef_value(x, k)), rel=1e-10)
        mid = float(sef_value(0.5 * (x + y), k))
        assert mid <= 0.5 * (float(sef_value(x, k)) + float(sef_value(y, k))) + 1e-12
        perm = torch.tensor(rng.permutation(m))
        assert float(sef_value(x[perm], k)) == pytest.approx(float(sef_value(x, k)), rel=1e-12)
        assert float(sef_value(x, m)) == pytest.approx(0.5 * float((x**2).sum()), rel=1e-12)
        assert float(sef_value(x, 1)) == pytest.approx(0.5 * float(x.abs().sum()) ** 2, rel=1e-12)
        vals = [float(sef_value(x, kk)) for kk in range(1, m + 1)]
        assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:]))


def test_value_sort_equals_select_and_is_differentiable():
    x = torch.randn(50, dtype=D, requires_grad=True)
    v1, v2 = sef_value(x, 7, method="sort"), sef_value(x, 7, method="select")
    assert float(v1.detach()) == pytest.approx(float(v2.detach()), rel=1e-12)
    torch.autograd.gradcheck(lambda z: sef_value(z, 7), (x,))


# ----------------------------------------------------------------------------- kernel (§2.5)
def _bisect_alpha(beta, delta, k):
    lo, hi = 0.0, 1.0
    F = lambda a: float(torch.clamp(a * beta - delta, 0, 1).sum())  # noqa: E731
    while F(hi) < k:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if F(mid) < k else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("method", ["sort", "select"])
def test_kernel_against_bisection(method):  # §7.8-7.10
    rng = np.random.default_rng(2)
    for _ in range(60):
        m = int(rng.integers(2, 60))
        beta = torch.tensor(rng.random(m), dtype=D)
        beta[torch.tensor(rng.random(m) < 0.2)] = 0
        delta = torch.tensor(rng.random(m) * rng.choice([0.0, 0.1, 2.0]), dtype=D)
        npos = int((beta > 0).sum())
        if npos < 2:
            continue
        k = float(rng.integers(1, npos)) if rng.random() < 0.7 else float(rng.uniform(0.1, npos - 0.01))
        t = solve_clip_sum(beta, delta, k, method=method)
        assert float(t.min()) >= 0 and float(t.max()) <= 1
        assert float(t.sum()) == pytest.approx(k, rel=1e-9)
        a = _bisect_alpha(beta, delta, k)
        t_ref = torch.clamp(a * beta - delta, 0, 1)
        assert torch.allclose(t, t_ref, atol=1e-8)


def test_kernel_ties_and_flat_pieces():
    beta = torch.ones(10, dtype=D)  # all breakpoints tied
    t = solve_clip_sum(beta, torch.zeros(10, dtype=D), 4, method="select")
    assert torch.allclose(t, torch.full((10,), 0.4, dtype=D))
    # flat piece: 3 huge coordinates saturate long before the small ones start -> F = 3 on a plateau
    beta = torch.tensor([100.0, 100.0, 100.0, 1.0, 1.0], dtype=D)
    delta = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0], dtype=D)
    for method in ("sort", "select"):
        t = solve_clip_sum(beta, delta, 3, method=method)
        assert torch.allclose(t, torch.tensor([1, 1, 1, 0, 0], dtype=D))


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 3000), st.integers(0, 10_000), st.floats(0.0, 3.0))
def test_sort_and_select_agree(m, seed, gamma):
    rng = np.random.default_rng(seed)
    x = _rand_vec(rng, m, 0.1)
    if rng.random() < 0.3:  # many ties
        x = torch.round(x * 2) / 2
    k = int(rng.integers(1, m + 1))
    p1 = sef_prox(x, k, gamma, method="sort")
    p2 = sef_prox(x, k, gamma, method="select")
    assert torch.allclose(p1, p2, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- select at scale
# m above envelope._SMALL, so "select" goes through the sample bracketing, not only the median rounds.
def _bisect_t(beta, delta, k):
    """Oracle: bisection on α with F evaluated directly (no cumulative sums), run to the last bit."""
    F = lambda a: float(torch.clamp(a * beta - delta, 0, 1).sum())  # noqa: E731
    lo, hi = 0.0, 1.0
    while F(hi) < k:
        hi *= 2
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if F(mid) < k else (lo, mid)
    return torch.clamp(hi * beta - delta, 0, 1)


def _adversarial_cases(m, rng):
    u = torch.tensor(rng.random(m), dtype=D) + 0.01
    z = u.clone()
    z[torch.tensor(rng.random(m) < 0.5)] = 0.0
    half = torch.cat([torch.full((m // 2,), 100.0, dtype=D), torch.ones(m - m // 2, dtype=D)])
    yield "random", u, 0.3
    yield "random_vec_delta", u, torch.tensor(rng.random(m), dtype=D)
    yield "delta_zero", u, 0.0
    yield "half_zeros", z, 0.3
    yield "ties", torch.round(u * 4) / 4 + 0.25, 0.1
    yield "ties_vec_delta", torch.round(u * 4) / 4 + 0.25, torch.round(torch.tensor(rng.random(m), dtype=D) * 3) / 3
    yield "all_equal", torch.ones(m, dtype=D), 0.3
    yield "all_equal_vec_delta", torch.ones(m, dtype=D), torch.full((m,), 0.3, dtype=D)
    yield "plateau", half, 5.0  # F = m/2 on a long flat piece
    yield "dynamic_range_1e12", torch.exp(torch.tensor(rng.standard_normal(m), dtype=D) * 6), 0.5


@pytest.mark.parametrize("m", [20_000, 60_000])
def test_select_at_scale_matches_sort_and_oracle(m):
    rng = np.random.default_rng(m)
    for name, beta, delta in _adversarial_cases(m, rng):
        delta = torch.as_tensor(delta, dtype=D)
        npos = int((beta > 0).sum())
        for k in (1, 2, npos // 3, npos // 2, npos - 2, npos - 1):
            t = solve_clip_sum(beta, delta, k, method="select")
            assert float(t.min()) >= 0 and float(t.max()) <= 1, name
            assert float(t.sum()) == pytest.approx(k, rel=1e-10, abs=1e-8), (name, k)
            assert torch.equal(t[beta == 0], torch.zeros_like(t[beta == 0])), name
            if k < npos - 2:  # the sort sweep's cumulative sums lose digits near k = #(beta > 0)
                t_sort = solve_clip_sum(beta, delta, k, method="sort")
                assert torch.allclose(t, t_sort, atol=1e-6, rtol=0), (name, k)
            if k in (1, npos // 2, npos - 1):
                assert torch.allclose(t, _bisect_t(beta, delta, k), atol=1e-7, rtol=0), (name, k)


def test_select_huge_dynamic_range_against_oracle():
    # values over ~1e-150..1e150: the sort sweep's cumulative sums cancel here; select must not
    rng = np.random.default_rng(5)
    m = 20_000
    beta = torch.exp(torch.tensor(rng.standard_normal(m), dtype=D) * 100)
    for delta in (torch.tensor(0.5, dtype=D), torch.exp(torch.tensor(rng.standard_normal(m), dtype=D) * 3)):
        for k in (1, m // 2, m - 1):
            t = solve_clip_sum(beta, delta, k, method="select")
            assert float(t.sum()) == pytest.approx(k, rel=1e-12)
            assert torch.allclose(t, _bisect_t(beta, delta, k), atol=1e-7, rtol=0)


def test_select_fallback_paths(monkeypatch):
    """A sample that misses the root (forced) and a bracket that cannot shrink (all equal) still solve exactly."""
    import sparseforge.prox.envelope as env

    rng = np.random.default_rng(9)
    m = 30_000
    beta = torch.tensor(rng.random(m), dtype=D)
    ref = solve_clip_sum(beta, torch.tensor(0.2, dtype=D), m // 2, method="sort")
    monkeypatch.setattr(env, "_SAMPLE_C", -3.0)  # bracket on the wrong side of the root
    t = solve_clip_sum(beta, torch.tensor(0.2, dtype=D), m // 2, method="select")
    assert torch.allclose(t, ref, atol=1e-9, rtol=0)
    monkeypatch.undo()
    t = solve_clip_sum(torch.full((m,), 2.0, dtype=D), torch.tensor(0.0, dtype=D), 7, method="select")
    assert torch.allclose(t, torch.full((m,), 7 / m, dtype=D))


@pytest.mark.parametrize("exact", [False, True])
def test_select_prox_at_scale_float32_and_k_extremes(exact):
    rng = np.random.default_rng(3)
    m = 50_000
    x = _rand_vec(rng, m, 0.2)
    x[:1000] = torch.round(x[:1000])  # ties (and more zeros)
    prox = exact_sef_prox if exact else sef_prox
    gamma = 0.4
    nnz = int((x != 0).sum())
    for k in (1, nnz // 2, nnz - 1, nnz, m):
        p64 = prox(x, k, gamma, method="select")
        assert torch.allclose(p64, prox(x, k, gamma, method="sort"), atol=1e-6, rtol=0)
        p32 = prox(x.float(), k, gamma, method="select")
        assert p32.dtype == torch.float32
        assert torch.allclose(p32.double(), p64, atol=1e-5)
        assert bool(((p64 == 0) | (torch.sign(p64) == torch.sign(x))).all())
        assert int((p64 != 0).sum()) >= min(k, nnz)
    # group level with custom weights (vector delta) through the operator
    w = torch.tensor(rng.standard_normal((m // 5, 1, 3, 3)), dtype=torch.float32)
    mult = torch.tensor(rng.uniform(0.2, 1.0, m // 5))
    outs = []
    for method in ("select", "sort"):
        op = GroupEnvelope(0.3, "filter", 1.0, exact=exact, group_weights="custom", multipliers=mult, method=method)
        ww = w.clone()
        op.prox_(ww, 0.3)
        outs.append(ww)
    assert torch.allclose(outs[0], outs[1], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- prox (§2.6)
def _group_problem(rng):
    m = int(rng.integers(2, 7))
    sizes = rng.integers(1, 4, size=m)
    v = [torch.tensor(rng.standard_normal(s), dtype=D) for s in sizes]
    for j in range(m):
        if rng.random() < 0.15:
            v[j].zero_()
    w = torch.tensor(rng.uniform(0.5, 1.0, size=m), dtype=D)
    k = int(rng.integers(1, m))
    return v, w, k


def _np_sef(y, k):
    """Reference s_k by the §2.4 head scan (independent of the library's kernel)."""
    u = np.sort(np.abs(np.asarray(y, dtype=float)))[::-1]
    if np.count_nonzero(u) <= k:
        return 0.5 * float((u**2).sum())
    for h in range(k):
        T = u[h:].sum()
        a = (k - h) / T
        if (h == 0 or u[h - 1] * a >= 1) and u[h] * a <= 1:
            return 0.5 * (float((u[:h] ** 2).sum()) + T * T / (k - h))
    raise AssertionError("no head found")


def test_reference_sef_agrees_with_library():
    rng = np.random.default_rng(11)
    for _ in range(50):
        m = int(rng.integers(1, 20))
        k = int(rng.integers(1, m + 1))
        x = _rand_vec(rng, m, 0.3)
        assert float(sef_value(x, k)) == pytest.approx(_np_sef(x.numpy(), k), rel=1e-12, abs=1e-15)


def _objective(p_flat, v, w, k, gamma, exact, sizes):
    parts = np.split(p_flat, np.cumsum(sizes)[:-1])
    y = np.array([np.linalg.norm(q) for q in parts]) * w.numpy()
    val = _np_sef(y, k) - (0.5 * float((y**2).sum()) if exact else 0.0)
    vf = np.concatenate([q.numpy() for q in v])
    return 0.5 * ((p_flat - vf) ** 2).sum() + gamma * val


def _group_prox(v, w, k, gamma, exact, method="select"):
    a = torch.stack([q.norm() for q in v])
    s = group_prox_scale(a, k, gamma, weights=w, exact=exact, method=method)
    return [q * s[j] for j, q in enumerate(v)], s


@pytest.mark.parametrize("exact", [False, True])
def test_group_prox_is_the_minimiser_powell(exact):  # §7.11
    rng = np.random.default_rng(3 + exact)
    for _ in range(2 if exact else 3):
        v, w, k = _group_problem(rng)
        gamma = float(rng.uniform(0.05, 0.95)) if exact else float(rng.uniform(0.05, 2.0))
        p, _ = _group_prox(v, w, k, gamma, exact)
        sizes = [q.numel() for q in v]
        f = lambda z: _objective(z, v, w, k, gamma, exact, sizes)  # noqa: E731
        fp = f(np.concatenate([q.numpy() for q in p]))
        vf = np.concatenate([q.numpy() for q in v])
        for s in range(15):
            x0 = vf if s == 0 else vf * rng.random(vf.size) + 0.1 * rng.standard_normal(vf.size)
            r = minimize(f, x0, method="Powell", options={"xtol": 1e-9, "ftol": 1e-13, "maxiter": 20000})
            assert r.fun >= fp - 1e-9


def test_sef_prox_matches_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(5):
        m = int(rng.integers(2, 6))
        k = int(rng.integers(1, m))
        x = _rand_vec(rng, m)
        g = float(rng.uniform(0.1, 2.0))
        p = sef_prox(x, k, g)
        f = lambda z: 0.5 * ((z - x.numpy()) ** 2).sum() + g * _np_sef(z, k)  # noqa: E731
        best = min(minimize(f, x.numpy() * rng.random(m), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14}).fun for _ in range(8))
        assert f(p.numpy()) <= best + 1e-9


@pytest.mark.parametrize("exact", [False, True])
def test_group_prox_invariants(exact):  # §7.12-7.14, 7.19
    rng = np.random.default_rng(7)
    for _ in range(40):
        v, w, k = _group_problem(rng)
        gamma = float(rng.uniform(0.01, 0.99))
        p, s = _group_prox(v, w, k, gamma, exact)
        assert float(s.min()) >= 0 and float(s.max()) <= 1 + 1e-12
        for q, qv in zip(p, v):
            if float(qv.norm()) == 0:
                assert float(q.abs().max()) == 0
        nnz_in = sum(float(q.norm()) > 0 for q in v)
        nnz_out = sum(float(q.norm()) > 0 for q in p)
        if nnz_in > k:
            assert nnz_out >= k
        perm = rng.permutation(len(v))
        p2, _ = _group_prox([v[i] for i in perm], w[torch.tensor(perm)], k, gamma, exact)
        for i, j in enumerate(perm):
            assert torch.allclose(p2[i], p[j], atol=1e-12)


def test_k_sparse_input():  # §7.15
    v = torch.tensor([3.0, 0.0, -2.0, 0.0, 0.0], dtype=D)
    w = torch.tensor([1.0, 0.5, 0.7, 0.9, 0.6], dtype=D)
    s = group_prox_scale(v.abs(), 2, 0.4, weights=w, exact=True)
    assert torch.equal(s[[0, 2]], torch.ones(2, dtype=D))
    s = group_prox_scale(v.abs(), 2, 0.4, weights=w, exact=False)
    assert torch.allclose(s[[0, 2]], 1 / (1 + 0.4 * w[[0, 2]] ** 2))


def test_exact_prox_near_one_is_hard_threshold():  # §7.16
    x = torch.tensor([5.0, -4.0, 0.3, 3.0, -0.2, 0.1], dtype=D)
    p = exact_sef_prox(x, 3, 0.999)
    expect = torch.tensor([5.0, -4.0, 0.0, 3.0, 0.0, 0.0], dtype=D)
    assert torch.allclose(p, expect, atol=1e-9)
    assert int((p != 0).sum()) == 3


def test_exact_prox_large_gamma_gives_exactly_k():
    rng = np.random.default_rng(9)
    for _ in range(20):
        m = int(rng.integers(3, 40))
        k = int(rng.integers(1, m))
        x = _rand_vec(rng, m)
        p = exact_sef_prox(x, k, 0.9999)
        assert int((p != 0).sum()) == k


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000), st.floats(0.01, 3.0))
def test_envelope_prox_firmly_nonexpansive(m, seed, gamma):  # §7.17
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, m + 1))
    u, v = _rand_vec(rng, m, 0.2), _rand_vec(rng, m, 0.2)
    pu, pv = sef_prox(u, k, gamma), sef_prox(v, k, gamma)
    d = pu - pv
    assert float(d @ d) <= float(d @ (u - v)) + 1e-10
    assert float(d.norm()) <= float((u - v).norm()) + 1e-10


def test_float32_matches_float64():  # §7.18
    x = torch.randn(200, dtype=D)
    for method in ("sort", "select"):
        p64 = sef_prox(x, 20, 0.3, method=method)
        p32 = sef_prox(x.float(), 20, 0.3, method=method)
        assert p32.dtype == torch.float32
        assert torch.allclose(p32.double(), p64, atol=1e-5)


# ----------------------------------------------------------------------------- groups / operators
@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (7, 5)])
def test_groups_partition(grouping, shape):  # §7.20
    w = torch.arange(float(np.prod(shape))).reshape(shape) + 1
    g = group_view(w, grouping)
    assert sorted(g.reshape(-1).tolist()) == sorted(w.reshape(-1).tolist())
    assert float((g**2).sum()) == pytest.approx(float((w**2).sum()))


@pytest.mark.parametrize("grouping", ["filter", "channel", "shape", "element", "row", "column"])
def test_group_envelope_operator_matches_group_math(grouping):
    torch.manual_seed(0)
    w = torch.randn(8, 6, 3, 3)
    ref = w.clone().double()
    op = GroupEnvelope(0.5, grouping, 2.0, exact=False)
    op.prox_(w, 0.2)
    g = group_view(ref, grouping)
    s = group_prox_scale(g.norm(dim=1), op.k_for(ref), 0.4)
    assert torch.allclose(group_view(w, grouping).double(), g * s[:, None], atol=1e-5)


def test_exact_operator_with_projection_leaves_at_most_k_groups():  # §7.22
    torch.manual_seed(1)
    for grouping in ("filter", "channel", "shape"):
        w = torch.randn(10, 8, 3, 3)
        op = GroupEnvelope(3, grouping, 1.0, exact=True)
        op.prox_(w, 0.5)  # not yet k-sparse
        op.project_tensors_([w])
        nz = int((group_view(w, grouping).abs().sum(1) > 0).sum())
        assert nz <= 3
        w2 = torch.randn(10, 8, 3, 3)
        with pytest.warns(UserWarning, match="clamped"):
            op.prox_(w2, 5.0)  # gamma clamped to 0.999 -> exactly k groups
        assert int((group_view(w2, grouping).abs().sum(1) > 0).sum()) == 3


def test_coupled_bias_and_bn_are_scaled_with_their_filter():
    torch.manual_seed(2)
    w, b, gm, bt = torch.randn(6, 3, 3, 3), torch.randn(6), torch.randn(6), torch.randn(6)
    op = GroupEnvelope(2, "filter", 1.0, coupled=[b, gm, bt])
    op.prox_(w, 0.9)
    zero = w.flatten(1).abs().sum(1) == 0
    assert int((~zero).sum()) >= 2
    for c in (b, gm, bt):
        assert torch.all(c[zero] == 0)
    op.prox_(w, 0.9999)
    assert int((w.flatten(1).abs().sum(1) > 0).sum()) == 2


def test_layer_grouping_joint():
    torch.manual_seed(3)
    ws = [torch.randn(4, 3) * s for s in (3.0, 0.1, 2.0, 0.2)]
    op = GroupEnvelope(2, "layer", 1.0)
    op.prox_tensors_(ws, 0.9999)
    alive = [bool((w != 0).any()) for w in ws]
    assert alive == [True, False, True, False]


def test_group_lasso_closed_form():  # §7.25
    torch.manual_seed(4)
    w = torch.randn(12, 5)
    w[3] *= 0.01
    ref = w.clone()
    GroupLasso("row", 2.0).prox_(w, 0.25)  # gamma = 0.5
    n = ref.norm(dim=1, keepdim=True)
    expect = torch.clamp(1 - 0.5 / n, min=0) * ref
    assert torch.allclose(w, expect, atol=1e-6)
    assert torch.all(w[(n <= 0.5).squeeze(1)] == 0)
    assert torch.all(w[3] == 0)


def test_l1_soft_threshold():
    w = torch.tensor([3.0, -0.5, 0.1, -2.0])
    L1(1.0).prox_(w, 1.0)
    assert torch.equal(w, torch.tensor([2.0, 0.0, 0.0, -1.0]))


def _instances():
    return [(n, METHODS.get(n)) for n in METHODS.names(family="prox")]


@pytest.mark.parametrize("name,cls", _instances())
def test_every_prox_is_identity_at_weight_zero(name, cls):
    assert issubclass(cls, ProxOperator)
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    ref = w.clone()
    op = cls(weight=0.0)
    op.prox_(w, 0.7)
    assert torch.equal(w, ref)
    op = cls(weight=1.0)
    op.prox_(w, 0.0)
    assert torch.equal(w, ref)
    op.prox_(w, 0.5)  # and a positive step does change it (shrinks the norm)
    assert float(w.norm()) < float(ref.norm())
    assert torch.isfinite(op.penalty(ref)) and float(op.penalty(ref)) >= 0


@pytest.mark.parametrize("name,cls", _instances())
def test_every_prox_nonexpansive(name, cls):
    torch.manual_seed(1)
    op = cls(weight=1.0)
    for _ in range(10):
        u, v = torch.randn(8, 4, 3, 3, dtype=D), torch.randn(8, 4, 3, 3, dtype=D)
        if getattr(op, "exact", False):
            continue  # the exact penalty is non-convex: its prox is not non-expansive
        pu, pv = op.prox_(u.clone(), 0.3), op.prox_(v.clone(), 0.3)
        assert float((pu - pv).norm()) <= float((u - v).norm()) + 1e-10


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_naming_the_parameter():
    x = torch.randn(5)
    with pytest.raises(UserError, match="k"):
        sef_value(x, 6)
    with pytest.raises(UserError, match="k"):
        sef_prox(x, 0, 0.1)
    with pytest.raises(UserError, match="k"):
        sef_prox(x, -2, 0.1)
    with pytest.raises(UserError, match="gamma"):
        sef_prox(x, 2, -0.1)
    with pytest.raises(UserError, match="method"):
        sef_prox(x, 2, 0.1, method="bogus")
    with pytest.raises(UserError, match="k"):
        GroupEnvelope(0, "filter", 1.0)
    with pytest.raises(UserError, match="k"):
        GroupEnvelope(-0.5, "filter", 1.0)
    with pytest.raises(UserError, match="k=9"):
        GroupEnvelope(9, "filter", 1.0).prox_(torch.randn(8, 3), 0.1)
    with pytest.raises(UserError, match="grouping"):
        GroupEnvelope(2, "filter", 1.0).prox_(torch.randn(8), 0.1)
    with pytest.raises(UserError, match="grouping"):
        GroupEnvelope(2, "rows", 1.0)
    with pytest.raises(UserError, match="grouping"):
        GroupLasso("shape", 1.0).prox_(torch.randn(8), 0.1)
    with pytest.raises(UserError, match="weight"):
        GroupLasso("filter", -1.0)
    with pytest.raises(UserError, match="step"):
        L1(1.0).prox_(torch.randn(3), -1.0)
    with pytest.raises(UserError, match="gamma"):
        group_prox_scale(torch.rand(5), 2, 1.5, exact=True)


def test_top_k_ties_lowest_index():
    keep = top_k_groups(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5]), 2)
    assert keep.tolist() == [False, True, True, False, False]


@pytest.mark.parametrize("scale", [1e-24, 1e20])
def test_group_envelope_float32_extreme_magnitudes_match_float64(scale):
    w64 = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64).view(4, 1).repeat(1, 5) * scale
    outs = {}
    for dt in (torch.float32, torch.float64):
        w = w64.to(dt).clone()
        GroupEnvelope(2, "filter", 1.0, exact=True).prox_(w, 0.9)
        outs[dt] = int((w.abs().amax(dim=1) > 0).sum())
    assert outs[torch.float32] == outs[torch.float64] == 2


def test_tied_layers_get_one_operator_and_one_mask() -> None:
    """Two Linear modules sharing one weight tensor: regularized and masked once (else the prox runs twice a step)."""
    from torch import nn

    from sparseforge.compress import get_compressor
    from sparseforge.optim.proximal import build_prox_map

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    m = Tied()
    assert list(build_prox_map(m, "wgsef", weight=1e-3, k=0.5)) == ["a.weight", "c.weight"]
    assert list(get_compressor("wgsef_filter")(level=0.5).weights(m)) == ["a.weight", "c.weight"]


def test_wgsef_compressor_drives_each_layer_to_the_count_its_masks_keep() -> None:
    """k per layer is the integer count ``group_masks`` keeps (6 filters at 25% removed: 5, not a rounded 4.5)."""
    from sparseforge.compress import get_compressor
    from sparseforge.compress.base import group_masks
    from sparseforge.models import create_model

    model = create_model("lenet5")
    c = get_compressor("wgsef_filter")(level=0.25, lr=0.05)
    pm = c._prox_map(model)
    masks = group_masks(model, c.group_importance(model), 0.25, "filter")
    for name, op in pm.items():
        kept = int(masks[name].reshape(masks[name].shape[0], -1).any(1).sum())
        assert op.k == kept, name
    assert pm["features.0.weight"].k == 5
