"""The ``compressor`` family: one protocol every compression method implements, so one loop runs them all.

A compressor is given a model, ``targets`` (module names or patterns, :func:`sparseforge.select`), a
*structure* (``"weights"``: single weights; or a grouping such as ``"filter"`` / ``"channel"`` of
:mod:`sparseforge.groups`) and a *level* (the fraction removed: of the target weights, globally, for
``"weights"``; of the groups of every target layer for a grouping). It provides its training hooks and, at
the end, masks that remove **exactly** that level by its own importance (a top-k projection), together with
how close it came on its own before that projection (its *natural* sparsity)::

    c = make_compressor("wgsef_filter", level=0.5, targets=names, strength=10.0)
    model = c.prepare(model, batch=batch)              # may score at init (SNIP) or swap layers (Turbo-VBI)
    opt = c.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), model)
    ms = masks.attach(model, m, opt) if (m := c.training_masks(model)) else None
    fit(model, data, opt, penalty_fn=c.penalty_fn(), callbacks=c.callbacks(model), ...)
    out = c.finish(model, batch=batch)                  # Compressed(model, masks, natural_sparsity, level)

A new compressor is one class: override :meth:`Compressor.importance` (and the hooks it needs) and register it
with :func:`register_compressor`. Every registered scorer (plugins included) is also a compressor that prunes
at initialisation (:func:`compressor_names` lists both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UserError
from ..groups import GROUPINGS, expand_group_mask, group_norms, n_groups
from ..pruning.prune import Masks, n_keep_for, topk_masks
from ..registry import METHODS, register_family, register_method
from ..targeting import Targets, distinct_weights, resolve_targets, target_parameters

STRUCTURED_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass
class Compressed:
    """What a compressor hands back: the (plain) model, exact masks, and how far it got on its own.

    Attributes:
        model: the trained model with plain layers (a Bayesian or reparametrised method bakes its own).
        masks: ``{param_name: bool}`` (True = kept) removing exactly ``level`` of the structure.
        natural_sparsity: fraction of the structure (weights or groups) already zero before the projection.
        level: the level asked for.
        structure: ``"weights"`` or the grouping.
        extra: method-specific figures (calibrated λ, posterior statistics, ...).
    """

    model: nn.Module
    masks: Masks
    natural_sparsity: float
    level: float
    structure: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Compressor:
    """Base class of the ``compressor`` family (defaults: no training hooks, magnitude importance).

    Args:
        level: fraction removed, in [0, 1).
        targets: module names / patterns (default: every Conv2d/Linear for a grouping, every weight otherwise;
            classifier included).
        **options: the method's options (fields of its ``Options`` dataclass; unknown keys are ignored so one
            caller can offer the same options to every method).
    """

    name: ClassVar[str] = ""
    structure: ClassVar[str] = "weights"
    description: ClassVar[str] = ""
    Options: ClassVar[type | None] = None
    #: True for methods that train the network themselves towards sparsity (regularizers).
    regularized: ClassVar[bool] = False
    #: the option whose value sets how strongly the method sparsifies (``"strength"`` for a prox, ``"kl_weight"``
    #: for Turbo-VBI), which a caller may calibrate so the natural sparsity comes close to the level; None when the
    #: level is set directly (WGSEF's k) or the method does not train towards sparsity.
    strength_option: ClassVar[str | None] = None
    #: True when training has no hooks at all (the method acts on a densely trained model), so a caller can train
    #: the dense model once and start every such method from it.
    dense_training: ClassVar[bool] = False
    #: True when :meth:`finish` returns an already smaller model (no masks left to compact).
    physically_pruned: ClassVar[bool] = False

    def __init__(self, *, level: float, targets: Targets = None, **options: Any) -> None:
        level = float(level)
        if not 0.0 <= level < 1.0:
            raise UserError(f"compression level (fraction removed) must be in [0, 1), got {level}")
        if self.structure != "weights" and self.structure not in GROUPINGS:
            raise UserError(f"structure must be 'weights' or a grouping ({', '.join(GROUPINGS)}), got {self.structure!r}")
        self.level, self.targets = level, targets
        if self.Options is not None:
            names = {f.name for f in dataclasses.fields(self.Options)}
            self.options = self.Options(**{k: v for k, v in options.items() if k in names})
        else:
            self.options = None
        self.modules: list[str] = []

    @classmethod
    def available(cls) -> bool:
        """Whether the method can run here (an optional dependency may be missing)."""
        return True

    # -- resolution of targets ---------------------------------------------------------------
    @property
    def structured(self) -> bool:
        return self.structure != "weights"

    def resolve(self, model: nn.Module) -> list[str]:
        """The target module names on ``model`` (structured: Conv2d / Linear only)."""
        types = STRUCTURED_TYPES if self.structured else None
        self.modules = resolve_targets(model, self.targets, types=types, family=f"compressor {self.name!r}")
        return self.modules

    def weights(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """``{name: weight}`` of the target modules (parameters with >= 2 dims)."""
        if not self.modules:
            self.resolve(model)
        if self.structured:
            return {f"{n}.weight" if n else "weight": model.get_submodule(n).weight
                    for n in distinct_weights(model, self.modules)}
        return target_parameters(model, self.modules)

    # -- hooks (all optional) ----------------------------------------------------------------
    def prepare(self, model: nn.Module, *, batch: Any = None) -> nn.Module:
        """Called on the initialised model before training; returns the model to train."""
        self.resolve(model)
        return model

    def training_masks(self, model: nn.Module) -> Masks | None:
        """Masks to keep applied during training (pruning at init), or None."""
        return None

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups (a regularizer takes weight decay off the tensors it regularizes)."""
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer to train with (a prox method wraps it)."""
        return optimizer

    def penalty_fn(self) -> Callable[[nn.Module], torch.Tensor] | None:
        """A term added to the loss at every step, or None."""
        return None

    def callbacks(self, model: nn.Module) -> list[Any]:
        """``engine.Callback`` objects run during training (schedules, message passing), or []."""
        return []

    # -- the end -----------------------------------------------------------------------------
    def importance(self, model: nn.Module, *, batch: Any = None) -> dict[str, torch.Tensor]:
        """Per-weight importance of the target weights (higher = kept); default ``|w|``."""
        return {n: p.detach().abs() for n, p in self.weights(model).items()}

    def group_importance(self, model: nn.Module, *, batch: Any = None) -> dict[str, torch.Tensor]:
        """Per-group importance ``{weight name: (n_groups,)}``; default the L2 norm of the element importance."""
        imp = self.importance(model, batch=batch)
        return {n: group_norms(v, self.structure) for n, v in imp.items()}

    def final_model(self, model: nn.Module) -> nn.Module:
        """The plain model the masks apply to (methods that swapped layers bake them here)."""
        return model

    def finish(self, model: nn.Module, *, batch: Any = None) -> Compressed:
        """Exact masks at ``level`` by the method's own importance, and its natural sparsity."""
        plain = self.final_model(model)
        if plain is not model:
            self.modules = []
        w = self.weights(plain)
        if self.structured:
            imp = self.group_importance(plain, batch=batch)
            masks = group_masks(plain, imp, self.level, self.structure)
            natural = natural_group_sparsity(w, self.structure)
        else:
            imp = self.importance(plain, batch=batch)
            masks = topk_masks(imp, self.level, scope="global")
            total = sum(p.numel() for p in w.values())
            natural = sum(int((p == 0).sum()) for p in w.values()) / max(total, 1)
        return Compressed(plain, masks, natural, self.level, self.structure, self.extra(plain))

    def extra(self, model: nn.Module) -> dict[str, Any]:
        return {}


