"""Base class of proximal operators and the tensor-level group plumbing they share.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921 (its groups and group-wise proximal maps).

A :class:`ProxOperator` holds hyperparameters (the regularization weight λ, a grouping, k, ...)
and maps a weight tensor θ to prox_{γ R}(θ) in place, with γ = step × λ. Groups are
the rows of :func:`sparseforge.groups.group_view`; for ``filter``/``row`` groupings an operator
may also carry *coupled* 1-D tensors (the layer's bias and the following BatchNorm's γ and β,
one entry per output unit, option ``include_coupled``) that belong to the same groups:

    z_j(θ)² = ‖θ_{g_j}‖² + Σ_c c_j²          (lifted group norm)
    prox:  θ_{g_j} ← s_j θ_{g_j},  c_j ← s_j c_j   (every prox here is a per-group rescaling)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from ..errors import UserError

COUPLED_GROUPINGS = ("filter", "row")


def check_weight(weight: float, name: str = "weight") -> float:
    w = float(weight)
    if not (w >= 0.0 and w != float("inf")):
        raise UserError(f"{name} (regularization strength) must be a finite number >= 0, got {weight!r}")
    return w


def check_step(step: float) -> float:
    s = float(step)
    if not (s >= 0.0 and s != float("inf")):
        raise UserError(f"step (prox step size) must be a finite number >= 0, got {step!r}")
    return s


def scale_shape(grouping: str, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """Shape that a (n_groups,) vector takes so that it broadcasts over a weight of ``shape``."""
    from ..groups import n_groups

    n_groups(shape, grouping)  # validates grouping vs. shape (one-line UserError)
    nd = len(shape)
    if grouping == "element":
        return tuple(shape)
    if grouping == "layer":
        return (1,) * nd
    if grouping in ("row", "filter"):
        return (int(shape[0]),) + (1,) * (nd - 1)
    if grouping in ("column", "channel"):
        return (1, int(shape[1])) + (1,) * (nd - 2)
    return (1, *map(int, shape[1:]))  # shape: one (in, kh, kw) position across all filters


def lifted_sq_norms(
    w: torch.Tensor, grouping: str, coupled: Sequence[torch.Tensor] = (), *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Squared group norms (n_groups,) of ``w`` plus the coupled tensors' entries.

    Returned in ``dtype`` (default: ``w``'s). The envelope operators ask for float64 (their kernel works in float64). The norms are computed in ``w``'s own precision (fast) and only
    recomputed in ``dtype`` when that precision could not represent them: squares of tiny or huge
    float32 entries underflow to 0 or overflow to inf and would change which groups survive.
    """
    from ..groups import group_view

    g = group_view(w, grouping)  # (m, group_size)
    if dtype is not None and torch.finfo(dtype).bits > torch.finfo(g.dtype).bits:
        sq = (g * g).sum(dim=1)  # (m,) in w's precision
        tiny = float(torch.finfo(g.dtype).tiny) * 2**20  # squares this small have lost precision
        huge = float(torch.finfo(g.dtype).max) / 2**20
        unsafe = False
        if sq.numel():
            lo, hi = (float(v) for v in torch.aminmax(sq))  # one pass; nan/inf show up in hi
            unsafe = not hi <= huge
            if not unsafe and lo < tiny:  # zero groups (pruned) are fine; underflowed ones are not
                zero = sq == 0
                nz = sq[~zero]
                unsafe = (nz.numel() > 0 and float(nz.min()) < tiny) or bool(g[zero].any())
        sq = (g.to(dtype) ** 2).sum(dim=1) if unsafe else sq.to(dtype)
    else:
        if dtype is not None:
            g = g.to(dtype)
        sq = (g * g).sum(dim=1)
    for c in coupled:
        sq = sq + c.reshape(-1).to(sq.dtype) ** 2
    return sq


