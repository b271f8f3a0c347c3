"""Module B of Turbo-VBI: sum-product message passing on each layer's support MRF.

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483. The support s of a layer is arranged as a matrix S (rows =
fan-in index, columns = output neurons, :mod:`sparseforge.bayes.layout`) under a 2-D binary MRF:

    (B1)  p(s) ∝ Π_n φ_n(s_n) · Π_{n ∈ first row ∪ first column} π_start^{s_n} (1-π_start)^{1-s_n}
                 · Π_{(r,c)→(r,c+1)} ψ_h(s_{r,c}, s_{r,c+1}) · Π_{(r,c)→(r+1,c)} ψ_v(s_{r,c}, s_{r+1,c})
          ψ(1,1) = p11, ψ(1,0) = 1-p11, ψ(0,1) = p01, ψ(0,0) = 1-p01   (state 1 = active)
          φ_n(1) = ν_n, φ_n(0) = 1-ν_n   (module A's extrinsic message)

Binary messages are kept as log-odds λ = ln m(1) - ln m(0) (so they are normalised by construction
and computed with ``logaddexp`` in float64). A message sent along an edge with table ψ from a node
whose cavity (everything but the message coming back along that edge) has log-odds x is

    (B2)  forward  (sender is ψ's first index):   λ = ln(ψ01 + ψ11 e^x) - ln(ψ00 + ψ10 e^x)
          backward (sender is ψ's second index):  λ = ln(ψ10 + ψ11 e^x) - ln(ψ00 + ψ01 e^x)

Loopy BP on the grid keeps four message fields (→, ←, ↓, ↑), starts from (½, ½) (λ = 0), updates
all messages synchronously from the previous iteration's, and damps in the probability domain,

    (B3)  m ← (1-β) m_new + β m_old,    messages clamped to [1e-12, 1 - 1e-12].

On a single row or column the graph is a chain and forward-backward (B2 run left to right and right
to left) gives the exact marginals. The output to module A is

    (B4)  extrinsic (default): π_n ∝ start factor × Π incoming messages (the node's own φ_n excluded)
          belief:              π_n ∝ φ_n × start × Π incoming (the demo's rule; counts ν_n twice)

clamped to [1e-6, 1 - 1e-6]. With ``coupling="iid"`` (:class:`IIDSupport`) module B returns the
constant i.i.d. prior instead of anything derived from ν (returning ν would double-count it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError
from .prior import logit

__all__ = [
    "PI_CLAMP",
    "PairTable",
    "message",
    "chain_forward_backward",
    "bp_grid",
    "SupportMRF",
    "IIDSupport",
]

PI_CLAMP = 1e-6  # module B's output to module A is clamped to [PI_CLAMP, 1 - PI_CLAMP]
MSG_EPS = 1e-12  # messages are clamped to [MSG_EPS, 1 - MSG_EPS]

Output = Literal["extrinsic", "belief"]


def _check_prob(name: str, p: float, *, closed: bool = False) -> None:
    ok = isinstance(p, (int, float)) and math.isfinite(p) and (0.0 <= p <= 1.0 if closed else 0.0 < p < 1.0)
    if not ok:
        raise ConfigError(f"{name} must be a probability strictly inside (0, 1), got {p!r}")


@dataclass(frozen=True)
class PairTable:
    """A pairwise factor ψ(first, second) given by p01 = ψ(0, 1) and p11 = ψ(1, 1).

    Each row of the table sums to one: p11 ≈ P(next active | this active), p01 ≈ P(next active |
    this inactive); p11 > p01 is attraction (clustering).
    """

    p01: float
    p11: float

    def __post_init__(self) -> None:
        _check_prob("p01", self.p01)
        _check_prob("p11", self.p11)

    def log_table(self) -> torch.Tensor:
        """(2, 2) float64 ln ψ indexed [first, second]."""
        t = torch.tensor([[1.0 - self.p01, self.p01], [1.0 - self.p11, self.p11]], dtype=torch.float64)
        return torch.log(t)


def _edge_coeffs(log_psi: torch.Tensor, forward: bool) -> tuple[torch.Tensor, ...]:
    """(A, B, C, D) with m(1) = A (1-c) + B c and m(0) = C (1-c) + D c for a cavity P(s=1) = c."""
    psi = torch.exp(log_psi)
    if forward:  # Σ_s ψ(s, s') c(s)
        return psi[0, 1], psi[1, 1], psi[0, 0], psi[1, 0]
    return psi[1, 0], psi[1, 1], psi[0, 0], psi[0, 1]  # Σ_s' ψ(s, s') c(s')


def message(x: torch.Tensor, log_psi: torch.Tensor, *, forward: bool) -> torch.Tensor:
    """(B2): log-odds of the message sent along one edge from a cavity with log-odds ``x``.

    The two-term sums are formed from the cavity probability c = sigmoid(x), which is exact in the
    saturated limits (c = 0 or 1 gives a row of ψ), and the result is returned as log-odds.

    Args:
        x: (...) cavity log-odds of the sender, float64.
        log_psi: (2, 2) ln ψ indexed [first, second].
        forward: True if the sender is ψ's first index (→ or ↓), False for ← or ↑.
    """
    a, b, c_, d = _edge_coeffs(log_psi, forward)
    c = torch.sigmoid(x.to(torch.float64))
    return torch.log(a * (1.0 - c) + b * c) - torch.log(c_ * (1.0 - c) + d * c)


def chain_forward_backward(
    unary: torch.Tensor, log_psi: torch.Tensor, local: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sum-product on chains (forward-backward with (B2)), batched over leading dims.

    Args:
        unary: (..., n) log-odds of the unary factors φ (module A's ν).
        log_psi: (2, 2) ln ψ of the edges (i, i+1).
        local: (..., n) log-odds of extra per-node factors kept in the extrinsic output (the start
            factor); None for none.

    Returns:
        (extrinsic, belief) log-odds, (..., n) float64: extrinsic = local + incoming messages,
        belief = extrinsic + unary.
    """
    u = unary.to(torch.float64)
    loc = torch.zeros_like(u) if local is None else local.to(torch.float64).expand_as(u)
    n = u.shape[-1]
    fwd = [torch.zeros_like(u[..., 0])]
    for i in range(1, n):  # sequential recursion along the chain (batched over chains)
        fwd.append(message(fwd[-1] + u[..., i - 1] + loc[..., i - 1], log_psi, forward=True))
    bwd = [torch.zeros_like(u[..., 0])]
    for i in range(n - 2, -1, -1):
        bwd.append(message(bwd[-1] + u[..., i + 1] + loc[..., i + 1], log_psi, forward=False))
    incoming = torch.stack(fwd, -1) + torch.stack(bwd[::-1], -1)  # (..., n)
    ext = loc + incoming
    return ext, ext + u


