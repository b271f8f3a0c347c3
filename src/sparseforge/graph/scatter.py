"""Scatter reductions along the first dimension (pure torch; no ``torch_scatter``).

For ``src`` of shape (E, ...) and ``index`` of shape (E,) with values in [0, dim_size):

    scatter_sum(src, index)[i]  = sum_{e : index[e] = i} src[e]
    scatter_mean(src, index)[i] = scatter_sum(src, index)[i] / max(1, |{e : index[e] = i}|)
    scatter_max(src, index)[i]  = max_{e : index[e] = i} src[e]

Empty segments give 0 for every reduction. All three are differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError


def _check(src: Tensor, index: Tensor, dim_size: int | None) -> int:
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
        raise UserError(f"scatter index must be a 1-D integer tensor, got shape {tuple(index.shape)} {index.dtype}")
    if src.shape[0] != index.shape[0]:
        raise UserError(f"scatter: src has {src.shape[0]} rows but index has {index.shape[0]}; give one index per row")
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    if dim_size < 0:
        raise UserError(f"scatter: dim_size must be >= 0, got {dim_size}")
    return dim_size


def segment_count(index: Tensor, dim_size: int | None = None) -> Tensor:
    """Number of entries per segment, shape (dim_size,) long."""
    n = _check(index, index, dim_size)
    return torch.bincount(index.long(), minlength=n)[:n]


def scatter_sum(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Sum of the rows of ``src`` per segment ``index`` (shape (dim_size, *src.shape[1:]))."""
    n = _check(src, index, dim_size)
    out = src.new_zeros((n, *src.shape[1:]))
    return out.index_add_(0, index.long(), src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Mean of the rows of ``src`` per segment; empty segments give 0."""
    n = _check(src, index, dim_size)
    total = scatter_sum(src, index, n)
    count = segment_count(index, n).clamp_min(1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def scatter_max(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Elementwise maximum of the rows of ``src`` per segment; empty segments give 0."""
    n = _check(src, index, dim_size)
    idx = index.long().view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    out = src.new_zeros((n, *src.shape[1:]))
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)


__all__ = ["scatter_max", "scatter_mean", "scatter_sum", "segment_count"]
