"""Calibrating a regularization strength to a target sparsity (geometric bracketing search).

Regularizers reach a sparsity that depends on their strength λ, not a sparsity one asks for. To compare
them at equal sparsity (a fair baseline, e.g. group lasso against WGSEF's k-level sparsity), train with a
few λ values and keep the one whose *natural* sparsity (before any projection) is closest to the target:
λ grows by ``factor`` while the sparsity is below the target and shrinks while above, and once the target
is bracketed the next λ is the geometric mean of the bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass
class Calibration:
    """The outcome of :func:`calibrate_strength`: the closest trial and every trial's figures."""

    weight: float
    natural: float
    result: Any
    trials: list[dict[str, Any]] = field(default_factory=list)


def calibrate_strength(
    train: Callable[[float, int], tuple[float, Any]],
    target: float,
    *,
    start: float,
    steps: int,
    factor: float = 4.0,
    record: Callable[[Any], dict[str, Any]] | None = None,
) -> Calibration:
    """Search λ so that ``train(λ, i) -> (natural sparsity, result)`` comes closest to ``target``.

    Args:
        train: trains once with strength λ (trial index i) and returns the sparsity reached on its own.
        target: the sparsity wanted (fraction removed).
        start: the first λ.
        steps: number of trainings.
        factor: multiplicative step before the target is bracketed.
        record: extra figures of a trial's result for the trial table.
    """
    if steps < 1 or start <= 0 or factor <= 1:
        raise UserError(f"calibration needs steps >= 1, start > 0 and factor > 1 (got {steps}, {start}, {factor})")
    lo = hi = None
    weight = start
    best: Calibration | None = None
    trials: list[dict[str, Any]] = []
    for i in range(steps):
        natural, result = train(weight, i)
        trials.append({"lambda": weight, "natural_sparsity": natural, **(record(result) if record else {})})
        if best is None or abs(natural - target) < abs(best.natural - target) - 1e-9:
            best = Calibration(weight, natural, result)
        if natural < target:
            lo = weight
        else:
            hi = weight
        weight = math.sqrt(lo * hi) if (lo and hi) else (weight * factor if hi is None else weight / factor)
    assert best is not None
    best.trials = trials
    return best


__all__ = ["Calibration", "calibrate_strength"]