def natural_group_sparsity(weights: dict[str, torch.Tensor], grouping: str) -> float:
    """Fraction of all groups of ``weights`` that are entirely zero."""
    from ..groups import zero_groups

    total = sum(n_groups(w.shape, grouping) for w in weights.values())
    zero = sum(int(zero_groups(w.detach(), grouping).sum()) for w in weights.values())
    return zero / max(total, 1)


def group_masks(model: nn.Module, importance: dict[str, torch.Tensor], level: float, grouping: str) -> Masks:
    """Per-layer masks removing exactly ``round(level * m_l)`` groups (at least one kept) by importance.

    Filter / row groups also mask the layer's bias entry, so a removed filter is an all-zero group that
    :func:`sparseforge.compact` removes physically. Ties: the lowest group index is kept first.
    """
    params = dict(model.named_parameters())
    out: Masks = {}
    for name, imp in importance.items():
        w = params[name]
        m = n_groups(w.shape, grouping)
        keep_n = max(1, n_keep_for(m, level))
        order = torch.argsort(imp.detach().double().reshape(-1).cpu(), descending=True, stable=True)
        keep = torch.zeros(m, dtype=torch.bool)
        keep[order[:keep_n]] = True
        out[name] = expand_group_mask(keep, grouping, w.shape).to(torch.bool)
        bias_name = name[: -len("weight")] + "bias" if name.endswith("weight") else None
        if grouping in ("filter", "row") and bias_name in params:
            out[bias_name] = keep.clone()
    return out


