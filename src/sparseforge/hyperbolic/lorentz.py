"""The Lorentz (hyperboloid) model of hyperbolic space, in pure torch.

Used by HyboNet (Chen et al., "Fully Hyperbolic Neural Networks", ACL 2022, arXiv:2105.14686) and by
Sparse Spectral Training on hyperbolic networks (Zhao et al., "Sparse Spectral Training and
Inference on Euclidean and Hyperbolic Neural Networks", arXiv:2405.15481).

Conventions are geoopt's (``geoopt.manifolds.lorentz.math``), exactly:

* ambient R^{n+1}, time coordinate first; Minkowski product <x, y>_L = -x_0 y_0 + sum_{i>=1} x_i y_i;
* hyperboloid H^n_k = {x : <x, x>_L = -k, x_0 > 0} with k > 0 (sectional curvature -1/k);
  origin o = (sqrt(k), 0, ..., 0);
* tangent vectors are ambient too: u in T_x H iff <x, u>_L = 0 (at the origin: u_0 = 0);
* every function takes ``k`` and ``dim`` as keywords (``k`` a float or a tensor, possibly a
  learnable parameter); reductions take ``keepdim=False``.

Equations (K = k):

* project(x)      = (sqrt(K + ||x_{1:}||^2), x_{1:})
* expmap0(u)      = (sqrt(K) cosh(|u|/sqrt(K)), sqrt(K) sinh(|u|/sqrt(K)) u_{1:}/|u|),  |u| = ||u_{1:}||
* logmap0(x)      = sqrt(K) arsinh(||x_{1:}||/sqrt(K)) (0, x_{1:}/||x_{1:}||)
* expmap_x(u)     = cosh(|u|_L/sqrt(K)) x + sqrt(K) sinh(|u|_L/sqrt(K)) u/|u|_L
* logmap_x(y)     = d(x, y) w/|w|_L,  w = y + (<x, y>_L/K) x,   |w|_L = sqrt(K) sinh(d/sqrt(K))
* dist(x, y)      = sqrt(K) arcosh(-<x, y>_L/K) = 2 sqrt(K) arsinh(|x - y|_L / (2 sqrt(K)))
* sqdist(x, y)    = -2K - 2<x, y>_L   (HyboNet's squared Lorentzian distance, = |x - y|_L^2)
* transp_{x->y}(v) = v + <y, v>_L/(K - <x, y>_L) (x + y)

Numerics: the closed forms are evaluated in their cancellation-free variants (arsinh of the space
norm instead of arcosh of the time coordinate near the origin; the distance from the Minkowski norm
of x - y instead of arcosh(1 + tiny) near the diagonal), so float64 results are accurate to ~1e-15
and float32 stays finite. ``sinh(t)/t``-type ratios are computed with a guarded small-argument
branch, so every map is differentiable at u = 0 and at x = y.

Points off the manifold: :func:`project` maps any ambient vector onto it. :func:`logmap0` uses
only the space coordinates (documented projection: the result is that of ``project(x)``).
:func:`expmap` projects ``u`` onto the tangent space at ``x``. :func:`logmap`, :func:`dist`,
:func:`sqdist` and :func:`transp` need points on the hyperboloid and check them by default
(``check=True``): an off-manifold point is a one-line :class:`~sparseforge.errors.UserError`.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError

Curvature = float | torch.Tensor

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _k(k: Curvature, like: torch.Tensor) -> torch.Tensor:
    """``k`` as a tensor of ``like``'s dtype/device (differentiable); one-line error unless k > 0."""
    if isinstance(k, torch.Tensor):
        kt = k.to(dtype=like.dtype, device=like.device)
        if bool((kt.detach() <= 0).any()) or not bool(torch.isfinite(kt.detach()).all()):
            raise UserError(f"curvature parameter k must be > 0 (the hyperboloid <x, x>_L = -k), got {kt.detach().cpu().tolist()}")
        return kt
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k > 0) or not math.isfinite(k):
        raise UserError(f"curvature parameter k must be a number > 0 (the hyperboloid <x, x>_L = -k), got {k!r}")
    return torch.tensor(float(k), dtype=like.dtype, device=like.device)


def _time_space(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.size(dim)
    if n < 2:
        raise UserError(f"Lorentz vectors need >= 2 coordinates (time + space) along dim {dim}, got {n}")
    return x.narrow(dim, 0, 1), x.narrow(dim, 1, n - 1)


def _tiny(t: torch.Tensor) -> float:
    return float(torch.finfo(t.dtype).tiny) ** 0.5 if t.is_floating_point() else 1e-19


def _safe_sqrt(q: torch.Tensor) -> torch.Tensor:
    """sqrt(max(q, tiny)): finite value and gradient at 0."""
    return torch.sqrt(q.clamp_min(_tiny(q) ** 2 * 1e6))


def _sinhc(t: torch.Tensor) -> torch.Tensor:
    """sinh(t)/t, exact limit 1 at t = 0 (series below 1e-3, closed form above)."""
    small = t.abs() < 1e-3
    ts = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1 + t * t / 6, torch.sinh(ts) / ts)


