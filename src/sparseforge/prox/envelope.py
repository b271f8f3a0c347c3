"""Sparse Envelope Function (SEF) and its weighted group lift (WGSEF): values and exact prox.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921 (v1 title: "... Generalized Group Sparse
Envelope Regularization"). The SEF itself is from Beck & Refael, "Sparse regularization via
bidualization" (J. Global Optim., 2022).

Equations implemented (labels used in the docstrings below):

* (SEF)  s_k(y) = (½‖·‖² + ι_{C_k})**(y) = ½ · min{ Σ_j y_j²/t_j : t ∈ [0,1]^m, Σ_j t_j = k }
        (0²/0 = 0), for y ≥ 0 and 1 ≤ k ≤ m.
* (WGSEF) WGSEF_k(θ) = s_k(w ⊙ z(θ)), z_j(θ) = ‖θ_{g_j}‖₂   (multipliers w: reconstructed default)
* (K)    the scalar kernel: find α > 0 with F(α) = Σ_j clip(α β_j − δ_j, 0, 1) = k, then
        t_j = clip(α β_j − δ_j, 0, 1).  ``method="sort"``: sorted sweep over the 2m breakpoints
        e_j = δ_j/β_j, f_j = (1+δ_j)/β_j (O(m log m)).  ``method="select"``: linear time, no full sort:
        a fixed-seed sample of ≈ m^(2/3) coordinates brackets α (one classification pass over
        all m), recursing on the few undecided coordinates; finished (and backed up, so the worst
        case stays O(m)) by the median bracketing of the continuous quadratic knapsack.
        Note: the sort sweep's cumulative sums lose digits for k close to #(β > 0) at large m
        and for dynamic ranges beyond ~1e30; select evaluates F by direct sums and does not.
* (P-env) envelope prox of γ·WGSEF_k: β_j = a_j w_j, δ_j = γ w_j², p_g = v_g · t_j/(t_j + γ w_j²)
        (p = v/(1+γw²) when at most k groups are non-zero).
* (P-exact) exact prox of γ·(WGSEF_k − ½‖w⊙z‖²) (zero iff ≤ k non-zero groups), γ w_j² < 1:
        c_j = 1 − γ w_j², β_j = a_j w_j / c_j, δ_j = γ w_j²/c_j, p_g = v_g · t_j/(c_j t_j + γ w_j²)
        (p = v when at most k groups are non-zero).

All arithmetic of the kernel runs in float64 regardless of the input dtype.
Everything here is a pure tensor-in, tensor-out function; the classes in
:mod:`sparseforge.prox.group_lasso` / :mod:`sparseforge.prox.l1` / :class:`GroupEnvelope`
hold hyperparameters and lift these to weight tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import UserError
from .base import ProxOperator, check_coupled, lifted_norms, lifted_sq_norms, scale_groups_

Method = Literal["select", "sort"]
METHODS_KERNEL = ("select", "sort")


# ----------------------------------------------------------------------------- validation
def _check_k(k: int, m: int, *, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            if float(k) != int(k):
                raise TypeError
            k = int(k)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a positive integer count, got {k!r}") from None
    if k <= 0:
        raise UserError(f"{name} must be >= 1 (number of groups kept), got {k}")
    if k > m:
        raise UserError(f"{name}={k} is larger than the number of groups ({m}); use {name} <= {m}")
    return int(k)


def _check_gamma(gamma: float) -> float:
    g = float(gamma)
    if not g >= 0.0 or g != g or g == float("inf"):
        raise UserError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return g


def _check_method(method: str) -> None:
    if method not in METHODS_KERNEL:
        raise UserError(f"method must be one of {METHODS_KERNEL}, got {method!r}")


def _check_1d(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise UserError(f"{name} must be a 1-D tensor, got {getattr(x, 'shape', type(x))}")


# ----------------------------------------------------------------------------- (K) kernel
def _alpha_sort(beta: torch.Tensor, delta: torch.Tensor, k: float) -> torch.Tensor:
    """Sorted sweep over all 2m breakpoints; ``beta > 0`` everywhere here. Returns α (0-d)."""
    e = delta / beta  # (m,) where coordinate j leaves 0
    f = (1.0 + delta) / beta  # (m,) where it reaches 1
    pts = torch.cat([e, f])  # (2m,)
    # Event deltas: entering the middle adds (β, δ); leaving it removes them and adds 1 to H.
    dB = torch.cat([beta, -beta])
    dD = torch.cat([delta, -delta])
    dH = torch.cat([torch.zeros_like(beta), torch.ones_like(beta)])
    order = torch.argsort(pts)
    pts = pts[order]
    B = torch.cumsum(dB[order], 0)
    D = torch.cumsum(dD[order], 0)
    H = torch.cumsum(dH[order], 0)
    # F is continuous, so F at breakpoint i may use the state after any prefix of tied events.
    Fv = pts * B - D + H  # (2m,) F at each breakpoint
    i = int(torch.argmax((Fv >= k).to(torch.int8)))  # first breakpoint where F >= k (exists: F(max) = m > k)
    if i == 0:
        return pts[0]
    lo, hi, Flo, Fhi = pts[i - 1], pts[i], Fv[i - 1], Fv[i]
    # Linear on [lo, hi] with slope B[i-1]; α = (k − H + D)/B there.
    Bi = B[i - 1]
    if Bi > 0 and Fhi > Flo:
        a = (k - H[i - 1] + D[i - 1]) / Bi
        return a.clamp(lo, hi)
    return hi  # flat piece: every α on it gives the same t


def _median(x: torch.Tensor) -> torch.Tensor:
    # torch.kthvalue is a linear-time (introselect-style) selection on CPU.
    return torch.kthvalue(x, (x.numel() + 1) // 2).values


_INF = float("inf")
_SMALL = 8192  # undecided sets this small are finished by the median rounds
_SAMPLE_C = 3.0  # bracket half-width in sample standard deviations (Hoeffding: miss prob <= 2e^-18)
_SAMPLE_SEED = 0x5EF


def _vec(d: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return d.expand_as(like) if d.dim() == 0 else d


def _sub(delta: torch.Tensor, beta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return delta if delta.dim() == 0 else delta[idx]


def _F(a: float, beta: torch.Tensor, delta: torch.Tensor, H: float, B: float, D: float) -> float:
    """F(α) = H + αB − D + Σ_j clip(α β_j − δ_j, 0, 1) over the coordinates still in play."""
    s = float(torch.add(-delta, beta, alpha=a).clamp_(0.0, 1.0).sum()) if beta.numel() else 0.0
    return H + a * B - D + s


def _alpha_median(
    beta: torch.Tensor, delta: torch.Tensor, k: float, lo: float, hi: float, H: float, B: float, D: float
) -> float:
    """Median bracketing of α (the linear-time "selection variant" of the continuous quadratic knapsack), from a given state.

    Each round selects the median of the breakpoints strictly inside the current bracket
    (α_lo, α_hi), evaluates F there, halves the bracket's breakpoint count, and retires every
    coordinate whose state (zero / middle / saturated) is fixed on the whole bracket into the
    accumulators H, B, D. O(log m) rounds of vectorised ops, geometric total work O(m).
    Used as the worst-case-linear fallback of :func:`_alpha_select`.
    """
    dt = beta.dtype
    pos = beta > 0
    bJ = beta[pos]
    dJ = _vec(delta, beta)[pos]
    eJ = dJ / bJ
    fJ = (1.0 + dJ) / bJ
    lo_t, hi_t = torch.tensor(lo, dtype=dt), torch.tensor(hi, dtype=dt)
    Ht, Bt, Dt = (torch.tensor(v, dtype=dt) for v in (H, B, D))
    while bJ.numel() > 0:
        pts = torch.cat([eJ, fJ])
        inside = pts[(pts > lo_t) & (pts < hi_t)]
        if inside.numel() == 0:
            break
        piv = _median(inside)
        Fp = Ht + piv * Bt - Dt + torch.clamp(piv * bJ - dJ, 0.0, 1.0).sum()
        if Fp < k:
            lo_t = piv
        else:
            hi_t = piv
        sat = fJ <= lo_t
        zero = eJ >= hi_t
        mid = (eJ <= lo_t) & (fJ >= hi_t)
        Ht = Ht + sat.sum()
        Bt = Bt + bJ[mid].sum()
        Dt = Dt + dJ[mid].sum()
        keep = ~(sat | zero | mid)
        bJ, dJ, eJ, fJ = bJ[keep], dJ[keep], eJ[keep], fJ[keep]
    lo, hi = float(lo_t), float(hi_t)
    H, B, D = float(Ht), float(Bt), float(Dt)
    # Left-overs (only possible through rounding) are classified at the bracket's midpoint.
    if bJ.numel() > 0:
        amid = lo + 1.0 if hi == _INF else 0.5 * (lo + hi)
        sat = fJ <= amid
        mid = (~sat) & (eJ < amid)
        H += float(sat.sum())
        B += float(bJ[mid].sum())
        D += float(dJ[mid].sum())
    if B > 0:
        a = (k - H + D) / B
        return min(max(a, lo), hi)
    return lo if hi == _INF else hi  # flat piece: F = k on the whole bracket


def _classify(
    beta: torch.Tensor, delta: torch.Tensor, lo: float, hi: float, buf: torch.Tensor | None = None
) -> tuple[float, float, float, torch.Tensor]:
    """State of every coordinate on the whole bracket [lo, hi] (0 <= lo < hi <= ∞).

    Returns (#saturated, Σβ over middle, Σδ over middle, indices of the undecided coordinates,
    i.e. those with a breakpoint strictly inside the bracket). Coordinates with β = 0 are zero.
    One pass of comparisons; with a scalar δ (unit group weights) they are thresholds on β alone.
    """
    if delta.dim() == 0:
        d = float(delta)
        # saturated: f = (1+δ)/β <= lo;  zero: e = δ/β >= hi;  middle: e <= lo and f >= hi
        sat = beta >= ((1.0 + d) / lo if lo > 0 else _INF)
        zero = beta <= (d / hi if hi < _INF else 0.0)
        t_mlo = d / lo if lo > 0 else (0.0 if d == 0.0 else _INF)
        t_mhi = (1.0 + d) / hi if hi < _INF else -1.0
        mid = (beta >= t_mlo) & (beta <= t_mhi)
        n_mid = int(mid.count_nonzero())
        B = float(torch.mul(beta, mid, out=buf).sum()) if n_mid else 0.0
        D = d * n_mid
    else:
        nlo = torch.add(delta, beta, alpha=-lo)  # δ − lo β
        sat = nlo <= -1.0
        if hi < _INF:
            nhi = torch.add(delta, beta, alpha=-hi)
            zero = nhi >= 0.0
            mid = (nlo <= 0.0) & (nhi >= -1.0)
        else:
            zero = beta <= 0.0
            mid = torch.zeros_like(sat)
        midf = torch.mul(beta.new_ones(()), mid, out=buf)
        B = float(torch.dot(beta, midf))
        D = float(torch.dot(delta, midf))
    H = float(sat.count_nonzero())
    und = ~(sat | zero | mid)
    return H, B, D, und.nonzero().squeeze(1)


def _alpha_select(
    beta: torch.Tensor,
    delta: torch.Tensor,
    k: float,
    lo: float = 0.0,
    hi: float = _INF,
    H: float = 0.0,
    B: float = 0.0,
    D: float = 0.0,
    depth: int = 0,
    buf: torch.Tensor | None = None,
) -> float:
    """Linear-time root of F(α) = H + αB − D + Σ_j clip(α β_j − δ_j, 0, 1) = k in [lo, hi].

    Precondition: F(lo) <= k <= F(hi). Sample-based bracketing (Floyd–Rivest style):
    1. draw a fixed-seed sample of s ≈ m^(2/3) coordinates and run the exact sweep on it, which
       gives the sample's F_S at every sample breakpoint; (m/s)·F_S(α) estimates the unknown part
       of F(α) with standard deviation <= m/(2√s);
    2. bracket the root between the sample breakpoints where the estimate is k ∓ 3 m/√s;
    3. one pass over all coordinates retires those decided on that bracket into H, B, D
       (:func:`_classify`) and checks the bracket on the ≈ m/√s undecided ones;
    4. recurse on the undecided set, finished by the median rounds once it is small.
    Expected O(m) with a small constant number of passes. If the bracket misses the root
    (probability < 1e-7) or shrinks too little (adversarial ties), fall back to the median
    rounds of :func:`_alpha_median`, so the worst case stays linear.
    """
    m = beta.numel()
    if m <= _SMALL or depth >= 4:
        return _alpha_median(beta, delta, k, lo, hi, H, B, D)
    s = min(m, max(1024, int(m ** (2.0 / 3.0))))
    gen = torch.Generator().manual_seed(_SAMPLE_SEED + depth)
    idx = torch.randint(m, (s,), generator=gen)
    bS = beta[idx]
    dS = _vec(_sub(delta, beta, idx), bS)
    with torch.no_grad():
        pts = torch.cat([dS / bS, (1.0 + dS) / bS]).nan_to_num_(nan=_INF)  # β = 0: never enters
        live = (bS > 0).to(bS.dtype)
        order = torch.argsort(pts)
        pts = pts[order]
        Bc = torch.cumsum(torch.cat([bS, -bS])[order], 0)
        Dc = torch.cumsum(torch.cat([dS * live, -dS * live])[order], 0)
        Hc = torch.cumsum(torch.cat([torch.zeros_like(bS), live])[order], 0)
        fin = torch.isfinite(pts) & (pts > lo) & (pts < hi)
        pts_f = pts[fin]
        scale = m / s
        # estimate of F at each sample breakpoint inside the bracket
        Fest = H + pts_f * B - D + scale * (pts_f * Bc[fin] - Dc[fin] + Hc[fin])
    margin = _SAMPLE_C * m / s**0.5
    below = (Fest <= k - margin).nonzero()
    above = (Fest >= k + margin).nonzero()
    lo2 = float(pts_f[int(below[-1])]) if below.numel() else lo
    hi2 = float(pts_f[int(above[0])]) if above.numel() else hi
    if not lo2 < hi2:
        return _alpha_median(beta, delta, k, lo, hi, H, B, D)
    h, b, d, und = _classify(beta, delta, lo2, hi2, buf if buf is not None and buf.numel() == m else None)
    bJ, dJ = beta[und], _sub(delta, beta, und)
    H2, B2, D2 = H + h, B + b, D + d
    if _F(lo2, bJ, dJ, H2, B2, D2) > k or (hi2 < _INF and _F(hi2, bJ, dJ, H2, B2, D2) < k):
        return _alpha_median(beta, delta, k, lo, hi, H, B, D)  # the sample missed (rare)
    if bJ.numel() > m // 2:  # no real progress (e.g. massive ties): median rounds on what is left
        return _alpha_median(bJ, dJ, k, lo2, hi2, H2, B2, D2)
    return _alpha_select(bJ, dJ, k, lo2, hi2, H2, B2, D2, depth + 1)


def _solve(beta: torch.Tensor, delta: torch.Tensor, k: float, method: str) -> torch.Tensor:
    """t of the (K) kernel; float64 ``beta`` (m,) >= 0, ``delta`` 0-d or (m,) >= 0, k < #(β > 0)."""
    if method == "sort":
        pos = beta > 0
        bp, dp = beta[pos], _vec(delta, beta)[pos]
        alpha = _alpha_sort(bp, dp, float(k))
        t = torch.zeros_like(beta)
        t[pos] = torch.clamp(alpha * bp - dp, 0.0, 1.0)
        return t
    t = torch.empty_like(beta)  # scratch of the first classification pass, then the result
    alpha = _alpha_select(beta, delta, float(k), buf=t)
    # t = clip(α β − δ, 0, 1); β = 0 gives −δ <= 0 -> 0
    return torch.add(-delta, beta, alpha=alpha, out=t).clamp_(0.0, 1.0)