def _start_field(shape: tuple[int, int], start_prob: float | None) -> torch.Tensor:
    """(R, C) log-odds of the start factor: logit(π_start) on the first row and first column."""
    f = torch.zeros(shape, dtype=torch.float64)
    if start_prob is not None:
        lo = math.log(start_prob) - math.log1p(-start_prob)
        f[0, :] = lo
        f[:, 0] = lo
    return f


def bp_grid(
    unary: torch.Tensor,
    *,
    log_psi_h: torch.Tensor | None,
    log_psi_v: torch.Tensor | None,
    local: torch.Tensor | None = None,
    iters: int = 10,
    damping: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Damped synchronous loopy BP on an (R, C) grid, fully vectorised over nodes.

    Args:
        unary: (R, C) log-odds of φ (module A's ν).
        log_psi_h: (2, 2) ln ψ_h of the horizontal edges (r, c)→(r, c+1); None for no such edges.
        log_psi_v: (2, 2) ln ψ_v of the vertical edges (r, c)→(r+1, c); None for no such edges.
        local: (R, C) log-odds of the start factor (kept in the extrinsic output); None for none.
        iters: BP iterations (each updates all four message fields once).
        damping: β of (B3); 0 = undamped.

    Returns:
        (extrinsic, belief, last_change): (R, C) float64 log-odds, and the largest absolute change
        of a message probability in the last iteration (0 at a fixed point).
    """
    u = unary.to(torch.float64)
    loc = torch.zeros_like(u) if local is None else local.to(torch.float64)
    R, C = u.shape
    # msgs[k] = log-odds of the message INTO (r, c) travelling → (from the left), ← (from the right),
    # ↓ (from above), ↑ (from below); a missing neighbour or edge type keeps the neutral 0.
    msgs = torch.zeros((4, R, C), dtype=torch.float64)  # log-odds
    probs = torch.full((4, R, C), 0.5, dtype=torch.float64)  # the same messages as P(s = 1)
    neutral = torch.zeros((2, 2), dtype=torch.float64)
    ch = [_edge_coeffs(log_psi_h if log_psi_h is not None else neutral, f) for f in (True, False)]
    cv = [_edge_coeffs(log_psi_v if log_psi_v is not None else neutral, f) for f in (True, False)]
    # m(1) = A + (B - A) c,  m(0) = C + (D - C) c  for the four directions at once: (4, 1, 1) each
    A, B, Cc, D = (torch.stack([ch[0][i], ch[1][i], cv[0][i], cv[1][i]]).view(4, 1, 1) for i in range(4))
    BA, DC = B - A, D - Cc
    live = torch.zeros((4, R, C), dtype=torch.bool)  # receivers that have a sender in that direction
    if log_psi_h is not None:
        live[0, :, 1:] = True
        live[1, :, :-1] = True
    if log_psi_v is not None:
        live[2, 1:, :] = True
        live[3, :-1, :] = True
    dead = ~live
    back = [1, 0, 3, 2]  # the message coming back along the same edge
    x = torch.zeros_like(msgs)  # each sender's cavity, moved onto its receiver (borders stay 0)
    change = 0.0
    for it in range(iters):
        total = u + loc + msgs.sum(0)  # (R, C) belief log-odds
        cav = total.unsqueeze(0) - msgs[back]  # (4, R, C): each sender's cavity, at the sender
        x[0, :, 1:] = cav[0, :, :-1]
        x[1, :, :-1] = cav[1, :, 1:]
        x[2, 1:, :] = cav[2, :-1, :]
        x[3, :-1, :] = cav[3, 1:, :]
        c = torch.sigmoid(x)
        m1 = torch.addcmul(A, BA, c)
        p_new = m1.div_(m1 + torch.addcmul(Cc, DC, c))
        p_new = torch.lerp(p_new, probs, damping).clamp_(MSG_EPS, 1.0 - MSG_EPS).masked_fill_(dead, 0.5)  # (B3)
        if it == iters - 1:
            change = float((p_new - probs).abs().max()) if p_new.numel() else 0.0
        probs = p_new
        msgs = torch.log(probs / (1.0 - probs))
    right, left, down, up = msgs
    ext = loc + right + left + down + up
    return ext, ext + u, change


@dataclass(frozen=True)
class SupportMRF:
    """The 2-D MRF support prior of one layer (B1) and its sum-product solver.

    Attributes:
        p01_h, p11_h: horizontal table ψ_h (across neighbouring neurons).
        p01_v, p11_v: vertical table ψ_v (along one neuron's fan-in).
        start_prob: π_start on the first row and column (None disables it).
        bp_iters: loopy-BP iterations (reconstructed default 10).
        damping: β of (B3) (reconstructed default 0.5).
        exact_chain: single-row / single-column layers use exact forward-backward.
        block_rows: run BP on independent blocks of this many rows (each block its own grid, with
            the start factor on its first row); None = the whole matrix.
        output: ``"extrinsic"`` (default) or ``"belief"`` (B4).

    A table with p11 < p01 (anti-clustering) is allowed with a warning.
    """

    p01_h: float = 0.3
    p11_h: float = 0.48
    p01_v: float = 0.3
    p11_v: float = 0.48
    start_prob: float | None = 0.3
    bp_iters: int = 10
    damping: float = 0.5
    exact_chain: bool = True
    block_rows: int | None = None
    output: Output = "extrinsic"

    def __post_init__(self) -> None:
        for d in ("h", "v"):
            p01, p11 = getattr(self, f"p01_{d}"), getattr(self, f"p11_{d}")
            _check_prob(f"p01_{d}", p01)
            _check_prob(f"p11_{d}", p11)
            if p11 < p01:
                warnings.warn(f"support MRF p11_{d}={p11} < p01_{d}={p01} is anti-clustering (neighbours repel)",
                              stacklevel=3)
        if self.start_prob is not None:
            _check_prob("start_prob", self.start_prob)
        if self.bp_iters < 1:
            raise ConfigError(f"bp_iters must be >= 1, got {self.bp_iters}")
        if not 0.0 <= self.damping < 1.0:
            raise ConfigError(f"damping must be in [0, 1), got {self.damping}")
        if self.block_rows is not None and self.block_rows < 1:
            raise ConfigError(f"block_rows must be >= 1 or None, got {self.block_rows}")
        if self.output not in ("extrinsic", "belief"):
            raise ConfigError(f"extrinsic_b must be 'extrinsic' or 'belief', got {self.output!r}")

    def _solve(self, unary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lh = PairTable(self.p01_h, self.p11_h).log_table()
        lv = PairTable(self.p01_v, self.p11_v).log_table()
        R, C = unary.shape
        if self.block_rows is not None and self.block_rows < R:
            parts = [self._solve_block(unary[r:r + self.block_rows], lh, lv) for r in range(0, R, self.block_rows)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._solve_block(unary, lh, lv)

    def _solve_block(self, u: torch.Tensor, lh: torch.Tensor, lv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R, C = u.shape
        loc = _start_field((R, C), self.start_prob)
        if self.exact_chain and (R == 1 or C == 1):
            if R == 1:
                return tuple(t.view(R, C) for t in chain_forward_backward(u[0], lh, loc[0]))  # type: ignore[return-value]
            return tuple(t.view(R, C) for t in chain_forward_backward(u[:, 0], lv, loc[:, 0]))  # type: ignore[return-value]
        ext, bel, _ = bp_grid(u, log_psi_h=lh, log_psi_v=lv, local=loc, iters=self.bp_iters, damping=self.damping)
        return ext, bel

    def run_logits(self, nu_logit: torch.Tensor) -> torch.Tensor:
        """Module B on log-odds ``nu_logit`` (R, C) of ν; returns π (R, C) float64, clamped (B4)."""
        ext, bel = self._solve(nu_logit.to(torch.float64))
        out = ext if self.output == "extrinsic" else bel
        return torch.sigmoid(out).clamp(PI_CLAMP, 1.0 - PI_CLAMP)

    def run(self, nu: torch.Tensor) -> torch.Tensor:
        """Module B on probabilities ν (R, C) (clamped to [1e-12, 1 - 1e-12]); returns π."""
        return self.run_logits(logit(nu))

    def marginals(self, nu: torch.Tensor) -> torch.Tensor:
        """BP beliefs P(s_n = 1) (R, C) under the MRF with unaries ν (not clamped)."""
        return torch.sigmoid(self._solve(logit(nu))[1])


@dataclass(frozen=True)
class IIDSupport:
    """Independent support prior (``coupling="iid"``): module B returns π_n = ``prior`` everywhere.

    The constant prior, not the incoming message: returning ν would count module A's evidence
    twice. This is the no-structure ablation of the MRF.
    """

    prior: float = 0.5

    def __post_init__(self) -> None:
        _check_prob("iid_prior", self.prior)

    def run_logits(self, nu_logit: torch.Tensor) -> torch.Tensor:
        return torch.full(nu_logit.shape, float(self.prior), dtype=torch.float64).clamp(PI_CLAMP, 1.0 - PI_CLAMP)

    def run(self, nu: torch.Tensor) -> torch.Tensor:
        return self.run_logits(nu)

    def marginals(self, nu: torch.Tensor) -> torch.Tensor:
        """Posterior P(s_n = 1) with the constant prior: sigmoid(logit ν + logit prior)."""
        return torch.sigmoid(logit(nu) + logit(torch.tensor(self.prior)))