def removed_fraction(masks: Masks, model: nn.Module, structure: str, weights: list[str] | None = None) -> float:
    """The fraction of the structure that ``masks`` remove (weights, or groups of the masked weights)."""
    params = dict(model.named_parameters())
    names = weights if weights is not None else [n for n in masks if params[n].dim() >= 2]
    if structure == "weights":
        total = sum(masks[n].numel() for n in names)
        return 1.0 - sum(int(masks[n].sum()) for n in names) / max(total, 1)
    from ..groups import group_view

    total = removed = 0
    for n in names:
        g = group_view(masks[n].to(torch.float32), structure)  # (m, size)
        total += g.shape[0]
        removed += int((g.amax(dim=1) == 0).sum())
    return removed / max(total, 1)


# ----------------------------------------------------------------------------- registration
def register_compressor(name: str, *, structure: str = "weights", **meta: Any) -> Callable[[type], type]:
    """Register a :class:`Compressor` subclass as ``name`` (a variant with ``structure`` fixed)."""

    def deco(cls: type) -> type:
        variant = type(cls.__name__, (cls,), {"name": name, "structure": structure, "__doc__": cls.__doc__,
                                              "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}[{name}]"})
        register_method(name, family="compressor", structure=structure, **meta)(variant)
        return cls

    return deco


def _coerce(obj: Any) -> type:
    if isinstance(obj, type) and issubclass(obj, Compressor):
        return obj
    raise UserError(f"a compressor is a Compressor subclass, got {type(obj).__name__}")


register_family("compressor", "compression methods for the compare leaderboard: training hooks + exact masks at a level",
                coerce=_coerce)


def compressor_names() -> list[str]:
    """Registered compressors, plus every scorer without a compressor of its name (pruning at init)."""
    own = set(METHODS.names(family="compressor"))
    return sorted(own | set(METHODS.names(family="scorer")))


def get_compressor(name: str) -> type[Compressor]:
    """The compressor class of ``name`` (a scorer name gives a pruning-at-init compressor with that scorer)."""
    if name in METHODS.names(family="compressor"):
        return METHODS.resolve(name, "compressor")
    if name in METHODS.names(family="scorer"):
        from .builtin import PruneAtInit

        return type(f"PruneAtInit[{name}]", (PruneAtInit,), {"name": name, "scorer": name, "structure": "weights"})
    choices = ", ".join(compressor_names())
    raise UserError(f"unknown compressor {name!r}; choose one of: {choices}")


def make_compressor(name: str, *, level: float, targets: Targets = None, **options: Any) -> Compressor:
    """An instance of compressor ``name`` at ``level`` on ``targets`` with the options it defines."""
    return get_compressor(name)(level=level, targets=targets, **options)


__all__ = [
    "Compressed",
    "Compressor",
    "compressor_names",
    "get_compressor",
    "group_masks",
    "make_compressor",
    "natural_group_sparsity",
    "register_compressor",
    "removed_fraction",
]