def solve_clip_sum(
    beta: torch.Tensor, delta: torch.Tensor, k: float, *, method: Method = "select"
) -> torch.Tensor:
    """Solve Σ_j clip(α β_j − δ_j, 0, 1) = k for α and return t = clip(α β − δ, 0, 1) (K).

    Args:
        beta: (m,) non-negative slopes; coordinates with β_j = 0 get t_j = 0.
        delta: (m,) non-negative offsets (or one number for all coordinates).
        k: target sum, 0 < k < #{j : β_j > 0}.
        method: ``"select"`` (sample bracketing + median fallback, linear time) or ``"sort"``
            (sorted sweep).

    Returns:
        (m,) float64 tensor t with entries in [0, 1] and Σ t = k.
    """
    _check_method(method)
    _check_1d(beta, "beta")
    beta = beta.detach().to(torch.float64)
    delta = torch.as_tensor(delta).detach().to(torch.float64)
    delta = delta.reshape(()) if delta.numel() == 1 else delta.expand_as(beta)
    if bool((beta < 0).any()) or bool((delta < 0).any()):
        raise UserError("beta and delta must be non-negative")
    npos = int((beta > 0).count_nonzero())
    if not 0 < k < npos:
        raise UserError(f"k must satisfy 0 < k < #(beta > 0) = {npos}, got {k}")
    return _solve(beta, delta, k, method)