def _arsinhc(t: torch.Tensor) -> torch.Tensor:
    """arsinh(t)/t, exact limit 1 at t = 0."""
    small = t.abs() < 1e-3
    ts = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1 - t * t / 6, torch.asinh(ts) / ts)


def arcosh(x: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """arcosh(max(x, 1 + eps)) computed as log(x + sqrt((x - 1)(x + 1))) (finite gradient at 1)."""
    x = x.clamp_min(1.0 + eps)
    return torch.log(x + torch.sqrt((x - 1) * (x + 1)))


def inner(x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False, dim: int = -1) -> torch.Tensor:
    """Minkowski product <x, y>_L = -x_0 y_0 + sum_{i>=1} x_i y_i along ``dim``."""
    xy = x * y
    t, s = _time_space(xy, dim)
    return (s.sum(dim=dim, keepdim=True) - t).squeeze(dim) if not keepdim else s.sum(dim=dim, keepdim=True) - t


def norm(u: torch.Tensor, *, keepdim: bool = False, dim: int = -1) -> torch.Tensor:
    """|u|_L = sqrt(max(<u, u>_L, 0)) of a tangent (space-like) vector."""
    return _safe_sqrt(inner(u, u, keepdim=keepdim, dim=dim))


def origin(n: int, *, k: Curvature = 1.0, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The origin (sqrt(k), 0, ..., 0) of H^n_k, shape (n + 1,)."""
    o = torch.zeros(n + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    o[0] = _k(k, o).sqrt()
    return o


def manifold_error(x: torch.Tensor, *, k: Curvature, dim: int = -1) -> torch.Tensor:
    """|<x, x>_L + k| per point (how far a point is off the hyperboloid)."""
    return (inner(x, x, dim=dim) + _k(k, x)).abs()


def check_point(x: torch.Tensor, *, k: Curvature, dim: int = -1, name: str = "x", tol: float | None = None) -> None:
    """Raise a one-line :class:`UserError` unless every point of ``x`` lies on H_k (upper sheet).

    The tolerance is relative to the size of the point: |<x, x>_L + k| <= tol (k + ||x||^2), with
    ``tol`` 1e-6 in float64 and 1e-3 in lower precision by default.
    """
    with torch.no_grad():
        kt = _k(k, x)
        if tol is None:
            tol = 1e-6 if x.dtype == torch.float64 else 1e-3
        err = manifold_error(x, k=kt, dim=dim)
        scale = kt + (x * x).sum(dim=dim)
        bad = err > tol * scale
        t = x.narrow(dim, 0, 1).squeeze(dim)
        if bool(bad.any()) or bool((t <= 0).any()) or not bool(torch.isfinite(x).all()):
            worst = float(err.max()) if err.numel() else float("nan")
            raise UserError(
                f"{name} is not on the hyperboloid <x, x>_L = -k with x_0 > 0 (k={float(kt.max()):g}; worst "
                f"|<x, x>_L + k| = {worst:.3g}); map ambient vectors with project(x, k=k) or expmap0(u, k=k) first"
            )


# --------------------------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------------------------


def project(x: torch.Tensor, *, k: Curvature, dim: int = -1) -> torch.Tensor:
    """Project an ambient vector onto H_k: x_0 <- sqrt(k + ||x_{1:}||^2) (space coordinates kept)."""
    kt = _k(k, x)
    _, s = _time_space(x, dim)
    t = torch.sqrt(kt + (s * s).sum(dim=dim, keepdim=True))
    return torch.cat([t, s], dim=dim)


def expmap0(u: torch.Tensor, *, k: Curvature, dim: int = -1) -> torch.Tensor:
    """Exponential map at the origin of a tangent vector u = (0, v) (u_0 is ignored: T_o H has u_0 = 0)."""
    kt = _k(k, u)
    sk = kt.sqrt()
    _, v = _time_space(u, dim)
    n = _safe_sqrt((v * v).sum(dim=dim, keepdim=True))  # |u|_L = ||v||
    a = n / sk
    t = sk * torch.cosh(a)
    return torch.cat([t, _sinhc(a) * v], dim=dim)  # sqrt(k) sinh(a) v / n = sinhc(a) v


def logmap0(x: torch.Tensor, *, k: Curvature, dim: int = -1) -> torch.Tensor:
    """Logarithmic map at the origin: the tangent vector (0, v) with expmap0((0, v)) = x.

    Uses only x's space coordinates (x_0 is implied on the manifold; off it, this is the log of
    ``project(x)``): v = sqrt(k) arsinh(||x_{1:}||/sqrt(k)) x_{1:}/||x_{1:}||.
    """
    kt = _k(k, x)
    sk = kt.sqrt()
    t, s = _time_space(x, dim)
    a = _safe_sqrt((s * s).sum(dim=dim, keepdim=True)) / sk
    return torch.cat([torch.zeros_like(t), _arsinhc(a) * s], dim=dim)


def proju(x: torch.Tensor, u: torch.Tensor, *, k: Curvature, dim: int = -1) -> torch.Tensor:
    """Project an ambient vector onto the tangent space at x: u + (<x, u>_L / k) x."""
    kt = _k(k, x)
    return u + inner(x, u, keepdim=True, dim=dim) / kt * x


def expmap(x: torch.Tensor, u: torch.Tensor, *, k: Curvature, dim: int = -1, check: bool = True) -> torch.Tensor:
    """Exponential map at x: cosh(|u|_L/sqrt k) x + sqrt(k) sinh(|u|_L/sqrt k) u/|u|_L.

    ``u`` is first projected onto T_x H (a no-op for tangent vectors).
    """
    kt = _k(k, x)
    if check:
        check_point(x, k=kt, dim=dim)
    u = proju(x, u, k=kt, dim=dim)
    sk = kt.sqrt()
    a = norm(u, keepdim=True, dim=dim) / sk
    return torch.cosh(a) * x + _sinhc(a) * u


def sqdist(x: torch.Tensor, y: torch.Tensor, *, k: Curvature, keepdim: bool = False, dim: int = -1,
           check: bool = True) -> torch.Tensor:
    """HyboNet's squared Lorentzian distance -2k - 2<x, y>_L (= <x - y, x - y>_L >= 0 on H_k)."""
    kt = _k(k, x)
    if check:
        check_point(x, k=kt, dim=dim)
        check_point(y, k=kt, dim=dim, name="y")
    d = x - y
    return inner(d, d, keepdim=keepdim, dim=dim).clamp_min(0)


def dist(x: torch.Tensor, y: torch.Tensor, *, k: Curvature, keepdim: bool = False, dim: int = -1,
         check: bool = True) -> torch.Tensor:
    """Geodesic distance sqrt(k) arcosh(-<x, y>_L / k) (geoopt's ``dist``), symmetric, 0 on the diagonal.

    Evaluated as 2 sqrt(k) arsinh(|x - y|_L / (2 sqrt(k))), the same value without the loss of
    half the digits of arcosh near 1.
    """
    kt = _k(k, x)
    q = sqdist(x, y, k=kt, keepdim=keepdim, dim=dim, check=check)
    sk = kt.sqrt()
    return 2 * sk * torch.asinh(_safe_sqrt(q) / (2 * sk)) * (q > 0)


def logmap(x: torch.Tensor, y: torch.Tensor, *, k: Curvature, dim: int = -1, check: bool = True) -> torch.Tensor:
    """Logarithmic map at x: the tangent vector u at x with expmap(x, u) = y (geoopt's ``logmap``)."""
    kt = _k(k, x)
    if check:
        check_point(x, k=kt, dim=dim)
        check_point(y, k=kt, dim=dim, name="y")
    sk = kt.sqrt()
    diff = y - x
    q = inner(diff, diff, keepdim=True, dim=dim).clamp_min(0)  # = -2k - 2<x, y>_L
    w = diff - (q / (2 * kt)) * x  # = y + (<x, y>_L / k) x, without cancellation
    d = 2 * sk * torch.asinh(_safe_sqrt(q) / (2 * sk))
    # u = d w / |w|_L with |w|_L = sqrt(k) sinh(d / sqrt(k)):  u = w / sinhc(d / sqrt(k))
    return w / _sinhc(d / sk)


def transp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, k: Curvature, dim: int = -1,
           check: bool = True) -> torch.Tensor:
    """Parallel transport of v in T_x H to T_y H: v + <y, v>_L / (k - <x, y>_L) (x + y)."""
    kt = _k(k, x)
    if check:
        check_point(x, k=kt, dim=dim)
        check_point(y, k=kt, dim=dim, name="y")
    coef = inner(y, v, keepdim=True, dim=dim) / (kt - inner(x, y, keepdim=True, dim=dim))
    return v + coef * (x + y)