def lifted_norms(w: torch.Tensor, grouping: str, coupled: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Group norms (n_groups,) of ``w`` with its coupled tensors; differentiable."""
    from ..groups import group_norms

    if not coupled:
        return group_norms(w, grouping)
    return lifted_sq_norms(w, grouping, coupled).clamp_min(0).sqrt()


def scale_groups_(w: torch.Tensor, scale: torch.Tensor, grouping: str, coupled: Sequence[torch.Tensor] = ()) -> None:
    """In place: multiply every group of ``w`` (and of the coupled tensors) by ``scale[j]``."""
    s = scale.to(w.dtype)
    w.mul_(s.reshape(scale_shape(grouping, w.shape)))
    for c in coupled:
        c.mul_(s.to(c.dtype).reshape(c.shape))


def check_coupled(grouping: str, coupled: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    coupled = tuple(coupled or ())
    if coupled and grouping not in COUPLED_GROUPINGS:
        raise UserError(f"coupled tensors (bias/BN) only fit groupings {COUPLED_GROUPINGS}, not grouping={grouping!r}")
    for c in coupled:
        if c.dim() != 1:
            raise UserError(f"coupled tensors must be 1-D (one entry per group), got shape {tuple(c.shape)}")
    return coupled


class ProxOperator(ABC):
    """A regularizer R with strength ``weight`` (λ) and its proximal map.

    Subclasses implement :meth:`penalty` (λ·R(θ), a differentiable 0-d tensor) and
    :meth:`prox_` (θ ← prox_{γR}(θ) in place with γ = step × λ). ``weight == 0`` (or
    ``step == 0``) must leave θ bit-for-bit unchanged. Every registered subclass must be
    constructible as ``cls(weight=...)`` (the tests iterate the registry that way).

    Attributes:
        weight: regularization strength λ (>= 0).
        joint: when True, :class:`~sparseforge.optim.ProximalOptimizer` hands all parameters
            mapped to this same operator object to :meth:`prox_tensors_` at once (used by
            ``grouping="layer"`` where k counts tensors).
    """

    joint: ClassVar[bool] = False

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = check_weight(weight)

    # -- the prox family's constructor from a layer ----------------------------------------
    #: keyword names :meth:`from_layer` passes on to the constructor (besides ``weight``)
    layer_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_layer(cls, layer: torch.nn.Module, *, weight: float, grouping: str = "filter",
                   coupled: Sequence[torch.Tensor] = (), **options: object) -> ProxOperator:
        """The operator for one layer's weight (how :func:`sparseforge.optim.build_prox_map` builds it).

        ``grouping`` and ``coupled`` (the layer's bias, a following BatchNorm's γ/β) are passed when the class
        takes them; of ``options`` only the names in :attr:`layer_options` are passed (so one call site can
        offer ``k=...`` to every operator and each takes what it defines).
        """
        import inspect

        params = inspect.signature(cls.__init__).parameters
        kw: dict[str, object] = {"weight": weight}
        if "grouping" in params:
            kw["grouping"] = grouping
        if "coupled" in params and coupled:
            kw["coupled"] = tuple(coupled)
        kw.update({k: v for k, v in options.items() if k in cls.layer_options})
        return cls(**kw)  # type: ignore[arg-type]

    @classmethod
    def from_layers(cls, layers: Sequence[torch.nn.Module], *, weight: float, grouping: str = "filter",
                    coupled: Sequence[Sequence[torch.Tensor]] | None = None,
                    **options: object) -> list[ProxOperator]:
        """Operators for several layers: one per layer (joint operators override this to share one object)."""
        coupled = coupled if coupled is not None else [()] * len(layers)
        return [cls.from_layer(m, weight=weight, grouping=grouping, coupled=c, **options) for m, c in zip(layers, coupled)]

    # -- single tensor -------------------------------------------------------------------
    @abstractmethod
    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """The penalty value of one tensor (a 0-d tensor, without the weight λ applied twice)."""

    @abstractmethod
    def prox_(self, w: torch.Tensor, step: float) -> torch.Tensor:
        """Apply the proximal operator with step ``step * weight`` to ``w`` in place; returns ``w``."""

    def gamma(self, step: float) -> float:
        return check_step(step) * self.weight

    # -- several tensors (joint operators override) ----------------------------------------
    def penalty_tensors(self, ws: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum((self.penalty(w) for w in ws), torch.zeros(()))

    def prox_tensors_(self, ws: Sequence[torch.Tensor], step: float) -> None:
        for w in ws:
            self.prox_(w, step)

    # -- hard projection at the end of training (only k-level operators do something) ------
    def project_tensors_(self, ws: Sequence[torch.Tensor]) -> None:
        return None

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({keys})"


def _register_family() -> None:
    from ..registry import register_family

    register_family("prox", "regularizers with a proximal map: ProxOperator subclasses, built per layer with from_layer()")


_register_family()