# ----------------------------------------------------------------------------- (SEF) value
def sef_value(x: torch.Tensor, k: int, *, method: Method = "select") -> torch.Tensor:
    """The sparse envelope function s_k(|x|) of a 1-D tensor (SEF).

    Uses the variational form with the optimal t = min(1, α|x|) (the (K) kernel with β = |x|,
    δ = 0): s_k = ½ [Σ_{saturated} y_j² + (Σ_{middle} y_j)² / (k − #saturated)].
    Differentiable in ``x`` (the active sets are held fixed, which gives a valid gradient).

    Returns:
        0-d tensor in ``x``'s floating dtype.
    """
    _check_1d(x)
    k = _check_k(k, x.numel())
    y = x.abs()
    nnz = int((y > 0).sum())
    if nnz <= k:
        return 0.5 * (y * y).sum()
    t = solve_clip_sum(y, torch.zeros_like(y, dtype=torch.float64), k, method=method)
    sat = t >= 1.0
    mid = (t > 0) & ~sat
    n_sat = int(sat.sum())
    head = (y[sat] ** 2).sum()
    tail = y[mid].sum()
    return 0.5 * (head + tail * tail / (k - n_sat))


def wgsef_value(norms: torch.Tensor, k: int, *, weights: torch.Tensor | None = None, exact: bool = False) -> torch.Tensor:
    """WGSEF_k = s_k(w ⊙ z) from group norms z (WGSEF); ``exact`` subtracts ½‖w ⊙ z‖²."""
    y = norms if weights is None else norms * weights
    v = sef_value(y, k)
    if exact:
        v = (v - 0.5 * (y * y).sum()).clamp_min(0.0)
    return v


