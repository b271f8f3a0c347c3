"""Schedules of a regularization weight over training: ρ_t in [0, 1] multiplies λ at step t.

Proximal training (Refael, Arbel & Huleihel, "Learning k-Level Structured Sparse Neural Networks Using
Group Envelope Regularization", arXiv:2212.12921) takes the prox step γ_t = η_t λ ρ_t; a ramp of ρ_t from
0 lets the network fit first, then shrinks the groups (a reconstructed default of our WGSEF recipe).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError


def linear_ramp(total_steps: int, ramp_frac: float, warmup_frac: float = 0.0) -> Callable[[int], float]:
    """ρ_t: 0 for the first ``warmup_frac`` of ``total_steps``, then linear to 1 over ``ramp_frac`` of them, then 1.

    ``ramp_frac = 0`` jumps to 1 at the end of the warm-up. The step count t is 0-based (the prox call index).
    """
    if total_steps < 1:
        raise UserError(f"total_steps must be >= 1, got {total_steps}")
    if not (0.0 <= ramp_frac <= 1.0 and 0.0 <= warmup_frac <= 1.0):
        raise UserError(f"ramp_frac and warmup_frac must be in [0, 1], got {ramp_frac}, {warmup_frac}")
    start = int(round(warmup_frac * total_steps))
    ramp = max(1, int(round(ramp_frac * total_steps)))

    def rho(t: int) -> float:
        if t < start:
            return 0.0
        return min(1.0, (t - start + 1) / ramp) if ramp_frac > 0 else 1.0

    return rho


__all__ = ["linear_ramp"]


def warmup_cosine(total_steps: int, warmup_frac: float, min_frac: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup_frac`` of the steps, then cosine decay to ``min_frac``.

    The schedule of the SST paper's language-model runs (Zhao et al., arXiv:2405.15481); use with
    ``torch.optim.lr_scheduler.LambdaLR``.
    """
    import math

    warm = max(1, int(round(warmup_frac * total_steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return f


__all__ += ["warmup_cosine"]
