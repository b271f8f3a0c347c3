"""Choosing a sparse subset of a point cloud: farthest-point and uniform random sampling.

GIOROM (Viswanath et al., arXiv 2407.03925) runs its time-stepper on a fixed subset I of the
particles, chosen once per trajectory on the reference frame.

Farthest-point sampling (FPS): i_1 = ``start``; then repeatedly

    i_{m+1} = argmax_j  min_{l <= m} ||x_j - x_{i_l}||^2

with ties broken by the lowest index (distances in float64, since ties decide the order). Each of
the n rounds is one vectorised O(N) update, O(nN) in total.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError


def _check_n(n: int, total: int) -> int:
    n = int(n)
    if not 1 <= n <= total:
        raise UserError(f"sample size must be between 1 and the number of points ({total}), got {n}")
    return n


def fps(pos: Tensor, n: int, *, start: int = 0) -> Tensor:
    """Farthest-point sampling of ``n`` distinct indices of ``pos`` (N, d), in the order chosen."""
    if pos.dim() != 2 or not pos.is_floating_point():
        raise UserError(f"fps needs a floating (N, d) tensor, got shape {tuple(pos.shape)}")
    total = pos.shape[0]
    n = _check_n(n, total)
    if not 0 <= start < total:
        raise UserError(f"fps start index must be in [0, {total}), got {start}")
    x = pos.detach().to(torch.float64)
    chosen = torch.empty(n, dtype=torch.long, device=pos.device)
    chosen[0] = start
    dmin = ((x - x[start]) ** 2).sum(1)
    dmin[start] = -1.0  # a chosen point is never picked again (even among duplicates)
    for m in range(1, n):
        j = torch.argmax(dmin)  # first maximal index: ties -> lowest index
        chosen[m] = j
        dmin = torch.minimum(dmin, ((x - x[j]) ** 2).sum(1))  # chosen points keep -1
        dmin[j] = -1.0
    return chosen


def random_sample(num_points: int, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` distinct indices of ``range(num_points)`` drawn uniformly without replacement, sorted."""
    n = _check_n(n, num_points)
    return torch.sort(torch.randperm(num_points, generator=generator)[:n]).values


def sample_size(num_points: int, *, n: int | None = None, frac: float | None = None) -> int:
    """A fixed ``n``, or ``ceil(frac * num_points)`` for ``frac`` in (0, 1]."""
    if (n is None) == (frac is None):
        raise UserError("give exactly one of n (a sample size) or frac (a fraction in (0, 1])")
    if frac is not None:
        if not 0 < frac <= 1:
            raise UserError(f"sample fraction must be in (0, 1], got {frac}")
        n = math.ceil(frac * num_points)
    return _check_n(int(n), num_points)


def sample_points(pos: Tensor, *, n: int | None = None, frac: float | None = None,
                  method: Literal["fps", "random"] = "fps", seed: int = 0) -> Tensor:
    """Indices of a sparse subset of ``pos`` (N, d): FPS from index 0, or sorted uniform random."""
    k = sample_size(pos.shape[0], n=n, frac=frac)
    if method == "fps":
        return fps(pos, k)
    if method == "random":
        g = torch.Generator().manual_seed(int(seed))
        return random_sample(pos.shape[0], k, generator=g).to(pos.device)
    raise UserError(f"sampler must be 'fps' or 'random', got {method!r}")


__all__ = ["fps", "random_sample", "sample_points", "sample_size"]