# ----------------------------------------------------------------------------- (P-env) / (P-exact) group prox
def group_prox_scale(
    norms: torch.Tensor,
    k: int,
    gamma: float,
    *,
    weights: torch.Tensor | None = None,
    exact: bool = False,
    method: Method = "select",
) -> torch.Tensor:
    """Per-group multipliers s ∈ [0, 1] of the WGSEF prox: p_{g_j} = s_j · v_{g_j} (P-env, P-exact).

    Args:
        norms: (m,) group norms a_j = ‖v_{g_j}‖ of the point v (after the gradient step).
        k: number of groups to keep, 1 <= k <= m.
        gamma: step × λ, >= 0. With ``exact=True`` it must satisfy γ·max w² < 1.
        weights: (m,) positive group multipliers w_j (default all ones).
        exact: False -> prox of γ·WGSEF_k (P-env, "envelope"); True -> prox of
            γ·(WGSEF_k − ½‖w⊙z‖²) (P-exact, "exact", zero iff at most k groups are non-zero).
        method: kernel algorithm, ``"select"`` or ``"sort"``.

    Returns:
        (m,) float64 scale factors. Zero groups map to 0 (never divides by a norm).
    """
    _check_1d(norms, "norms")
    _check_method(method)
    m = norms.numel()
    k = _check_k(k, m)
    gamma = _check_gamma(gamma)
    a = norms.detach().to(torch.float64)
    if gamma == 0.0:
        return torch.ones_like(a)
    if weights is None:  # unit weights: γ w² is one number (a 0-d tensor), no (m,) temporaries
        w = None
        gw2 = torch.tensor(gamma, dtype=torch.float64, device=a.device)
    else:
        w = weights.detach().to(torch.float64).expand_as(a)
        gw2 = gamma * w * w  # (m,) γ w_j²
    if exact and float(gw2.max()) >= 1.0:
        raise UserError(f"gamma={gamma:g} too large for the exact penalty: need gamma * max(w)^2 < 1")
    if m and float(a.min()) < 0:
        raise UserError("norms must be non-negative")
    nnz = int(torch.count_nonzero(a))
    if nnz <= k:
        return torch.ones_like(a) if exact else (1.0 / (1.0 + gw2)).expand_as(a).clone()
    if w is None:
        # Unit weights: β = a/c, δ = γ/c with one number c (c = 1 for the envelope). Solving with
        # β' = a, δ' = γ/c gives the same t (α' = α/c), so no (m,) β is formed; then the scale
        # t/(c t + γ) = 1/(c + γ/t) (t = 0 -> 0) is computed in place in t's buffer.
        c = 1.0 - gamma if exact else 1.0
        t = _solve(a, gw2 / c, k, method)
        return t.reciprocal_().mul_(gamma).add_(c).reciprocal_()
    if exact:
        c = 1.0 - gw2
        t = _solve(a * w / c, gw2 / c, k, method)
        return t.div_(t * c + gw2)
    t = _solve(a * w, gw2, k, method)
    return t.div_(t + gw2)


