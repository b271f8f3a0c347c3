"""Sparsey: hierarchical SDR memory with single-trial learning and the Code Selection Algorithm.

Paper: G. Rinkus, J. Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829 (2017). Model background: G. Rinkus, "Sparsey: event
recognition via deep hierarchical sparse distributed codes", Front. Comput. Neurosci. 8:160
(2014). Choices the papers leave open are named config options; their docstrings say
"reconstructed default".

Structure. A *mac* (macrocolumn) holds Q competitive modules (CMs) of K binary cells; a code is
one winner per CM. A *level* is a 2-D grid of macs; level 1 reads the binary image through square
(or circular, ``rf_mode="radius"``) receptive fields, level l+1 reads the concatenated binary
code vectors (Q*K cells each) of the level-l macs in its RF. Weights are binary matrices
``W_U`` (bottom-up), ``W_H`` (horizontal, from the level's own codes at t-1) and ``W_D``
(top-down, from level l+1 at t-1), all initialised to 0.

Code Selection Algorithm (CSA), one mac, one frame, vectorised here over all macs of a level and
over a batch:

1. gate:        pi_U = sum_j x_U[j];  the mac is active iff  pi_lo*cap <= pi_U <= pi_hi*cap
2. raw sums:    u_i = sum_j x_U[j] W_U[j, i]     (likewise h_i, d_i)
3. normalise:   U_i = u_i / pi_U,  H_i = h_i / pi_H,  D_i = d_i / pi_D   (signal skipped if pi_X = 0)
4. support:     V_i = prod_X X_i ** lambda_X                                   in [0, 1]
5. familiarity: G = (1/Q) sum_q max_{i in CM q} V_i                            in [0, 1]
6. expansivity: G' = max(0, (G - G_minus) / (1 - G_minus));  eta = 1 + G'**gamma * chi * K
7. likelihood:  mu_i = (eta - 1) * logistic(s (V_i - V*)) + 1                  in [1, eta]
8. per CM:      rho_i = mu_i / sum_{j in CM(i)} mu_j
9. winners:     learning draws one cell per CM from rho; recognition takes argmax V, ties to the
                cell with the fewest learned links, then a fixed seeded priority
                (``tie_order``). A learning draw that would tie at full support (V = 1) with cells
                that win that tie-break after storing yields to recognition's choice, so a
                just-stored item is recalled with its stored code (``tie_break="recall"``); a mac
                past its critical period takes recognition's winners while learning
                (``frozen_winners="max_v"``).
10. learning:   W_X[j, i] = 1 for every active afferent j and winner i (single trial); a mac
                whose weight saturation (fraction of ones) exceeds theta_freeze of its level
                stops updating that weight matrix for good ("critical period").

Everything runs under ``torch.no_grad``; there is no autograd. Learning is sequential (each item
sees the weights left by the previous one, so a batch is learned item by item, vectorised over
macs, and only active macs that may still learn draw), encoding and familiarity are batched.
Over large receptive fields the raw sums add only the weight rows of active afferents (cost ~
active inputs x cells, not RF size x cells).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataFormatError, UserError
from ..registry import register_method

__all__ = [
    "Sparsey",
    "SparseyConfig",
    "codes_to_cells",
    "normalised_sum",
    "familiarity_from_support",
    "expansivity",
    "win_likelihood",
    "cm_probabilities",
    "sample_winners",
    "argmax_winners",
    "learning_winners",
    "LearnTrace",
]


# ----------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------
_PER_LEVEL: dict[str, type] = {
    "Q": int,
    "K": int,
    "lambda_u": float,
    "lambda_h": float,
    "lambda_d": float,
    "freeze_threshold": float,
}


@dataclass
class SparseyConfig:
    """Hyperparameters of a Sparsey network.

    The defaults are the generic values of the authors' public CSA descriptions. The default
    network for a 16x16 input has level 1 = 4x4 macs with 7x7 windows and level 2 = one mac whose
    RF is all level-1 macs, so the top level is a single mac (reconstructed default).

    Attributes:
        input_shape: (H, W) of the binary input image.
        grids: Macs per axis of each level (level 1 first); a level of g has g*g macs
            (reconstructed default (4, 1)).
        windows: RF window of each level: pixels for level 1, lower-level macs above; 0 means the
            whole lower level (reconstructed default (7, 0)).
        rf_mode: "window" (square windows centred at round(linspace(h, S-1-h, g)), reconstructed
            default) or "radius" (sparseypy's unit-square positions with a Euclidean radius).
        rf_radius: Per-level radius for ``rf_mode="radius"`` (unit-square coordinates; 0 = all).
        Q: Competitive modules per mac: one value for every level, or one per level.
        K: Cells per competitive module: one value, or one per level (a top mac with many cells
            per CM stores more items before its cells' input unions blur familiarity).
        band_l1: (pi_lo, pi_hi) gate band of level 1 as fractions of the RF size
            (reconstructed default (0.05, 0.6)).
        band_higher: Gate band of levels >= 2, as fractions of (source macs * Q of the level below)
            (reconstructed default (0.1, 1.0)).
        lambda_u, lambda_h, lambda_d: Exponents of U, H, D in V: one value, or one per level
            (lambda_u > 1 sharpens familiarity: V = U**lambda_u stays 1 on stored items and falls
            fast on partly matching novel ones).
        g_minus: G below which eta = 1 (no expansivity).
        gamma, chi: eta = 1 + G'**gamma * chi * K.
        slope, inflection: Logistic slope s and inflection V* of mu.
        mu_form: "logistic" (default, mu = (eta-1) logistic + 1) or "java"
            (mu = max(eta * logistic(s (V - theta)), 1), theta ratcheting 0.5 -> 0.9 as the mac's
            mean V rises above 0.3; the ratchet's linear ramp is a reconstructed default).
        freeze_threshold: Weight saturation above which a mac stops updating that matrix: one
            value for every level, or one per level (level 1 first). Lower levels saturate first
            ("progressive critical periods").
        tie_break: "recall" (reconstructed default): a learning draw that, once stored, would tie
            at full support V = 1 with cells that win recognition's tie-break gives way to
            recognition's winner, so an item presented again at once comes back with its learned
            code. "sample": the plain draw (learning then breaks ties at V = 1 by chance and
            recognition by its tie order, so stored codes are often not recalled).
        frozen_winners: "max_v" (default, as in the authors' code after freezing): a mac whose
            U weights are frozen picks recognition's max-V winners while learning; "sample":
            it keeps drawing from rho (its codes are then not stored anywhere).
        tie_order: How recognition breaks ties among max-V cells: "fewest_links"
            (reconstructed default: the cell with the fewest learned links over the present
            signals, i.e. the most selective full match; a fixed seeded random priority breaks
            the rest) or "priority" (the fixed priority alone). A fixed order makes the same cells
            win every tie at full support, so their input unions grow fastest and ever more
            inputs tie on them; preferring the most selective cell spreads the wins.
        norm_floor: Divide u by max(pi_U, pi_lo) instead of pi_U (reconstructed default False).
        use_h: Use horizontal (t-1, same level) input in sequences.
        use_d: Use top-down (t-1, level above) input in sequences.
        h_radius: Chebyshev radius of the H receptive field on the mac grid (1 = mac + 8 neighbours).
        persistence: Frames each level holds its code in a sequence (one value, or one per level;
            reconstructed default 1).
        decay: "off" (default) or "sparseypy": w = (1 + c/P) / (1 + c/(P - a)), a = frames since the
            last reinforcement, w = 0 once a >= P.
        decay_c, decay_p: c and P of the sparseypy decay.
        backoff: Recognition retries signal subsets HUD, HU, UD, HD, U, H, D when G < g_backoff.
        g_backoff: Familiarity threshold of the backoff.
        binarize_threshold: Input pixels > threshold are on.
        seed: Seed of the network's generator (winner draws, tie-break priorities).
    """

    input_shape: tuple[int, int] = (16, 16)
    grids: tuple[int, ...] = (4, 1)
    windows: tuple[int, ...] = (7, 0)
    rf_mode: Literal["window", "radius"] = "window"
    rf_radius: tuple[float, ...] = (0.25, 0.0)
    Q: int | tuple[int, ...] = 8
    K: int | tuple[int, ...] = 8
    band_l1: tuple[float, float] = (0.05, 0.6)
    band_higher: tuple[float, float] = (0.1, 1.0)
    lambda_u: float | tuple[float, ...] = 1.0
    lambda_h: float | tuple[float, ...] = 1.0
    lambda_d: float | tuple[float, ...] = 1.0
    g_minus: float = 0.1
    gamma: float = 2.0
    chi: float = 100.0
    slope: float = 32.0
    inflection: float = 0.42
    mu_form: Literal["logistic", "java"] = "logistic"
    freeze_threshold: float | tuple[float, ...] = 0.5
    tie_break: Literal["recall", "sample"] = "recall"
    frozen_winners: Literal["max_v", "sample"] = "max_v"
    tie_order: Literal["priority", "fewest_links"] = "fewest_links"
    norm_floor: bool = False
    use_h: bool = True
    use_d: bool = True
    h_radius: int = 1
    persistence: tuple[int, ...] = (1,)
    decay: Literal["off", "sparseypy"] = "off"
    decay_c: float = 0.5
    decay_p: float = 1e5
    backoff: bool = False
    g_backoff: float = 0.5
    binarize_threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:  # noqa: C901 - a flat list of checks reads best
        def bad(msg: str) -> None:
            raise ConfigError(f"SparseyConfig: {msg}")

        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        self.grids = tuple(int(v) for v in self.grids)
        self.windows = tuple(int(v) for v in self.windows)
        self.rf_radius = tuple(float(v) for v in self.rf_radius)
        self.persistence = tuple(int(v) for v in self.persistence)
        self.band_l1 = tuple(float(v) for v in self.band_l1)  # type: ignore[assignment]
        self.band_higher = tuple(float(v) for v in self.band_higher)  # type: ignore[assignment]
        for name, typ in _PER_LEVEL.items():
            v = getattr(self, name)
            setattr(self, name, tuple(typ(x) for x in v) if isinstance(v, (tuple, list)) else typ(v))
            n = len(v) if isinstance(v, (tuple, list)) else 1
            if n not in (1, len(self.grids)):
                bad(f"{name} needs one value (or one per level of grids {self.grids}), got {v}")
        if len(self.input_shape) != 2 or min(self.input_shape) < 1:
            bad(f"input_shape must be (H, W) with H, W >= 1, got {self.input_shape}")
        if not self.grids or min(self.grids) < 1:
            bad(f"grids must list >= 1 positive mac counts per axis, got {self.grids}")
        if self.rf_mode not in ("window", "radius"):
            bad(f"rf_mode must be 'window' or 'radius', got {self.rf_mode!r}")
        if self.rf_mode == "window":
            if len(self.windows) != len(self.grids):
                bad(f"windows {self.windows} needs one entry per level of grids {self.grids}")
            if min(self.windows) < 0:
                bad(f"windows must be >= 0 (0 = whole lower level), got {self.windows}")
            if self.windows[0] > min(self.input_shape):
                bad(f"level-1 window {self.windows[0]} exceeds the input {self.input_shape}")
            for lvl in range(1, len(self.grids)):
                if self.windows[lvl] > self.grids[lvl - 1]:
                    bad(f"level-{lvl + 1} window {self.windows[lvl]} exceeds the lower grid {self.grids[lvl - 1]}")
        else:
            if len(self.rf_radius) != len(self.grids) or min(self.rf_radius) < 0:
                bad(f"rf_radius needs one value >= 0 per level, got {self.rf_radius}")
        if min(self._all("Q")) < 1:
            bad(f"Q must be >= 1, got {self.Q}")
        if min(self._all("K")) < 2:
            bad(f"K must be >= 2, got {self.K}")
        for name in ("band_l1", "band_higher"):
            b = getattr(self, name)
            if len(b) != 2 or not (0.0 <= b[0] <= b[1] <= 1.0):
                bad(f"{name} must be (lo, hi) with 0 <= lo <= hi <= 1, got {b}")
        for name in ("lambda_u", "lambda_h", "lambda_d"):
            if not min(self._all(name)) > 0:
                bad(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.slope > 0:
            bad(f"slope must be > 0, got {self.slope}")
        if not 0.0 <= self.g_minus < 1.0:
            bad(f"g_minus must be in [0, 1), got {self.g_minus}")
        if self.gamma < 0 or self.chi < 0:
            bad(f"gamma and chi must be >= 0, got {self.gamma}, {self.chi}")
        if self.mu_form not in ("logistic", "java"):
            bad(f"mu_form must be 'logistic' or 'java', got {self.mu_form!r}")
        if not all(0.0 < v <= 1.0 for v in self._all("freeze_threshold")):
            bad(f"freeze_threshold must be in (0, 1] (one value or one per level), got {self.freeze_threshold}")
        if self.tie_break not in ("recall", "sample"):
            bad(f"tie_break must be 'recall' or 'sample', got {self.tie_break!r}")
        if self.frozen_winners not in ("max_v", "sample"):
            bad(f"frozen_winners must be 'max_v' or 'sample', got {self.frozen_winners!r}")
        if self.h_radius < 0:
            bad(f"h_radius must be >= 0, got {self.h_radius}")
        if not self.persistence or min(self.persistence) < 1 or len(self.persistence) not in (1, len(self.grids)):
            bad(f"persistence needs one value >= 1 (or one per level), got {self.persistence}")
        if self.decay not in ("off", "sparseypy"):
            bad(f"decay must be 'off' or 'sparseypy', got {self.decay!r}")
        if self.decay_p <= 0 or self.decay_c < 0:
            bad(f"decay_p must be > 0 and decay_c >= 0, got {self.decay_p}, {self.decay_c}")
        if not 0.0 <= self.g_backoff <= 1.0:
            bad(f"g_backoff must be in [0, 1], got {self.g_backoff}")

    @property
    def n_levels(self) -> int:
        return len(self.grids)

    def level_persistence(self, level: int) -> int:
        return self.persistence[0] if len(self.persistence) == 1 else self.persistence[level]

    def _all(self, name: str) -> tuple[Any, ...]:
        v = getattr(self, name)
        return v if isinstance(v, tuple) else (v,)

    def at(self, name: str, level: int) -> Any:
        """Value of a per-level option (``Q``, ``K``, ``lambda_*``, ``freeze_threshold``) at ``level`` (0-based)."""
        v = self._all(name)
        return v[0] if len(v) == 1 else v[level]

    def level_freeze(self, level: int) -> float:
        """Freeze threshold of ``level`` (0-based)."""
        return float(self.at("freeze_threshold", level))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SparseyConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------
# Pure CSA math (tensor in, tensor out)
# ----------------------------------------------------------------------------------------
def normalised_sum(
    x: Tensor, W: Tensor, denom: Tensor, *, sparse: bool = False, nonzero: tuple[Tensor, ...] | None = None
) -> Tensor:
    """Steps 2-3: ``X_i = (sum_j x[j] W[j, i]) / denom`` for every mac and batch item.

    Args:
        x: Binary afferents ``(B, M, a)`` (0 / 1).
        W: Weights ``(M, a, C)`` (binary, or decayed values in [0, 1]).
        denom: ``(B, M)`` normaliser (number of active afferents, >= 1 where used).
        sparse: Sum only the weight rows of active afferents (cost ~ active afferents x C instead
            of a x C). Exactly equal to the dense product for binary weights (integer sums), equal
            up to rounding order otherwise.
        nonzero: ``torch.nonzero(x, as_tuple=True)`` when the caller has it.

    Returns:
        ``(B, M, C)`` in [0, 1].
    """
    B, M, a = x.shape
    if sparse:
        b_i, m_i, j_i = torch.nonzero(x, as_tuple=True) if nonzero is None else nonzero  # active, sorted by (b, m)
        bags = torch.arange(B * M, device=x.device)
        offsets = torch.searchsorted(b_i * M + m_i, bags)  # one bag of weight rows per (item, mac)
        raw = F.embedding_bag(m_i * a + j_i, W.reshape(M * a, -1), offsets, mode="sum")  # (B*M, C)
        raw = raw.view(B, M, -1)
    else:
        raw = torch.bmm(x.transpose(0, 1), W).transpose(0, 1)  # (B, M, C)
    return raw / denom.unsqueeze(-1)


def familiarity_from_support(V: Tensor, Q: int, K: int) -> Tensor:
    """Step 5: ``G = mean_q max_{i in CM q} V_i``; ``V`` is ``(..., Q*K)``, returns ``(...)``."""
    return V.unflatten(-1, (Q, K)).amax(-1).mean(-1)


def expansivity(G: Tensor, *, g_minus: float, gamma: float, chi: float, K: int) -> Tensor:
    """Step 6: ``eta = 1 + max(0, (G - G-)/(1 - G-))**gamma * chi * K``."""
    gp = ((G - g_minus) / (1.0 - g_minus)).clamp_min(0.0)
    return 1.0 + gp.pow(gamma) * (chi * K)


def win_likelihood(
    V: Tensor, eta: Tensor, *, slope: float, inflection: float | Tensor, form: str = "logistic"
) -> Tensor:
    """Step 7: ``mu = (eta - 1) logistic(s (V - V*)) + 1`` (or the "java" form), in [1, eta].

    ``eta`` broadcasts against ``V`` without its last axis; ``inflection`` may be per mac.
    """
    eta = eta.unsqueeze(-1)
    if isinstance(inflection, Tensor):
        inflection = inflection.unsqueeze(-1)
    z = torch.sigmoid(slope * (V - inflection))
    if form == "java":
        return torch.clamp_min(eta * z, 1.0)
    return (eta - 1.0) * z + 1.0


def cm_probabilities(mu: Tensor, Q: int, K: int) -> Tensor:
    """Step 8: ``rho_i = mu_i / sum_{j in CM(i)} mu_j``; returns ``(..., Q, K)``."""
    mu = mu.unflatten(-1, (Q, K))
    return mu / mu.sum(-1, keepdim=True)


def sample_winners(rho: Tensor, uniforms: Tensor) -> Tensor:
    """Step 9 (learning): inverse-CDF draw of one cell per CM.

    Args:
        rho: ``(..., Q, K)`` probabilities.
        uniforms: ``(..., Q)`` numbers in [0, 1).

    Returns:
        ``(..., Q)`` long winner indices: the number of cumulative sums below the uniform.
    """
    cdf = rho.cumsum(-1)  # (..., Q, K)
    k = rho.shape[-1]
    return (cdf < uniforms.unsqueeze(-1)).sum(-1).clamp_max(k - 1)


def argmax_winners(V: Tensor, priority: Tensor, Q: int, K: int) -> Tensor:
    """Recognition: the cell of largest V per CM; ties go to the cell with the largest tie key.

    The default key is a fixed random priority drawn once from the network's seeded generator,
    so retrieval is a deterministic function of the input (reconstructed default).

    Args:
        V: ``(B, M, Q*K)``; priority: tie keys >= 0 broadcastable to ``(B, M, Q, K)``, e.g.
            ``(M, Q, K)`` in [0, 1).

    Returns:
        ``(B, M, Q)`` long.
    """
    V = V.unflatten(-1, (Q, K))  # (B, M, Q, K)
    is_max = V == V.amax(-1, keepdim=True)  # (B, M, Q, K)
    return (is_max * (1.0 + priority)).argmax(-1)  # non-max cells score 0, max cells 1 + key (key >= 0)


def learning_winners(
    V: Tensor,
    drawn: Tensor,
    priority: Tensor,
    Q: int,
    K: int,
    *,
    full: float = 1.0,
    drawn_key: Tensor | None = None,
    frozen: Tensor | None = None,
) -> Tensor:
    """Learning winners that recognition will recall: the tie-key argmax of
    ``{i : V_i >= full} ∪ {drawn}`` per CM.

    Storing a winner raises its support to ``full`` (V = 1: every active afferent now reaches
    it), so recognition right after storing picks, among the drawn cell and the cells already at
    full support, the one with the largest tie key. Taking that cell as the learning winner keeps
    the draw whenever it would be recalled (always when no cell is at full support) and otherwise
    gives the tie to recognition's choice (reconstructed default ``tie_break="recall"``).

    Args:
        V: ``(B, M, Q*K)`` support; drawn: ``(B, M, Q)`` winners drawn from rho.
        priority: tie keys >= 0 broadcastable to ``(B, M, Q, K)`` (recognition's tie-break).
        drawn_key: ``(B, M, Q)`` key the drawn cell will have once stored, when storing changes
            it (default: its current key).
        frozen: ``(M,)`` bool; those macs take recognition's winner (argmax V, ties by key).

    Returns:
        ``(B, M, Q)`` long.
    """
    Vq = V.unflatten(-1, (Q, K))
    key = priority
    if drawn_key is not None:
        key = torch.broadcast_to(priority, Vq.shape).scatter(-1, drawn.unsqueeze(-1), drawn_key.unsqueeze(-1))
    cand = (Vq >= full).scatter(-1, drawn.unsqueeze(-1), True)  # (B, M, Q, K)
    if frozen is not None:
        cand = torch.where(frozen.view(1, -1, 1, 1), Vq == Vq.amax(-1, keepdim=True), cand)
    return (cand * (1.0 + key)).argmax(-1)  # key >= 0


def codes_to_cells(codes: Tensor, K: int) -> Tensor:
    """Winner indices ``(..., M, Q)`` (-1 = inactive) -> binary cell vectors ``(..., M*Q*K)`` float."""
    onehot = torch.zeros(*codes.shape, K, dtype=torch.float32, device=codes.device)
    onehot.scatter_(-1, codes.clamp_min(0).unsqueeze(-1), 1.0)
    onehot = onehot * (codes >= 0).unsqueeze(-1)
    return onehot.flatten(-3)


def _missing(parts: dict[str, Tensor], s: str, cells: Tensor) -> Tensor:
    """Active afferents of signal ``s`` not yet linked to ``cells`` (``(..., M, n)`` cell indices):
    ``pi - X[cells] * denom``, the links storing those cells would add."""
    raw = parts[s].gather(-1, cells) * parts[s + "_denom"].unsqueeze(-1)
    return (parts[s + "_pi"].unsqueeze(-1) - raw).double()


def _decayed(last: Tensor, now: int, c: float, P: float) -> Tensor:
    """sparseypy permanence: w = (1 + c/P)/(1 + c/(P - a)) for a < P, else 0 (never set: 0)."""
    a = (now - last).clamp_min(0.0)
    w = (1.0 + c / P) / (1.0 + c / (P - a).clamp_min(1e-9))
    return torch.where(torch.isfinite(last) & (a < P), w, torch.zeros_like(w))


# ----------------------------------------------------------------------------------------
# Geometry: receptive fields as padded index tensors
# ----------------------------------------------------------------------------------------
def _centres(size: int, n: int, w: int) -> list[int]:
    h = w // 2
    return [int(round(v)) for v in torch.linspace(h, size - 1 - h, n, dtype=torch.float64).tolist()]


def _window_sources(shape: tuple[int, int], grid: int, window: int) -> list[list[int]]:
    """Flat source indices inside each mac's square window (row-major mac order)."""
    Hs, Ws = shape
    if window == 0:
        return [list(range(Hs * Ws)) for _ in range(grid * grid)]
    h = window // 2
    out = []
    for cy in _centres(Hs, grid, window):
        for cx in _centres(Ws, grid, window):
            out.append([r * Ws + c for r in range(cy - h, cy - h + window) for c in range(cx - h, cx - h + window)])
    return out


def _radius_sources(shape: tuple[int, int], grid: int, radius: float) -> list[list[int]]:
    """sparseypy layout: sources and macs at evenly spaced unit-square positions; RF = disc."""
    Hs, Ws = shape
    ys = torch.linspace(0, 1, Hs) if Hs > 1 else torch.tensor([0.5])
    xs = torch.linspace(0, 1, Ws) if Ws > 1 else torch.tensor([0.5])
    src = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)  # (S, 2)
    g = torch.linspace(0, 1, grid) if grid > 1 else torch.tensor([0.5])
    macs = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (M, 2)
    if radius <= 0:
        return [list(range(src.shape[0])) for _ in range(macs.shape[0])]
    d = torch.cdist(macs.double(), src.double())  # (M, S)
    out = [torch.nonzero(row <= radius + 1e-9).flatten().tolist() for row in d]
    for m, s in enumerate(out):
        if not s:  # a mac must see something: take its nearest source
            out[m] = [int(d[m].argmin())]
    return out


def _pad(lists: list[list[int]], pad: int) -> Tensor:
    n = max(len(s) for s in lists)
    return torch.tensor([s + [pad] * (n - len(s)) for s in lists], dtype=torch.long)


def _expand_cells(mac_lists: list[list[int]], C: int) -> list[list[int]]:
    return [[m * C + c for m in macs for c in range(C)] for macs in mac_lists]


@dataclass
class LearnTrace:
    """What single-trial learning did, per level ``l`` (lists indexed by level).

    Attributes:
        codes: Learned codes ``(B, [T,] M_l, Q_l)`` (-1 where a mac was inactive).
        G: Familiarity of each mac when the item (frame) was learned, ``(B, [T,] M_l)``.
        stored: Macs that stored the item: active, U weights not yet frozen, and G < 1 (an item
            seen with G = 1 is already fully familiar and adds nothing), ``(B, [T,] M_l)``.
    """

    codes: list[Tensor]
    G: list[Tensor]
    stored: list[Tensor]

    @staticmethod
    def cat(parts: list[LearnTrace]) -> LearnTrace:
        n = len(parts[0].codes)
        return LearnTrace(
            *[[torch.cat([getattr(p, f)[lvl] for p in parts]) for lvl in range(n)] for f in ("codes", "G", "stored")]
        )

    def frame(self, t: int) -> LearnTrace:
        """The trace of frame ``t`` (drops the time axis)."""
        return LearnTrace([c[:, t] for c in self.codes], [g[:, t] for g in self.G], [s[:, t] for s in self.stored])


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------
_SIGNALS = ("U", "H", "D")
_SPARSE_MIN_AFFERENTS = 512  # RF size from which gathering active weight rows beats a dense bmm
_LINKS_CAP = 2.0**40  # above any number of links of one cell (tie keys stay >= 0)
_BACKOFF_ORDER = (("H", "U", "D"), ("H", "U"), ("U", "D"), ("H", "D"), ("U",), ("H",), ("D",))


@register_method("sparsey", family="sdr")
class Sparsey(nn.Module):
    """Sparsey hierarchy of mac grids (the contract facade of ``sparseforge.sdr``).

    Example::

        net = Sparsey(SparseyConfig(input_shape=(16, 16)))
        net.learn(x_train)                 # one presentation per item, no epochs
        codes = net.encode(x_test)         # (batch, Q) winner index per CM of the top mac
        g = net.familiarity(x_test)        # (batch,) in [0, 1]

    Inputs are images ``(B, H, W)``, ``(B, 1, H, W)`` or one ``(H, W)``; pixels above
    ``config.binarize_threshold`` are on. Sequences are ``(T, H, W)`` or ``(B, T, H, W)``.
    When the top level has several macs, top-level codes are their concatenation
    ``(batch, M_top * Q)`` and familiarity is the mean G over the active top macs. ``Q`` and ``K``
    may differ per level (``net.Qs``, ``net.Ks``; ``net.Q`` / ``net.K`` are level 1's); ``Q`` in
    ``(batch, Q)`` is the top level's.

    Ground truth for recall metrics: :meth:`learn_trace` / :meth:`learn_sequence_trace` return the
    learned codes, the G each mac saw and which macs stored the item (active, not frozen, G < 1).
    """

    def __init__(self, config: SparseyConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else SparseyConfig()
        if not isinstance(cfg, SparseyConfig):
            raise ConfigError(f"Sparsey expects a SparseyConfig, got {type(cfg).__name__}")
        self.config = cfg
        L = cfg.n_levels
        self.Qs = [int(cfg.at("Q", lvl)) for lvl in range(L)]  # per level
        self.Ks = [int(cfg.at("K", lvl)) for lvl in range(L)]
        self.Cs = [q * k for q, k in zip(self.Qs, self.Ks)]
        self.Q, self.K, self.C = self.Qs[0], self.Ks[0], self.Cs[0]  # level 1 (equal at every level by default)
        self.frame = 0  # learning frames so far (decay clock)
        self._build()

    # ---- construction --------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        self.generator = gen
        self.n_macs: list[int] = []
        self._u_mode: list[str] = []  # how each level gathers its U afferents (see _gather_u)
        src_macs: list[list[list[int]]] = []  # per level >= 2: lower macs in each RF
        shape: tuple[int, int] = cfg.input_shape
        for lvl, g in enumerate(cfg.grids):
            if cfg.rf_mode == "window":
                srcs = _window_sources(shape, g, cfg.windows[lvl])
            else:
                srcs = _radius_sources(shape, g, cfg.rf_radius[lvl])
            M = g * g
            C = self.Cs[lvl]
            self.n_macs.append(M)
            if lvl == 0:
                n_src = shape[0] * shape[1]
                u_lists, cap = srcs, [float(len(s)) for s in srcs]
                band = cfg.band_l1
            else:
                C_low = self.Cs[lvl - 1]
                n_src = self.n_macs[lvl - 1] * C_low
                src_macs.append(srcs)
                u_lists, cap = _expand_cells(srcs, C_low), [float(len(s) * self.Qs[lvl - 1]) for s in srcs]
                band = cfg.band_higher
            u_index = _pad(u_lists, n_src)  # (M, aU); index n_src is the constant-zero unit
            if M == 1 and u_index.shape[1] == n_src and bool((u_index[0] == torch.arange(n_src)).all()):
                self._u_mode.append("all")
            else:
                self._u_mode.append("padded" if bool((u_index == n_src).any()) else "plain")
            self.register_buffer(f"u_index_{lvl}", u_index)
            self.register_buffer(f"cap_{lvl}", torch.tensor(cap))
            self.register_buffer(f"band_{lvl}", torch.tensor(band))
            self.register_buffer(f"rows_U_{lvl}", torch.tensor([float(len(s)) for s in u_lists]))
            self.register_buffer(f"W_U_{lvl}", torch.zeros(M, u_index.shape[1], C))
            # horizontal RF: macs within Chebyshev radius on the same grid
            r = cfg.h_radius
            h_macs = [
                [
                    yy * g + xx
                    for yy in range(max(0, y - r), min(g, y + r + 1))
                    for xx in range(max(0, x - r), min(g, x + r + 1))
                ]
                for y in range(g)
                for x in range(g)
            ]
            h_lists = _expand_cells(h_macs, C)
            self.register_buffer(f"h_index_{lvl}", _pad(h_lists, M * C))
            self.register_buffer(f"rows_H_{lvl}", torch.tensor([float(len(s)) for s in h_lists]))
            n_h = max(len(s) for s in h_lists) if cfg.use_h else 0  # no H memory when H is off
            self.register_buffer(f"W_H_{lvl}", torch.zeros(M, n_h, C))
            for s in _SIGNALS:
                self.register_buffer(f"frozen_{s}_{lvl}", torch.zeros(M, dtype=torch.bool))
                # ones per mac in W_X (the saturation numerator), kept incrementally; rebuilt on load
                self.register_buffer(f"ones_{s}_{lvl}", torch.zeros(M, dtype=torch.float64), persistent=False)
                # links per cell (the "fewest_links" tie order), likewise (float64: exact integers)
                self.register_buffer(f"cell_ones_{s}_{lvl}", torch.zeros(M, C, dtype=torch.float64), persistent=False)
            prio = torch.rand(M, self.Qs[lvl], self.Ks[lvl], generator=gen)
            self.register_buffer(f"priority_{lvl}", prio)
            self.register_buffer(f"tie_base_{lvl}", prio.double() * 0.5 + _LINKS_CAP, persistent=False)
            self.register_buffer(f"theta_{lvl}", torch.full((M,), 0.5))
            self.register_buffer(f"learn_frames_{lvl}", torch.zeros(M, dtype=torch.long))
            self.register_buffer(f"active_frames_{lvl}", torch.zeros(M, dtype=torch.long))
            self.register_buffer(f"g_sum_{lvl}", torch.zeros(M, dtype=torch.float64))
            shape = (g, g)
        # top-down RF of level l: level-(l+1) macs whose U-RF contains the mac
        for lvl in range(cfg.n_levels):
            M, C = self.n_macs[lvl], self.Cs[lvl]
            if lvl + 1 < cfg.n_levels and cfg.use_d:
                C_up = self.Cs[lvl + 1]
                up = src_macs[lvl]
                d_macs = [[p for p, srcs in enumerate(up) if m in srcs] for m in range(M)]
                d_macs = [d if d else [] for d in d_macs]
                d_lists = _expand_cells(d_macs, C_up)
                n_up = self.n_macs[lvl + 1] * C_up
                if max(len(s) for s in d_lists) == 0:
                    d_lists = [[n_up]] * M
                    rows = [0.0] * M
                else:
                    rows = [float(len(s)) for s in d_lists]
                d_index = _pad(d_lists, n_up)
            else:
                d_index, rows = torch.zeros(M, 0, dtype=torch.long), [0.0] * M
            self.register_buffer(f"d_index_{lvl}", d_index)
            self.register_buffer(f"rows_D_{lvl}", torch.tensor(rows))
            self.register_buffer(f"W_D_{lvl}", torch.zeros(M, d_index.shape[1], C))
        if cfg.decay != "off":
            for lvl in range(cfg.n_levels):
                for s in _SIGNALS:
                    W = self._buf("W", s, lvl)
                    self.register_buffer(f"last_{s}_{lvl}", torch.full_like(W, -math.inf))
        self.__dict__.pop("_buf_cache", None)  # buffers registered after a lookup

    def _recount_ones(self) -> None:
        """Rebuild the per-mac ones counters from the weights (after loading a state dict)."""
        for lvl in range(self.config.n_levels):
            for s in _SIGNALS:
                W = self._buf("W", s, lvl)
                self._buf("ones", s, lvl).copy_(W.sum((1, 2)).double())
                self._buf("cell_ones", s, lvl).copy_(W.sum(1).double())
            prio = self._buf("priority", None, lvl)
            self._buf("tie_base", None, lvl).copy_(prio.double() * 0.5 + _LINKS_CAP)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # noqa: D102
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.__dict__.pop("_buf_cache", None)  # assign=True replaces the buffer objects
        self._recount_ones()
        return out

    def _tie_key(self, lvl: int, xs: dict[str, Tensor]) -> Tensor:
        """Tie keys ``(M, Q, K)`` (larger wins): the fixed priority, or for ``tie_order="fewest_links"``
        minus the cell's number of learned links over the present signals (priority breaks the rest)."""
        prio = self._buf("priority", None, lvl)
        if self.config.tie_order == "priority":
            return prio
        links = sum(self._buf("cell_ones", s, lvl) for s in xs)  # (M, C)
        return self._buf("tie_base", None, lvl) - links.view_as(prio)  # >= 0: fewer links wins

    def _buf(self, kind: str, signal: str | None, lvl: int) -> Tensor:
        cache = self.__dict__.get("_buf_cache")
        if cache is None:  # buffers by name (plain dict lookups; nn.Module.__getattr__ is slow)
            cache = self.__dict__["_buf_cache"] = dict(self.named_buffers())
        return cache[f"{kind}_{signal}_{lvl}" if signal else f"{kind}_{lvl}"]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # .to() / .cpu() replace the buffers
        self.__dict__.pop("_buf_cache", None)
        return super()._apply(fn, *args, **kwargs)

    # ---- input handling ------------------------------------------------------------------
    def _images(self, x: Tensor) -> Tensor:
        """-> binary float (B, H*W)."""
        x = torch.as_tensor(x)
        H, W = self.config.input_shape
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 3 or tuple(x.shape[1:]) != (H, W):
            raise UserError(f"Sparsey expects images of shape (B, {H}, {W}) or (B, 1, {H}, {W}), got {tuple(x.shape)}")
        dev = self.W_U_0.device
        return (x.to(dev).float() > self.config.binarize_threshold).float().flatten(1)

    def _sequences(self, frames: Tensor) -> Tensor:
        """-> binary float (B, T, H*W)."""
        frames = torch.as_tensor(frames)
        H, W = self.config.input_shape
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        if frames.dim() == 5 and frames.shape[2] == 1:
            frames = frames[:, :, 0]
        if frames.dim() != 4 or tuple(frames.shape[2:]) != (H, W):
            raise UserError(f"Sparsey expects sequences (T, {H}, {W}) or (B, T, {H}, {W}), got {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        return self._images(frames.reshape(B * T, H, W)).reshape(B, T, H * W)

    # ---- one level, one frame ------------------------------------------------------------
    def _weights(self, s: str, lvl: int) -> Tensor:
        W = self._buf("W", s, lvl)
        if self.config.decay == "off":
            return W
        cfg = self.config
        return _decayed(self._buf("last", s, lvl), self.frame, cfg.decay_c, cfg.decay_p)

    def _support(
        self,
        lvl: int,
        xs: dict[str, Tensor],
        subset: tuple[str, ...] | None = None,
        pis: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """V (B, M, C) from the available signals (steps 2-4); ``parts`` holds per signal X the
        normalised sums ``X``, their denominators ``X_denom`` and active-afferent counts ``X_pi``."""
        cfg = self.config
        lam = {"U": cfg.at("lambda_u", lvl), "H": cfg.at("lambda_h", lvl), "D": cfg.at("lambda_d", lvl)}
        V: Tensor | None = None
        parts: dict[str, Tensor] = {}
        used = [s for s in xs if subset is None or s in subset]
        for s in used:
            x = xs[s]
            pi = pis[s] if pis is not None and s in pis else x.sum(-1)  # (B, M) active afferents
            denom = pi.clamp_min(1.0)
            if s == "U" and cfg.norm_floor:
                denom = torch.maximum(denom, self._buf("band", None, lvl)[0] * self._buf("cap", None, lvl))
            # large sparse RFs: read only active rows (integer sums: exactly the dense product)
            sparse = cfg.decay == "off" and x.shape[-1] >= _SPARSE_MIN_AFFERENTS
            nz = torch.nonzero(x, as_tuple=True) if sparse else None
            X = normalised_sum(x, self._weights(s, lvl), denom, sparse=sparse, nonzero=nz)  # (B, M, C)
            if nz is not None and x.shape[0] == 1:
                parts[s + "_nz"] = torch.stack(nz[1:])  # (2, P) active (mac, afferent) pairs, for storing
            parts[s], parts[s + "_denom"], parts[s + "_pi"] = X, denom, pi
            term = X if lam[s] == 1.0 else X.pow(lam[s])
            if len(used) > 1:  # an absent signal (X = 0 there) is a factor 1 (alone it gates the mac off)
                term = term + (pi == 0).unsqueeze(-1).float()
            V = term if V is None else V * term
        assert V is not None
        return V, parts

    def _level_step(
        self, lvl: int, xs: dict[str, Tensor], *, learn: bool, update: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """CSA for all macs of level ``lvl`` on one frame.

        Args:
            xs: afferents per signal, ``(B, M, a_X)`` binary; "U" is required.
            learn: learning mode (probabilistic winners, step 9).
            update: with ``learn``, apply the Hebbian update (step 10; needs B == 1).

        Returns:
            codes ``(B, M, Q)`` (-1 inactive), G ``(B, M)``, active ``(B, M)`` bool.
        """
        cfg, Q, K = self.config, self.Qs[lvl], self.Ks[lvl]
        xU = xs["U"]
        piU = xU.sum(-1)  # (B, M)
        band, cap = self._buf("band", None, lvl), self._buf("cap", None, lvl)
        active = (piU >= band[0] * cap) & (piU <= band[1] * cap) & (piU > 0)  # step 1: gate
        V, parts = self._support(lvl, xs, pis={"U": piU})  # steps 2-4
        G = familiarity_from_support(V, Q, K) * active  # step 5, (B, M)
        prio = self._tie_key(lvl, xs)  # recognition's tie-break among max-V cells
        if learn:
            u = torch.rand((*G.shape, Q), generator=self.generator).to(V.device)  # (B, M, Q) uniforms
            frozen = self._buf("frozen", "U", lvl)  # (M,) past the critical period
            max_v = cfg.frozen_winners == "max_v"
            macs: Tensor | None = None  # macs that draw (None: all)
            if V.shape[0] == 1:  # one item: only active macs that may still learn draw (the rest recognise)
                macs = torch.nonzero(active[0] & ~frozen if max_v else active[0]).flatten()
            if macs is not None and macs.numel() == 0:
                winners = argmax_winners(V, prio, Q, K)  # every active mac frozen: recognition's winners
            elif macs is not None and macs.numel() < V.shape[1]:
                winners = argmax_winners(V, prio, Q, K)
                winners[:, macs] = self._draw(
                    lvl, xs, parts, V[:, macs], G[:, macs], u[:, macs], prio[macs], macs, None
                )
            else:
                frozen_m = frozen if max_v and bool(frozen.any()) else None
                winners = self._draw(lvl, xs, parts, V, G, u, prio, None, frozen_m)
        else:
            if cfg.backoff and len(xs) > 1:
                V, G = self._backoff(lvl, xs, V, G, active)
            winners = argmax_winners(V, prio, Q, K)
        codes = torch.where(active.unsqueeze(-1), winners, torch.full_like(winners, -1))
        if learn and update:
            if codes.shape[0] != 1:
                raise RuntimeError("learning is sequential: present one item at a time")
            self._hebbian_(lvl, xs, codes[0], active[0], V[0], G[0], parts)
        return codes, G, active

    def _draw(
        self,
        lvl: int,
        xs: dict[str, Tensor],
        parts: dict[str, Tensor],
        V: Tensor,
        G: Tensor,
        u: Tensor,
        prio: Tensor,
        macs: Tensor | None,
        frozen_m: Tensor | None,
    ) -> Tensor:
        """Steps 6-9 for the macs ``macs`` of ``lvl`` (``V``, ``G``, ``u``, ``prio`` already restricted
        to them; None = all macs): learning winners ``(B, m, Q)``. ``frozen_m``: macs among them that
        take recognition's winner."""
        cfg, Q, K = self.config, self.Qs[lvl], self.Ks[lvl]
        eta = expansivity(G, g_minus=cfg.g_minus, gamma=cfg.gamma, chi=cfg.chi, K=K)  # step 6
        infl = cfg.inflection
        if cfg.mu_form == "java":
            theta = self._buf("theta", None, lvl)
            infl = theta if macs is None else theta[macs]
        mu = win_likelihood(V, eta, slope=cfg.slope, inflection=infl, form=cfg.mu_form)  # step 7
        winners = sample_winners(cm_probabilities(mu, Q, K), u)  # steps 8-9
        if cfg.tie_break == "recall":
            drawn_key = None
            if cfg.tie_order == "fewest_links":  # storing adds the drawn cell's missing links
                cells = winners + torch.arange(Q, device=winners.device) * K  # (B, m, Q)
                sub = {k: (v if macs is None else v[:, macs]) for k, v in parts.items() if not k.endswith("_nz")}
                miss = 0.0
                for s in xs:
                    writable = ~self._buf("frozen", s, lvl)
                    writable = writable if macs is None else writable[macs]
                    miss = miss + _missing(sub, s, cells) * writable[None, :, None]
                if frozen_m is not None:
                    miss = miss * ~frozen_m[None, :, None]  # frozen macs: recognition's keys
                drawn_key = prio.flatten(-2).expand(*cells.shape[:-1], -1).gather(-1, cells) - miss
            return learning_winners(V, winners, prio, Q, K, drawn_key=drawn_key, frozen=frozen_m)
        if frozen_m is not None:
            return torch.where(frozen_m[None, :, None], argmax_winners(V, prio, Q, K), winners)
        return winners

    def _backoff(self, lvl: int, xs: dict[str, Tensor], V: Tensor, G: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """Section 2.4 backoff: first signal subset (HUD, HU, UD, HD, U, H, D) with G >= G_b."""
        cfg = self.config
        subsets = [s for s in _BACKOFF_ORDER if all(k in xs for k in s)]
        Vs, Gs = [], []
        for sub in subsets:
            Vi, _ = self._support(lvl, xs, sub)
            Vs.append(Vi)
            Gs.append(familiarity_from_support(Vi, self.Qs[lvl], self.Ks[lvl]) * active)
        Vst, Gst = torch.stack(Vs), torch.stack(Gs)  # (S, B, M, C), (S, B, M)
        ok = Gst >= cfg.g_backoff
        first = ok.float().argmax(0)  # first subset passing
        pick = torch.where(ok.any(0), first, Gst.argmax(0))  # (B, M)
        Vp = torch.gather(Vst, 0, pick[None, ..., None].expand(1, *Vst.shape[1:]))[0]
        Gp = torch.gather(Gst, 0, pick[None])[0]
        return Vp, Gp

    def _hebbian_(
        self,
        lvl: int,
        xs: dict[str, Tensor],
        code: Tensor,
        active: Tensor,
        V: Tensor,
        G: Tensor,
        parts: dict[str, Tensor],
    ) -> None:
        """Step 10: W_X[j, i] = 1 for active afferents j and winners i; then the freezing rule.

        ``parts[X + "_missing"]`` (active afferents not yet linked to each cell) counts the new
        ones without reading the weights back (binary weights; with decay they are read)."""
        cfg = self.config
        self.frame += 1
        frozen_u = self._buf("frozen", "U", lvl)
        learn_frames = self._buf("learn_frames", None, lvl)
        learn_frames += (active & ~frozen_u).long()
        self._buf("active_frames", None, lvl).add_(active.long())
        self._buf("g_sum", None, lvl).add_(G.double() * active)
        Q, K = self.Qs[lvl], self.Ks[lvl]
        cells_q = code + torch.arange(Q, device=code.device) * K  # (M, Q) winner cell ids
        for s, x in xs.items():
            frozen = self._buf("frozen", s, lvl)
            macs = torch.nonzero(active & ~frozen).flatten()  # macs allowed to learn this signal
            if macs.numel() == 0:
                continue
            if s + "_nz" in parts:  # active (mac, afferent) pairs found by the sparse product
                mac, j_i = parts[s + "_nz"]
                if macs.numel() < frozen.numel():
                    keep = (active & ~frozen)[mac]
                    mac, j_i = mac[keep], j_i[keep]
            else:
                m_i, j_i = torch.nonzero(x[0, macs] > 0, as_tuple=True)  # active afferents (pairs)
                mac = macs[m_i]  # (P,)
            if mac.numel() == 0:
                continue
            W = self._buf("W", s, lvl)  # (M, a, C), contiguous
            a, C = W.shape[1], W.shape[2]
            cc = cells_q[mac]  # (P, Q) winner cells
            flat = (((mac * a + j_i) * C).unsqueeze(1) + cc).reshape(-1)  # distinct (mac, afferent, cell) entries
            Wf = W.view(-1)
            if cfg.decay == "off":  # new ones per winner = its missing links (exact integer counts)
                miss = _missing(parts, s, cells_q.clamp_min(0)[None])[0].round()  # (M, Q)
                miss = miss * (active & ~frozen).unsqueeze(1)
            else:
                miss = torch.zeros(W.shape[0], Q, dtype=torch.float64, device=W.device)
                new = (Wf[flat] == 0).double().view(-1, Q)  # entries about to turn 0 -> 1, per (pair, CM)
                miss.index_add_(0, mac, new)
            Wf.index_fill_(0, flat, 1.0)
            self._buf("ones", s, lvl).add_(miss.sum(1))
            self._buf("cell_ones", s, lvl).scatter_add_(1, cells_q.clamp_min(0), miss)
            ones = self._buf("ones", s, lvl)
            if cfg.decay != "off":
                self._buf("last", s, lvl).view(-1)[flat] = float(self.frame)
            rows = self._buf("rows", s, lvl)[macs]
            sat = ones[macs] / (rows * C).clamp_min(1.0)  # freezing rule
            frozen[macs] = sat > cfg.level_freeze(lvl)
        if cfg.mu_form == "java":  # theta ratchets 0.5 -> 0.9 as the mac's mean V rises above 0.3
            mean_v = V.mean(-1)
            target = (0.5 + 0.4 * ((mean_v - 0.3) / 0.7)).clamp(0.5, 0.9)
            theta = self._buf("theta", None, lvl)
            theta.copy_(torch.where(active & (mean_v > 0.3), torch.maximum(theta, target), theta))

    # ---- frames through the hierarchy ----------------------------------------------------
    @torch.no_grad()
    def _run(
        self,
        seq: Tensor,
        *,
        learn: bool,
        sequence: bool,
        update: bool = True,
        stored_out: list[list[Tensor]] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Present ``seq`` (B, T, N) binary frames; returns per level codes (B, T, M, Q) and G (B, T, M).

        With ``stored_out`` (one list per level), appends per frame the ``(B, M)`` mask of macs that
        stored the frame: active, U weights not frozen before the frame, and G < 1.
        """
        cfg = self.config
        B, T, _ = seq.shape
        L = cfg.n_levels
        dev = seq.device
        zero = torch.zeros(B, 1, device=dev)
        prev_cells: list[Tensor | None] = [None] * L  # t-1 cell vectors, cleared at sequence start
        prev_codes: list[Tensor | None] = [None] * L
        prev_G: list[Tensor | None] = [None] * L
        out_codes: list[list[Tensor]] = [[] for _ in range(L)]
        out_G: list[list[Tensor]] = [[] for _ in range(L)]
        for t in range(T):
            src = seq[:, t]  # (B, N) sources of level 1, then the codes of the level below
            new_cells: list[Tensor] = []
            for lvl in range(L):
                P = cfg.level_persistence(lvl)
                if t % P != 0 and prev_codes[lvl] is not None:  # hold the code (persistence)
                    codes, G = prev_codes[lvl], prev_G[lvl]
                    if stored_out is not None:
                        stored_out[lvl].append(torch.zeros(B, self.n_macs[lvl], dtype=torch.bool, device=dev))
                else:
                    xs = {"U": self._gather_u(lvl, src, zero)}  # (B, M, aU)
                    stored = stored_out is not None
                    if sequence and cfg.use_h and prev_cells[lvl] is not None:
                        h_src = torch.cat([prev_cells[lvl], zero], 1)
                        xs["H"] = h_src[:, self._buf("h_index", None, lvl)]
                    if sequence and cfg.use_d and lvl + 1 < L and prev_cells[lvl + 1] is not None:
                        d_src = torch.cat([prev_cells[lvl + 1], zero], 1)
                        xs["D"] = d_src[:, self._buf("d_index", None, lvl)]
                    writable = ~self._buf("frozen", "U", lvl) if stored else None  # before this frame's update
                    codes, G, active = self._level_step(lvl, xs, learn=learn, update=update)
                    if stored_out is not None and writable is not None:
                        stored_out[lvl].append(active & writable & (G < 1.0))
                assert codes is not None and G is not None
                cells = codes_to_cells(codes, self.Ks[lvl])  # (B, M*C)
                new_cells.append(cells)
                prev_codes[lvl], prev_G[lvl] = codes, G
                out_codes[lvl].append(codes)
                out_G[lvl].append(G)
                src = cells
            prev_cells = list(new_cells)
        return [torch.stack(c, 1) for c in out_codes], [torch.stack(g, 1) for g in out_G]

    def _gather_u(self, lvl: int, src: Tensor, zero: Tensor) -> Tensor:
        """Bottom-up afferents ``(B, M, a_U)`` of ``lvl`` from its sources ``(B, N)``."""
        mode = self._u_mode[lvl]
        if mode == "all":  # one mac whose RF is every source, in order
            return src.unsqueeze(1)
        if mode == "padded":  # index N is the constant-zero unit
            src = torch.cat([src, zero], 1)
        return src[:, self._buf("u_index", None, lvl)]

    def _top(self, codes: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
        """Top-level codes (..., M, Q) -> (..., M*Q) and familiarity (..., M) -> (...)."""
        act = (codes >= 0).all(-1).float()
        fam = (G * act).sum(-1) / act.sum(-1).clamp_min(1.0)
        return codes.flatten(-2), fam

    # ---- public API ------------------------------------------------------------------------
    @torch.no_grad()
    def learn(self, x: Tensor) -> Tensor:
        """Store each image with one presentation, in order (single-trial learning).

        Returns:
            The learned top-level codes ``(B, M_top*Q)`` (``(B, Q)`` for one top mac).
        """
        imgs = self._images(x)
        out = []
        for i in range(imgs.shape[0]):  # sequential semantics: item i sees item i-1's weights
            codes, _ = self._run(imgs[i : i + 1, None], learn=True, sequence=False)
            out.append(codes[-1][:, 0])
        return torch.cat(out).flatten(1)

    @torch.no_grad()
    def present(
        self, x: Tensor, *, mode: Literal["learn", "recognize"] = "recognize", update_weights: bool = True
    ) -> tuple[list[Tensor], list[Tensor]]:
        """One CSA pass over static images (one mac step, at network scale).

        ``mode="learn"`` draws winners from rho; with ``update_weights=False`` nothing is stored
        and the batch is processed at once (used to measure SISC). ``mode="learn"`` with
        ``update_weights=True`` equals :meth:`learn` (items in order).

        Returns:
            Per level codes ``(B, M_l, Q)`` and G ``(B, M_l)``.
        """
        if mode not in ("learn", "recognize"):
            raise UserError(f"mode must be 'learn' or 'recognize', got {mode!r}")
        imgs = self._images(x)
        if mode == "learn" and update_weights:
            outs = [self._run(imgs[i : i + 1, None], learn=True, sequence=False) for i in range(imgs.shape[0])]
            L = len(self.n_macs)
            return (
                [torch.cat([o[0][lvl][:, 0] for o in outs]) for lvl in range(L)],
                [torch.cat([o[1][lvl][:, 0] for o in outs]) for lvl in range(L)],
            )
        codes, gs = self._run(imgs[:, None], learn=mode == "learn", sequence=False, update=update_weights)
        return [c[:, 0] for c in codes], [g[:, 0] for g in gs]

    @torch.no_grad()
    def encode_levels(self, x: Tensor, *, batch_size: int = 256) -> tuple[list[Tensor], list[Tensor]]:
        """Recognition-mode codes and G of every level: lists of ``(B, M_l, Q)`` and ``(B, M_l)``."""
        imgs = self._images(x)
        codes: list[list[Tensor]] = [[] for _ in self.n_macs]
        gs: list[list[Tensor]] = [[] for _ in self.n_macs]
        for i in range(0, imgs.shape[0], batch_size):
            c, g = self._run(imgs[i : i + batch_size, None], learn=False, sequence=False)
            for lvl in range(len(c)):
                codes[lvl].append(c[lvl][:, 0])
                gs[lvl].append(g[lvl][:, 0])
        return [torch.cat(c) for c in codes], [torch.cat(g) for g in gs]

    @torch.no_grad()
    def encode(self, x: Tensor, *, level: int | None = None, batch_size: int = 256) -> Tensor:
        """Retrieve codes (argmax V per CM, no learning).

        Args:
            x: Images.
            level: ``None`` -> top-level codes ``(B, M_top*Q)`` (``(B, Q)`` for the default single
                top mac); an int (0-based level) -> ``(B, M_l, Q)``. ``-1`` marks inactive macs.
        """
        codes, _ = self.encode_levels(x, batch_size=batch_size)
        if level is not None:
            return codes[level]
        return codes[-1].flatten(1)

    @torch.no_grad()
    def familiarity(self, x: Tensor, *, level: int | None = None, batch_size: int = 256) -> Tensor:
        """G of the top-level mac (mean over active top macs), ``(B,)`` in [0, 1]; with ``level``,
        per mac ``(B, M_l)``."""
        codes, gs = self.encode_levels(x, batch_size=batch_size)
        if level is not None:
            return gs[level]
        return self._top(codes[-1], gs[-1])[1]

    @torch.no_grad()
    def cells(self, x: Tensor, *, levels: str | Sequence[int] = "all", batch_size: int = 256) -> Tensor:
        """Binary vector of active cells ``(B, n_cells)`` of the chosen levels (see :meth:`codes_to_active`)."""
        codes, _ = self.encode_levels(x, batch_size=batch_size)
        return self.codes_to_active(codes, levels=levels)

    def codes_to_active(self, codes: list[Tensor], *, levels: str | Sequence[int] = "all") -> Tensor:
        """Concatenated binary cell vectors of per-level codes.

        Args:
            codes: Per level ``(..., M_l, Q_l)`` codes (-1 inactive).
            levels: ``"all"`` (every level), ``"top"``, or 0-based level indices.
        """
        if isinstance(levels, str):
            if levels not in ("all", "top"):
                raise UserError(f"readout levels must be 'all', 'top' or level indices, got {levels!r}")
            chosen = list(range(len(codes))) if levels == "all" else [len(codes) - 1]
        else:
            chosen = [int(v) for v in levels]
            if not chosen or not all(0 <= v < len(codes) for v in chosen):
                raise UserError(f"readout levels must be indices in [0, {len(codes)}), got {levels}")
        return torch.cat([codes_to_cells(codes[v], self.Ks[v]) for v in chosen], -1)

    def frozen_mask(self, level: int, signal: str = "U") -> Tensor:
        """``(M_l,)`` bool: macs of ``level`` whose ``signal`` weights are frozen (critical period over)."""
        return self._buf("frozen", signal, level).clone()

    @torch.no_grad()
    def learn_sequence(self, frames: Tensor) -> Tensor:
        """Learn sequences (single pass): ``(T, H, W)`` or ``(B, T, H, W)``; H links t-1 -> t.

        Returns:
            Learned top-level codes per frame ``(B, T, M_top*Q)``.
        """
        seq = self._sequences(frames)
        out = []
        for i in range(seq.shape[0]):
            codes, _ = self._run(seq[i : i + 1], learn=True, sequence=True)
            out.append(codes[-1].flatten(2))
        return torch.cat(out)

    @torch.no_grad()
    def learn_trace(self, x: Tensor) -> LearnTrace:
        """:meth:`learn` that also returns every level's learned codes, G and which macs stored
        each item (active, not frozen, G < 1): the ground truth of the recall metrics.

        Returns:
            A :class:`LearnTrace` of per level ``(B, M_l, Q_l)`` codes, ``(B, M_l)`` G and stored.
        """
        imgs = self._images(x)
        parts = [self._trace(imgs[i : i + 1, None], sequence=False) for i in range(imgs.shape[0])]
        return LearnTrace.cat(parts).frame(0)

    @torch.no_grad()
    def learn_sequence_trace(self, frames: Tensor) -> LearnTrace:
        """:meth:`learn_sequence` with the learned codes, G and stored masks of every level, per
        frame: ``(B, T, M_l, Q_l)``, ``(B, T, M_l)``, ``(B, T, M_l)``."""
        seq = self._sequences(frames)
        return LearnTrace.cat([self._trace(seq[i : i + 1], sequence=True) for i in range(seq.shape[0])])

    def _trace(self, seq: Tensor, *, sequence: bool) -> LearnTrace:
        stored: list[list[Tensor]] = [[] for _ in self.n_macs]
        codes, G = self._run(seq, learn=True, sequence=sequence, stored_out=stored)
        return LearnTrace(codes, G, [torch.stack(s, 1) for s in stored])

    @torch.no_grad()
    def encode_sequence_levels(self, frames: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Recognition over sequences: per level codes ``(B, T, M, Q)`` and G ``(B, T, M)``."""
        return self._run(self._sequences(frames), learn=False, sequence=True)

    @torch.no_grad()
    def encode_sequence(self, frames: Tensor) -> Tensor:
        """Recognition-mode top-level codes per frame ``(B, T, M_top*Q)``."""
        codes, _ = self.encode_sequence_levels(frames)
        return codes[-1].flatten(2)

    @torch.no_grad()
    def familiarity_sequence(self, frames: Tensor) -> Tensor:
        """Top-level G per frame ``(B, T)``."""
        codes, gs = self.encode_sequence_levels(frames)
        return self._top(codes[-1], gs[-1])[1]

    # ---- diagnostics -----------------------------------------------------------------------
    def saturation(self, level: int, signal: str = "U") -> Tensor:
        """Per mac fraction of ones among the weight rows in its RF, ``(M,)``."""
        W, rows = self._buf("W", signal, level), self._buf("rows", signal, level)
        return W.sum((1, 2)) / (rows * self.Cs[level]).clamp_min(1.0)

    def stats_per_mac(self, level: int) -> dict[str, Tensor]:
        """Per mac of ``level``: ``mean_G`` while learning, U ``saturation``, ``learn_frames``
        (frames it stored before freezing) and ``frozen``; G near 1 early or saturation above ~0.3
        signals collapse (every input looks familiar)."""
        act = self._buf("active_frames", None, level).clamp_min(1)
        return {
            "mean_G": (self._buf("g_sum", None, level) / act).float(),
            "saturation": self.saturation(level),
            "learn_frames": self._buf("learn_frames", None, level).clone(),
            "frozen": self.frozen_mask(level),
        }

    def stats(self) -> dict[str, float]:
        """Per level: mean/max saturation, frozen fraction, mean G while learning, learning frames."""
        out: dict[str, float] = {}
        for lvl in range(self.config.n_levels):
            sat = self.saturation(lvl)
            act = self._buf("active_frames", None, lvl)
            g = self._buf("g_sum", None, lvl)
            out[f"L{lvl + 1}_saturation_mean"] = float(sat.mean())
            out[f"L{lvl + 1}_saturation_max"] = float(sat.max())
            out[f"L{lvl + 1}_frozen_frac"] = float(self._buf("frozen", "U", lvl).float().mean())
            out[f"L{lvl + 1}_mean_G_learning"] = float(g.sum() / act.sum().clamp_min(1))
            out[f"L{lvl + 1}_learn_frames_mean"] = float(self._buf("learn_frames", None, lvl).float().mean())
        return out

    def memory_bits(self) -> int:
        """Number of binary weights (the memory size; 1 bit each)."""
        return sum(int(self._buf("W", s, lvl).numel()) for lvl in range(self.config.n_levels) for s in _SIGNALS)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Atomically write config, weights, freezing state and generator state."""
        from ..engine.checkpoint import save_checkpoint

        state = {k: v.cpu() for k, v in self.state_dict().items()}
        save_checkpoint(
            {
                "format": "sparseforge.sdr.Sparsey/1",
                "config": self.config.to_dict(),
                "state": state,
                "frame": self.frame,
                "generator": self.generator.get_state(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sparsey:
        """Read a network written by :meth:`save`."""
        from ..engine.checkpoint import load_checkpoint

        if not os.path.exists(path):
            raise DataFormatError(f"no Sparsey checkpoint at {path}; check the path")
        blob = load_checkpoint(path)
        if not isinstance(blob, dict) or blob.get("format") != "sparseforge.sdr.Sparsey/1":
            raise DataFormatError(f"{path} is not a Sparsey checkpoint (written by Sparsey.save)")
        net = cls(SparseyConfig.from_dict(blob["config"]))
        net.load_state_dict(blob["state"])
        net.frame = int(blob["frame"])
        net.generator.set_state(blob["generator"])
        return net

    def extra_repr(self) -> str:
        return f"levels={self.n_macs} macs, Q={self.Qs}, K={self.Ks}, input={self.config.input_shape}"
