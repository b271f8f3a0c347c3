"""Lorentz-model ops: manifold invariants for several curvatures, geoopt cross-check, gradcheck, bad input."""

from __future__ import annotations

import pytest
import torch

from sparseforge.errors import UserError
from sparseforge.hyperbolic import lorentz as L

KS = (0.3, 1.0, 2.5)
D64 = torch.float64


def tangent0(n: int, dim: int, *, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, dim + 1, generator=g, dtype=D64) * scale
    u[:, 0] = 0
    return u


def points(n: int, dim: int, k: float, *, scale: float = 0.5, seed: int = 0) -> torch.Tensor:
    return L.expmap0(tangent0(n, dim, scale=scale * k ** 0.5, seed=seed), k=k)  # moderate distances: exp/log are ill-conditioned far out



@pytest.mark.parametrize("k", KS)
def test_expmap0_logmap0_inverse_and_on_manifold(k: float) -> None:
    u = tangent0(64, 5, scale=0.7)
    x = L.expmap0(u, k=k)
    assert (L.inner(x, x) + k).abs().max() <= 1e-6  # the float64 bound
    assert ((L.inner(x, x) + k).abs() <= 1e-15 * (1 + x[:, 0] ** 2) * 10).all()  # rounding-level, relative
    assert (x[:, 0] > 0).all()
    torch.testing.assert_close(L.logmap0(x, k=k), u, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(L.expmap0(torch.zeros(1, 6, dtype=D64), k=k), L.origin(5, k=k, dtype=D64)[None])


@pytest.mark.parametrize("k", KS)
def test_expmap_logmap_at_a_point_are_inverse(k: float) -> None:
    x, y = points(32, 4, k, seed=1), points(32, 4, k, seed=2)
    u = L.logmap(x, y, k=k)
    assert L.inner(x, u).abs().max() <= 1e-9 * (1 + x.abs().max() ** 2)  # tangent at x
    torch.testing.assert_close(L.expmap(x, u, k=k), y, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(L.norm(u), L.dist(x, y, k=k), atol=1e-9, rtol=1e-9)  # |log_x y|_L = d(x, y)
    torch.testing.assert_close(L.logmap(x, x, k=k), torch.zeros_like(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", KS)
def test_dist_symmetric_zero_diagonal_matches_arcosh(k: float) -> None:
    x, y = points(50, 3, k, seed=3), points(50, 3, k, seed=4)
    d = L.dist(x, y, k=k)
    torch.testing.assert_close(d, L.dist(y, x, k=k), atol=0, rtol=1e-14)
    assert L.dist(x, x, k=k).abs().max() == 0
    ref = k ** 0.5 * torch.acosh(-L.inner(x, y) / k)
    torch.testing.assert_close(d, ref, atol=1e-9, rtol=1e-9)
    assert (L.sqdist(x, y, k=k) >= 0).all()
    torch.testing.assert_close(L.sqdist(x, y, k=k), -2 * k - 2 * L.inner(x, y), atol=1e-8, rtol=1e-10)
    z = points(50, 3, k, seed=5)  # triangle inequality
    assert (L.dist(x, z, k=k) <= d + L.dist(y, z, k=k) + 1e-9).all()


@pytest.mark.parametrize("k", KS)
def test_parallel_transport_preserves_inner_product_and_tangency(k: float) -> None:
    x, y = points(40, 4, k, seed=6), points(40, 4, k, seed=7)
    g = torch.Generator().manual_seed(8)
    u = L.proju(x, torch.randn(40, 5, generator=g, dtype=D64), k=k)
    v = L.proju(x, torch.randn(40, 5, generator=g, dtype=D64), k=k)
    pu, pv = L.transp(x, y, u, k=k), L.transp(x, y, v, k=k)
    scale = 1 + (x.abs().max() * y.abs().max()) ** 2
    assert (L.inner(pu, pv) - L.inner(u, v)).abs().max() <= 1e-9 * scale
    assert L.inner(pu, y).abs().max() <= 1e-9 * scale
    torch.testing.assert_close(L.transp(x, x, u, k=k), u, atol=1e-10, rtol=1e-10)
    # transporting log_x(y) gives -log_y(x)
    torch.testing.assert_close(L.transp(x, y, L.logmap(x, y, k=k), k=k), -L.logmap(y, x, k=k), atol=1e-7, rtol=1e-7)


def test_project_maps_onto_the_manifold_and_keeps_space_coordinates() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 6, generator=g, dtype=D64)
    for k in KS:
        p = L.project(a, k=k)
        assert (L.inner(p, p) + k).abs().max() <= 1e-10
        torch.testing.assert_close(p[:, 1:], a[:, 1:])
        torch.testing.assert_close(L.logmap0(a, k=k), L.logmap0(p, k=k))  # documented projection


def test_float32_is_safe_near_the_origin_and_at_the_diagonal() -> None:
    u = tangent0(16, 8, scale=1e-6).float()
    x = L.expmap0(u, k=1.0)
    assert torch.isfinite(x).all() and (L.inner(x, x) + 1).abs().max() < 1e-5
    torch.testing.assert_close(L.logmap0(x, k=1.0), u, atol=1e-10, rtol=1e-4)
    y = points(16, 8, 1.0).float()
    d = L.dist(y, y, k=1.0)
    assert torch.isfinite(d).all() and d.abs().max() == 0
    y.requires_grad_(True)
    z = points(16, 8, 1.0, seed=9).float()
    (L.dist(y, y.detach(), k=1.0).sum() + L.dist(y, z, k=1.0).sum() + L.logmap0(y, k=1.0).sum()).backward()
    assert torch.isfinite(y.grad).all()
    zero = torch.zeros(3, 5, requires_grad=True)
    L.expmap0(zero, k=1.0).sum().backward()
    assert torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("k", (0.7, 1.9))
def test_gradcheck_every_map(k: float) -> None:
    x, y = points(3, 3, k, seed=10).requires_grad_(True), points(3, 3, k, seed=11).requires_grad_(True)
    u0 = tangent0(3, 3, seed=12).requires_grad_(True)
    w = L.proju(x.detach(), torch.randn(3, 4, dtype=D64, generator=torch.Generator().manual_seed(13)), k=k)
    w.requires_grad_(True)
    kt = torch.tensor(k, dtype=D64, requires_grad=True)
    nc = {"check": False}  # finite differences step off the manifold
    checks = [
        (lambda a: L.expmap0(a, k=kt), (u0,)),
        (lambda a: L.logmap0(a, k=kt), (x,)),
        (lambda a, b: L.dist(a, b, k=kt, **nc), (x, y)),
        (lambda a, b: L.sqdist(a, b, k=kt, **nc), (x, y)),
        (lambda a, b: L.logmap(a, b, k=kt, **nc), (x, y)),
        (lambda a, b: L.expmap(a, b, k=kt, **nc), (x, w)),
        (lambda a, b, c: L.transp(a, b, c, k=kt, **nc), (x, y, w)),
        (lambda a: L.project(a, k=kt), (x,)),
        (lambda kk: L.dist(x.detach(), y.detach(), k=kk, **nc), (kt,)),  # learnable curvature
        (lambda kk: L.expmap0(u0.detach(), k=kk), (kt,)),
    ]
    for fn, args in checks:
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_keepdim_and_dim_options() -> None:
    x = points(6, 3, 1.0).reshape(2, 3, 4)
    xt = x.transpose(-1, -2)  # coordinates along dim=-2
    torch.testing.assert_close(L.inner(xt, xt, dim=-2), L.inner(x, x))
    assert L.inner(x, x, keepdim=True).shape == (2, 3, 1)
    assert L.dist(x, x, k=1.0, keepdim=True).shape == (2, 3, 1)
    torch.testing.assert_close(L.expmap0(L.logmap0(xt, k=1.0, dim=-2), k=1.0, dim=-2), xt)


def test_bad_curvature_and_off_manifold_points_are_one_line_errors() -> None:
    x = points(4, 3, 1.0)
    for bad in (0.0, -1.0, float("nan"), torch.tensor(-0.5, dtype=D64)):
        with pytest.raises(UserError) as e:
            L.expmap0(x, k=bad)
        assert "k" in str(e.value) and "\n" not in str(e.value)
    off = x.clone()
    off[0, 0] += 1.0
    for fn in (lambda: L.dist(off, x, k=1.0), lambda: L.logmap(x, off, k=1.0),
               lambda: L.transp(off, x, x, k=1.0), lambda: L.expmap(off, x, k=1.0)):
        with pytest.raises(UserError) as e:
            fn()
        assert "hyperboloid" in str(e.value) and "project" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError):
        L.check_point(-x, k=1.0)  # lower sheet
    with pytest.raises(UserError):
        L.inner(torch.ones(3, 1), torch.ones(3, 1))  # no space coordinate


# ------------------------------------------------------------------------------ geoopt cross-check


@pytest.mark.parametrize("k", KS)
def test_equal_to_geoopt(k: float) -> None:
    gm = pytest.importorskip("geoopt.manifolds.lorentz.math")
    kt = torch.tensor(k, dtype=D64)
    u, v = tangent0(30, 4, seed=20), tangent0(30, 4, seed=21)
    x, y = L.expmap0(u, k=k), L.expmap0(v, k=k)
    close = {"atol": 1e-9, "rtol": 1e-9}
    torch.testing.assert_close(x, gm.expmap0(u, k=kt), **close)
    torch.testing.assert_close(L.logmap0(x, k=k), gm.logmap0(x, k=kt), **close)
    torch.testing.assert_close(L.inner(x, y), gm.inner(x, y), **close)
    torch.testing.assert_close(L.dist(x, y, k=k), gm.dist(x, y, k=kt), **close)
    torch.testing.assert_close(L.logmap(x, y, k=k), gm.logmap(x, y, k=kt), atol=1e-7, rtol=1e-7)
    w = L.proju(x, torch.randn(30, 5, dtype=D64, generator=torch.Generator().manual_seed(22)), k=k)
    torch.testing.assert_close(L.proju(x, w, k=k), gm.project_u(x, w, k=kt), **close)
    torch.testing.assert_close(L.expmap(x, 0.3 * w, k=k), gm.expmap(x, 0.3 * w, k=kt), atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(L.transp(x, y, w, k=k), gm.parallel_transport(x, y, w, k=kt), atol=1e-7, rtol=1e-7)
    a = torch.randn(30, 5, dtype=D64, generator=torch.Generator().manual_seed(23))
    torch.testing.assert_close(L.project(a, k=k), gm.project(a, k=kt), **close)