def sef_prox(x: torch.Tensor, k: int, gamma: float, *, method: Method = "select") -> torch.Tensor:
    """Prox of γ·s_k(|·|) at a 1-D tensor ``x`` (P-env with singleton groups, unit weights).

    argmin_p ½‖p − x‖² + γ·s_k(|p|). Each output entry is a multiple in [0, 1] of its input.

    Args:
        x: 1-D tensor (any float dtype; computed in float64, returned in ``x.dtype``).
        k: sparsity level, 1 <= k <= x.numel().
        gamma: prox parameter, >= 0.
        method: ``"select"`` (linear time, default) or ``"sort"``.
    """
    _check_1d(x)
    scale = group_prox_scale(x.abs(), k, gamma, method=method)
    return (x.to(torch.float64) * scale).to(x.dtype)


def exact_sef_prox(x: torch.Tensor, k: int, gamma: float, *, method: Method = "select") -> torch.Tensor:
    """Prox of γ·(s_k(|·|) − ½‖·‖²) (P-exact, singleton groups, unit weights), 0 <= γ < 1."""
    _check_1d(x)
    scale = group_prox_scale(x.abs(), k, gamma, exact=True, method=method)
    return (x.to(torch.float64) * scale).to(x.dtype)


def top_k_groups(norms: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest entries of ``norms``; ties broken by lowest index."""
    _check_1d(norms, "norms")
    k = _check_k(k, norms.numel())
    order = torch.sort(-norms.detach().to(torch.float64), stable=True).indices
    keep = torch.zeros(norms.numel(), dtype=torch.bool, device=norms.device)
    keep[order[:k]] = True
    return keep


# ----------------------------------------------------------------------------- tensor-level operator
GROUP_WEIGHTS = ("none", "sqrt_size", "custom")


def group_multipliers(
    w: torch.Tensor,
    grouping: str,
    group_weights: str = "none",
    multipliers: torch.Tensor | None = None,
    *,
    n_coupled: int = 0,
) -> torch.Tensor | None:
    """Group multipliers w_j of WGSEF inside one tensor (WGSEF, option ``group_weights``), rescaled to max 1.

    ``"none"`` (reconstructed default): None, i.e. all ones. ``"custom"``: the given (n_groups,) positive
    vector. ``"sqrt_size"``: √|g_j| — the groups of one tensor under a filter/channel/row grouping all
    have the same size, so inside a tensor this is all ones; :func:`sparseforge.optim.build_prox_map` gives
    ``"sqrt_size"`` and ``"flops"`` their meaning *across* layers (a per-layer multiplier).
    """
    from ..groups import group_size, n_groups

    if group_weights not in GROUP_WEIGHTS:
        raise UserError(f"group_weights must be one of {GROUP_WEIGHTS}, got {group_weights!r}")
    m = n_groups(w.shape, grouping)
    if group_weights == "none":
        return None
    if group_weights == "sqrt_size":
        size = group_size(w.shape, grouping) + n_coupled
        return torch.ones(m, dtype=torch.float64, device=w.device) if size > 0 else None
    if multipliers is None:
        raise UserError("group_weights='custom' needs multipliers=<(n_groups,) tensor>")
    mw = torch.as_tensor(multipliers, dtype=torch.float64, device=w.device).reshape(-1)
    if mw.numel() != m or not bool((mw > 0).all()):
        raise UserError(f"multipliers must be {m} positive numbers (one per group), got shape {tuple(mw.shape)}")
    return mw / mw.max()


def resolve_k(k: int | float, m: int) -> int:
    """k as a count (int >= 1) or a fraction of groups kept (float in (0, 1]): k = max(1, round(k·m))."""
    if isinstance(k, float) and 0.0 < k <= 1.0:
        return max(1, int(round(k * m)))
    return _check_k(k, m)


def _validate_k_arg(k: int | float) -> int | float:
    if isinstance(k, bool):
        raise UserError(f"k must be a count >= 1 or a fraction in (0, 1], got {k!r}")
    if isinstance(k, float) and 0.0 < k <= 1.0:
        return k
    try:
        ok = float(k) == int(k) and int(k) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UserError(f"k must be a count >= 1 or a fraction in (0, 1], got {k!r}")
    return int(k)


def _register(cls):  # late import keeps this module importable on its own
    from ..registry import register_method

    return register_method("wgsef", family="prox")(cls)


@_register
class GroupEnvelope(ProxOperator):
    """WGSEF regularizer λ·WGSEF_k (or its exact k-level variant) and its prox (WGSEF, P-env, P-exact).

    Args:
        k: groups kept: a count >= 1, or a float in (0, 1] (fraction of the tensor's groups,
            k = max(1, round(k·m))). For ``grouping="layer"`` it counts tensors (joint operator).
        grouping: a name of :data:`sparseforge.groups.GROUPINGS`.
        weight: λ (γ = step × λ).
        exact: True (default; reconstructed default: which objective the paper trains is not pinned down): the penalty
            λ·(WGSEF_k − ½‖w⊙z‖²), zero iff at most k groups are non-zero, prox (P-exact).
            False: the literal envelope λ·WGSEF_k, prox (P-env).
        group_weights: ``"none"`` (reconstructed default) | ``"sqrt_size"`` | ``"custom"``.
        multipliers: the custom (n_groups,) multipliers.
        coupled: 1-D tensors in the same groups (bias, BN γ/β; filter/row groupings only).
        method: ``"select"`` (linear time) or ``"sort"`` kernel.

    For the exact variant γ must satisfy γ·max w² < 1; larger values are clamped to
    0.999/max w² with a one-time warning (P-exact needs γ w² < 1).
    """

    layer_options = ("k", "exact", "group_weights", "multipliers", "method")

    @classmethod
    def from_layers(cls, layers, *, weight, grouping="filter", coupled=None, **options):  # type: ignore[override]
        """One operator per layer; with ``grouping="layer"`` one joint operator over all of them (k counts layers)."""
        if grouping == "layer":
            op = cls(options.get("k", 0.5), "layer", weight,  # type: ignore[arg-type]
                     **{k: v for k, v in options.items() if k in cls.layer_options and k != "k"})
            return [op] * len(layers)
        return super().from_layers(layers, weight=weight, grouping=grouping, coupled=coupled, **options)

    def __init__(
        self,
        k: int | float = 0.5,
        grouping: str = "filter",
        weight: float = 0.0,
        *,
        exact: bool = True,
        group_weights: str = "none",
        multipliers: torch.Tensor | None = None,
        coupled: Sequence[torch.Tensor] = (),
        method: Method = "select",
    ) -> None:
        super().__init__(weight)
        from ..groups import GROUPINGS

        if grouping not in GROUPINGS:
            raise UserError(f"unknown grouping {grouping!r}; choose one of: {', '.join(GROUPINGS)}")
        if group_weights not in GROUP_WEIGHTS:
            raise UserError(f"group_weights must be one of {GROUP_WEIGHTS}, got {group_weights!r}")
        _check_method(method)
        self.k = _validate_k_arg(k)
        self.grouping = grouping
        self.exact = bool(exact)
        self.group_weights = group_weights
        self.multipliers = multipliers
        self.coupled = check_coupled(grouping, coupled)
        self.method = method
        self.joint = grouping == "layer"
        self._warned = False

    # -- helpers ----------------------------------------------------------------------------
    def k_for(self, w: torch.Tensor) -> int:
        """The count k_l for tensor ``w`` (checks k <= number of groups)."""
        from ..groups import n_groups

        return resolve_k(self.k, n_groups(w.shape, self.grouping))

    def _mult(self, w: torch.Tensor) -> torch.Tensor | None:
        return group_multipliers(w, self.grouping, self.group_weights, self.multipliers, n_coupled=len(self.coupled))

    def _joint_mult(self, ws: Sequence[torch.Tensor]) -> torch.Tensor | None:
        if self.group_weights == "none":
            return None
        if self.group_weights == "sqrt_size":
            mw = torch.tensor([float(w.numel()) for w in ws], dtype=torch.float64).sqrt()
            return mw / mw.max()
        return group_multipliers(torch.empty(len(ws)), "element", "custom", self.multipliers)

    def _safe_gamma(self, g: float, mw: torch.Tensor | None) -> float:
        if not self.exact:
            return g
        wmax2 = 1.0 if mw is None else float(mw.max()) ** 2
        if g * wmax2 >= 1.0:
            if not self._warned:
                warnings.warn(
                    f"GroupEnvelope(exact=True): gamma={g:g} >= 1/max(w)^2; clamped to {0.999 / wmax2:g}",
                    stacklevel=3,
                )
                self._warned = True
            g = 0.999 / wmax2
        return g

    def group_norms(self, w: torch.Tensor) -> torch.Tensor:
        """Lifted group norms z(θ) (with coupled entries), differentiable."""
        return lifted_norms(w, self.grouping, self.coupled)

    # -- ProxOperator API -------------------------------------------------------------------
    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        if self.joint:
            return self.penalty_tensors([w])
        y = self.group_norms(w)
        mw = self._mult(w)
        if mw is not None:
            y = y * mw.to(y.dtype)
        return self.weight * wgsef_value(y, self.k_for(w), exact=self.exact)

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, step: float) -> torch.Tensor:
        if self.joint:
            self.prox_tensors_([w], step)
            return w
        g = self.gamma(step)
        kk = self.k_for(w)
        if g == 0.0:
            return w
        mw = self._mult(w)
        g = self._safe_gamma(g, mw)
        a = lifted_sq_norms(w, self.grouping, self.coupled, dtype=torch.float64).sqrt_()  # (m,)
        scale = group_prox_scale(a, kk, g, weights=mw, exact=self.exact, method=self.method)
        scale_groups_(w, scale, self.grouping, self.coupled)
        return w

    def penalty_tensors(self, ws: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.joint:
            return super().penalty_tensors(ws)
        y = torch.stack([w.norm() for w in ws])  # (L,) one group per tensor
        mw = self._joint_mult(ws)
        if mw is not None:
            y = y * mw.to(y.dtype)
        return self.weight * wgsef_value(y, resolve_k(self.k, len(ws)), exact=self.exact)

    @torch.no_grad()
    def prox_tensors_(self, ws: Sequence[torch.Tensor], step: float) -> None:
        if not self.joint:
            return super().prox_tensors_(ws, step)
        g = self.gamma(step)
        kk = resolve_k(self.k, len(ws))
        if g == 0.0:
            return None
        mw = self._joint_mult(ws)
        g = self._safe_gamma(g, mw)
        a = torch.stack([w.detach().to(torch.float64).norm() for w in ws])  # (L,)
        scale = group_prox_scale(a, kk, g, weights=mw, exact=self.exact, method=self.method)
        for w, s in zip(ws, scale.tolist()):
            if s != 1.0:
                w.mul_(s)
        return None

    @torch.no_grad()
    def project_tensors_(self, ws: Sequence[torch.Tensor]) -> None:
        """Final k-projection (the end of proximal training): keep the k groups with the largest w⊙z, zero the rest."""
        if self.joint:
            y = torch.stack([w.detach().to(torch.float64).norm() for w in ws])
            mw = self._joint_mult(ws)
            keep = top_k_groups(y if mw is None else y * mw, resolve_k(self.k, len(ws)))
            for w, kp in zip(ws, keep.tolist()):
                if not kp:
                    w.zero_()
            return None
        for w in ws:
            y = lifted_sq_norms(w, self.grouping, self.coupled, dtype=torch.float64).sqrt()
            mw = self._mult(w)
            keep = top_k_groups(y if mw is None else y * mw, self.k_for(w))
            scale_groups_(w, keep.to(torch.float64), self.grouping, self.coupled)
        return None


__all__ = [
    "sef_value",
    "sef_prox",
    "exact_sef_prox",
    "wgsef_value",
    "group_prox_scale",
    "solve_clip_sum",
    "top_k_groups",
    "resolve_k",
    "group_multipliers",
    "GroupEnvelope",
]
