"""Groupers: view a weight tensor as a matrix of shape (n_groups, group_size).

Structured sparsity methods (WGSEF, group lasso, structured pruning, Turbo-VBI) act on
*groups* of weights. A grouping is a name; this module maps it to a reshape/permute of
the weight so that each row of the result is one group:

=========  ===========================  =========================================
grouping   Linear (out, in)             Conv2d (out, in, kh, kw)
=========  ===========================  =========================================
element    every scalar                 every scalar
row        one output neuron            one output filter (same as ``filter``)
filter     one output neuron            one output filter: ``w[o]``
column     one input feature            one input channel (same as ``channel``)
channel    one input feature            one input channel across filters: ``w[:, i]``
shape      one input feature            one (in, kh, kw) position across filters:
                                        ``w[:, i, y, x]`` (the "filter shape" of SSL)
layer      the whole tensor             the whole tensor
=========  ===========================  =========================================

Embedding weights (num, dim) are treated like Linear with ``row`` = one token.
All functions are pure and differentiable; :func:`ungroup` inverts :func:`group_view`.
"""

from __future__ import annotations

import torch

from .errors import UserError

GROUPINGS: tuple[str, ...] = ("element", "row", "column", "filter", "channel", "shape", "layer")


def _check(shape: torch.Size | tuple[int, ...], grouping: str) -> None:
    if grouping not in GROUPINGS:
        raise UserError(f"unknown grouping {grouping!r}; choose one of: {', '.join(GROUPINGS)}")
    if len(shape) == 0:
        raise UserError(f"grouping {grouping!r} needs a tensor with at least one dimension, got a scalar")
    if grouping in ("row", "filter", "column", "channel", "shape") and len(shape) < 2:
        raise UserError(
            f"grouping {grouping!r} needs a weight with >= 2 dimensions (Linear/Conv/Embedding), got shape {tuple(shape)}"
        )


def _perm(ndim: int, grouping: str) -> tuple[int, ...] | None:
    """The permutation that brings the group axis first (None: plain reshape)."""
    if grouping == "channel" or grouping == "column":
        return (1, 0, *range(2, ndim))
    if grouping == "shape":
        return (*range(1, ndim), 0)
    return None


def n_groups(shape: torch.Size | tuple[int, ...], grouping: str) -> int:
    """Number of groups of a weight of ``shape`` under ``grouping``."""
    _check(shape, grouping)
    numel = 1
    for s in shape:
        numel *= int(s)
    if grouping == "element":
        return numel
    if grouping == "layer":
        return 1
    if grouping in ("row", "filter"):
        return int(shape[0])
    if grouping in ("column", "channel"):
        return int(shape[1])
    return numel // int(shape[0])  # shape


def group_size(shape: torch.Size | tuple[int, ...], grouping: str) -> int:
    numel = 1
    for s in shape:
        numel *= int(s)
    return numel // n_groups(shape, grouping)


def group_view(weight: torch.Tensor, grouping: str) -> torch.Tensor:
    """``weight`` as ``(n_groups, group_size)``; one group per row.

    A view when the grouping allows it (element, row, filter, layer), a copy otherwise.
    """
    _check(weight.shape, grouping)
    if grouping == "element":
        return weight.reshape(-1, 1)
    if grouping == "layer":
        return weight.reshape(1, -1)
    perm = _perm(weight.dim(), grouping)
    w = weight.permute(perm) if perm is not None else weight
    if grouping == "shape":  # (..., out) -> (positions, out)
        return w.reshape(-1, weight.shape[0])
    return w.reshape(w.shape[0], -1)


def ungroup(grouped: torch.Tensor, grouping: str, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`group_view`: back to a tensor of ``shape``."""
    shape = torch.Size(shape)
    _check(shape, grouping)
    if grouping in ("element", "layer", "row", "filter"):
        return grouped.reshape(shape)
    perm = _perm(len(shape), grouping)
    assert perm is not None
    permuted_shape = torch.Size(shape[p] for p in perm)
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return grouped.reshape(permuted_shape).permute(inv).contiguous()


def set_groups_(weight: torch.Tensor, grouped: torch.Tensor, grouping: str) -> torch.Tensor:
    """Write ``grouped`` (n_groups, group_size) back into ``weight`` in place."""
    with torch.no_grad():
        weight.copy_(ungroup(grouped, grouping, weight.shape))
    return weight


def group_norms(weight: torch.Tensor, grouping: str, *, p: float = 2.0) -> torch.Tensor:
    """The ``p``-norm of every group: a ``(n_groups,)`` tensor."""
    return torch.linalg.vector_norm(group_view(weight, grouping), ord=p, dim=1)


def expand_group_mask(group_mask: torch.Tensor, grouping: str, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A per-group mask ``(n_groups,)`` broadcast to a weight-shaped mask."""
    shape = torch.Size(shape)
    g = n_groups(shape, grouping)
    if group_mask.numel() != g:
        raise UserError(f"group mask has {group_mask.numel()} entries, but grouping {grouping!r} of {tuple(shape)} has {g}")
    size = group_size(shape, grouping)
    return ungroup(group_mask.reshape(-1, 1).expand(g, size), grouping, shape)


def zero_groups(weight: torch.Tensor, grouping: str, *, atol: float = 0.0) -> torch.Tensor:
    """Boolean ``(n_groups,)``: True where every entry of the group is (near) zero."""
    return group_view(weight, grouping).abs().amax(dim=1) <= atol


__all__ = [
    "GROUPINGS",
    "expand_group_mask",
    "group_norms",
    "group_size",
    "group_view",
    "n_groups",
    "set_groups_",
    "ungroup",
    "zero_groups",
]
