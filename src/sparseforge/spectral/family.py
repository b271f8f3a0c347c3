"""The ``spectral`` method family: what a spectral / low-rank training method is to the library.

A method is one :class:`SpectralMethod` record registered with ``register_method(name, family="spectral")``:
the layer class it swaps ``nn.Linear`` modules for (built by the layer's ``from_linear(linear, rank, **opts)``
and turned back into a plain ``nn.Linear`` by its ``merge()``), an optional controller hooked on the optimizer
(periodic work: SST's resampling, ReLoRA's merges), how the layer's own parameters go into optimizer groups,
an optional optimizer of its own (GaLore's projected Adam) and the analytic count of trainable parameters.
:func:`sparseforge.spectral.convert`, :func:`~sparseforge.spectral.merge`,
:func:`~sparseforge.spectral.param_groups`, :func:`~sparseforge.spectral.build_optimizer` and
:func:`~sparseforge.spectral.attach` dispatch through these records, so a new method is one file::

    class MyLinear(nn.Module):
        @classmethod
        def from_linear(cls, linear, rank, **opts): ...
        def merge(self) -> nn.Linear: ...

    register_method("mine", family="spectral")(SpectralMethod("my low-rank layer", layer=MyLinear))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..registry import register_family

#: Roles a method gives its layer's parameters in :func:`sparseforge.spectral.param_groups`:
#: ``"vector"`` (lr, no weight decay: renormalised singular vectors, LoRA factors), ``"sigma"`` (lr, decay only
#: when asked), ``"projected"`` (a dense matrix its own optimizer updates in a low-rank space: lr × the dense
#: linear lr scale, decay, plus the extras the method returns, e.g. ``rank``), ``"dense"`` (like nn.Linear).
ROLES = ("vector", "sigma", "projected", "dense")


@dataclass(frozen=True)
class SpectralMethod:
    """A registered spectral method (the ``spectral`` family's protocol object).

    Attributes:
        description: one line for ``sparseforge list methods``.
        layer: the layer class that replaces ``nn.Linear`` (None: the model is left as it is, e.g. ``full``).
        controller: ``controller(model, optimizer, **opts)`` hooked on ``optimizer.step`` (None: no periodic work).
        controller_defaults: options the controller gets unless the caller sets them (ReLoRA*: ``prune=1``).
        param_roles: ``param_roles(layer) -> {own parameter name: role or (role, extras)}`` (see :data:`ROLES`);
            None: every parameter is treated as an ``nn.Linear``'s.
        optimizer: ``optimizer(param_groups, **adam_kwargs)`` when the method needs its own (GaLore).
        trainable: ``trainable(m, n, r, bias) -> int``, trainable elements of one m x n layer at rank r.
    """

    description: str
    layer: type[nn.Module] | None = None
    controller: Callable[..., Any] | None = None
    controller_defaults: Mapping[str, Any] = field(default_factory=dict)
    param_roles: Callable[[nn.Module], Mapping[str, Any]] | None = None
    optimizer: Callable[..., torch.optim.Optimizer] | None = None
    trainable: Callable[[int, int, int, bool], int] | None = None

    def convert_layer(self, linear: nn.Linear, rank: int, **opts: Any) -> nn.Module:
        if self.layer is None:
            return linear
        return self.layer.from_linear(linear, rank, **opts)  # type: ignore[attr-defined]

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, **opts: Any) -> Any:
        if self.controller is None:
            return None
        return self.controller(model, optimizer, **{**self.controller_defaults, **opts})

    def trainable_params(self, m: int, n: int, r: int, *, bias: bool = True) -> int:
        if self.trainable is not None:
            return int(self.trainable(m, n, r, bias))
        return m * n + (m if bias else 0)

    @classmethod
    def coerce(cls, obj: Any) -> SpectralMethod:
        """A record for a registered object: a SpectralMethod, or a layer class with ``from_linear``/``merge``."""
        if isinstance(obj, SpectralMethod):
            return obj
        if isinstance(obj, type) and hasattr(obj, "from_linear") and hasattr(obj, "merge"):
            return cls(obj.__doc__.strip().splitlines()[0] if obj.__doc__ else obj.__name__, layer=obj)
        raise UserError(f"a spectral method is a SpectralMethod record or a layer class with from_linear() and "
                        f"merge(), got {type(obj).__name__}")


register_family("spectral", "spectral / low-rank training: a layer swapped for nn.Linear, optimizer hooks, merge()",
                coerce=SpectralMethod.coerce)


def spectral_methods() -> dict[str, SpectralMethod]:
    """Every registered spectral method's record, by name."""
    from ..registry import METHODS

    return {n: METHODS.resolve(n, "spectral") for n in METHODS.names(family="spectral")}


def record_of(module: nn.Module) -> SpectralMethod | None:
    """The record of the spectral method whose layer ``module`` is (None for any other module)."""
    for rec in spectral_methods().values():
        if rec.layer is not None and type(module) is rec.layer:
            return rec
    return None


__all__ = ["ROLES", "SpectralMethod", "record_of", "spectral_methods"]