def normalize(s: torch.Tensor, *, k: Curvature, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """sqrt(k) s / sqrt(|<s, s>_L|): a time-like vector rescaled onto H_k (HyboNet's centroid step)."""
    kt = _k(k, s)
    den = inner(s, s, keepdim=True, dim=dim).abs().clamp_min(eps).sqrt()
    return kt.sqrt() * s / den


def midpoint(x: torch.Tensor, weights: torch.Tensor | None = None, *, k: Curvature, dim: int = -2) -> torch.Tensor:
    """Lorentzian centroid of points ``x`` (stacked along ``dim``, coordinates last), optionally weighted.

    mu = sqrt(k) S / sqrt(|<S, S>_L|),  S = sum_j w_j x_j. ``weights`` broadcasts against ``x``
    without its coordinate axis (non-negative weights keep S time-like).
    """
    w = x if weights is None else x * weights.unsqueeze(-1)
    return normalize(w.sum(dim=dim), k=k)


__all__ = [
    "arcosh",
    "check_point",
    "dist",
    "expmap",
    "expmap0",
    "inner",
    "logmap",
    "logmap0",
    "manifold_error",
    "midpoint",
    "norm",
    "normalize",
    "origin",
    "project",
    "proju",
    "sqdist",
    "transp",
]
