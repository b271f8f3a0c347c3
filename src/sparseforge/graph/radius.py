"""Fixed-radius neighbour search in pure torch: cell lists and blocked distances.

Used by the particle simulators of Sanchez-Gonzalez et al., "Learning to Simulate Complex Physics
with Graph Networks", arXiv 2002.09405, and by GIOROM (Viswanath et al., arXiv 2407.03925):

    E(r) = {(j -> i) : ||x_i - x_j||_2 <= r}

returned in PyTorch Geometric's convention: ``edge_index[0]`` = the neighbour (source) j,
``edge_index[1]`` = the centre (target) i, edges sorted by centre and then by neighbour index.

Two exact algorithms give the same set (the decision ``sum_k (x_ik - x_jk)^2 <= r^2`` is evaluated
with the same float expression in both):

* ``"brute"``: distances in blocks of centres (memory O(block x n_src)), for small clouds;
* ``"cells"``: a cell list with cell side r. Points are sorted by cell key; each centre looks up its
  3^d neighbouring cells with ``searchsorted`` and the candidate pairs are expanded in chunks of at
  most ``budget`` pairs, so memory stays O(budget + E) at 1e5-1e6 points.

``max_num_neighbors`` keeps the nearest neighbours of each centre (ties broken by lower index).
A ``batch`` vector keeps scenes apart: points of different scenes are never neighbours.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError

_BRUTE_MAX_PAIRS = 90_000  # auto: brute force below n_src * n_query = 300 x 300 (measured crossover)
_MAX_KEY = 2**62


def _check_points(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserError(f"{name} must be a floating (N, d) tensor of coordinates, got {shape}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise UserError(f"{name} holds NaN or infinite coordinates; clean the positions first")


def _check_radius(r: float) -> float:
    r = float(r)
    if not math.isfinite(r) or r <= 0:
        raise UserError(f"radius must be a finite number > 0, got {r}")
    return r


def _check_batch(batch: Tensor | None, n: int, name: str) -> Tensor | None:
    if batch is None:
        return None
    if batch.dim() != 1 or batch.shape[0] != n or batch.dtype not in (torch.int64, torch.int32):
        raise UserError(f"{name} must be a 1-D integer tensor with one scene id per point ({n})")
    return batch.long()


def _nearest(q: Tensor, s: Tensor, d2: Tensor, k: int, n_src: int) -> tuple[Tensor, Tensor]:
    """Keep the k nearest sources per query (ties: lower source index), sorted by (query, source)."""
    o = torch.argsort(s, stable=True)
    o = o[torch.argsort(d2[o], stable=True)]
    o = o[torch.argsort(q[o], stable=True)]
    q, s = q[o], s[o]
    counts = torch.bincount(q - q[0], minlength=1) if q.numel() else q.new_zeros(0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(q.numel(), device=q.device) - torch.repeat_interleave(starts, counts)
    keep = rank < k
    q, s = q[keep], s[keep]
    o = torch.argsort(q * n_src + s)
    return q[o], s[o]


def _brute(src: Tensor, query: Tensor, r2: float, bs: Tensor | None, bq: Tensor | None, exclude_self: bool,
           k: int | None, budget: int) -> tuple[Tensor, Tensor]:
    ns, nq = src.shape[0], query.shape[0]
    block = max(1, budget // max(1, ns))
    qs, ss = [], []
    for a in range(0, nq, block):
        b = min(nq, a + block)
        d2 = ((query[a:b, None, :] - src[None, :, :]) ** 2).sum(-1)  # (B, ns)
        mask = d2 <= r2
        if bs is not None:
            mask &= bq[a:b, None] == bs[None, :]
        if exclude_self:
            ar = torch.arange(a, b, device=src.device)
            mask[ar - a, ar] = False
        qi, si = mask.nonzero(as_tuple=True)  # row-major: sorted by (query, source)
        if k is not None:
            qi, si = _nearest(qi, si, d2[qi, si], k, ns)
        qs.append(qi + a)
        ss.append(si)
    return torch.cat(qs), torch.cat(ss)


def _cells(src: Tensor, query: Tensor, r: float, bs: Tensor | None, bq: Tensor | None, exclude_self: bool,
           k: int | None, budget: int) -> tuple[Tensor, Tensor] | None:
    dev, d = src.device, src.shape[1]
    r2 = r * r
    lo = torch.minimum(src.min(0).values, query.min(0).values)
    cs = torch.floor((src - lo) / r).long() + 1  # (ns, d), padded by one cell on each side
    cq = torch.floor((query - lo) / r).long() + 1
    dims = torch.maximum(cs.max(0).values, cq.max(0).values) + 2  # (d,)
    n_cells = math.prod(int(v) for v in dims)
    n_batch = int(max(int(bs.max()), int(bq.max()))) + 1 if bs is not None else 1
    if n_cells * n_batch >= _MAX_KEY:
        return None  # astronomically sparse cloud: fall back to blocked brute force
    stride = torch.ones(d, dtype=torch.long, device=dev)
    for i in range(d - 2, -1, -1):
        stride[i] = stride[i + 1] * dims[i + 1]
    ks = (cs * stride).sum(1)
    kq = (cq * stride).sum(1)
    if bs is not None:
        ks = ks + bs * n_cells
        kq = kq + bq * n_cells
    skey, order = torch.sort(ks)
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=d)), dtype=torch.long, device=dev)
    doff = (offsets * stride).sum(1)  # (3^d,)
    n_off = doff.numel()
    ns, nq = src.shape[0], query.shape[0]
    qs, ss = [], []
    outer = max(1, min(nq, budget // n_off))
    for a0 in range(0, nq, outer):
        b0 = min(nq, a0 + outer)
        nk = kq[a0:b0, None] + doff[None, :]  # (B, 3^d) neighbouring cell keys
        start = torch.searchsorted(skey, nk)
        count = torch.searchsorted(skey, nk, right=True) - start
        per_q = count.sum(1)
        cum = torch.cumsum(per_q, 0)
        # split this block into chunks of <= budget candidate pairs (whole centres per chunk)
        a = 0
        while a < b0 - a0:
            base = int(cum[a - 1]) if a > 0 else 0
            b = int(torch.searchsorted(cum, torch.tensor(base + budget, device=dev), right=True))
            b = max(b, a + 1)
            cnt = count[a:b].reshape(-1)  # (C * 3^d,)
            st = start[a:b].reshape(-1)
            total = int(cnt.sum())
            if total:
                pair = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)
                first = torch.cumsum(cnt, 0) - cnt
                pos = torch.arange(total, device=dev) - first[pair]
                si = order[st[pair] + pos]
                qi = a0 + a + torch.div(pair, n_off, rounding_mode="floor")
                d2 = ((query[qi] - src[si]) ** 2).sum(-1)
                keep = d2 <= r2
                if exclude_self:
                    keep &= qi != si
                qi, si, d2 = qi[keep], si[keep], d2[keep]
                if k is not None:
                    qi, si = _nearest(qi, si, d2, k, ns)
                else:
                    o = torch.argsort(qi * ns + si)
                    qi, si = qi[o], si[o]
                qs.append(qi)
                ss.append(si)
            a = b
    if not qs:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e
    return torch.cat(qs), torch.cat(ss)


def _radius(src: Tensor, query: Tensor, r: float, *, max_num_neighbors: int | None, batch_src: Tensor | None,
            batch_query: Tensor | None, exclude_self: bool, method: str, budget: int) -> Tensor:
    _check_points(src, "source positions")
    _check_points(query, "query positions")
    if src.shape[1] != query.shape[1]:
        raise UserError(f"source and query points differ in dimension ({src.shape[1]} vs {query.shape[1]})")
    r = _check_radius(r)
    if method not in ("auto", "brute", "cells"):
        raise UserError(f"radius search method must be auto, brute or cells, got {method!r}")
    if max_num_neighbors is not None and max_num_neighbors < 1:
        raise UserError(f"max_num_neighbors must be >= 1 or None, got {max_num_neighbors}")
    if budget < 1:
        raise UserError(f"budget must be >= 1, got {budget}")
    bs = _check_batch(batch_src, src.shape[0], "batch (sources)")
    bq = _check_batch(batch_query, query.shape[0], "batch (queries)")
    if (bs is None) != (bq is None):
        raise UserError("give a batch vector for both the sources and the queries, or for neither")
    if src.shape[0] == 0 or query.shape[0] == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=src.device)
    if method == "auto":
        method = "brute" if src.shape[0] * query.shape[0] <= _BRUTE_MAX_PAIRS else "cells"
    out = None
    if method == "cells":
        out = _cells(src, query, r, bs, bq, exclude_self, max_num_neighbors, budget)
    if out is None:
        out = _brute(src, query, r * r, bs, bq, exclude_self, max_num_neighbors, budget)
    qi, si = out
    return torch.stack([si, qi])


def radius_graph(
    pos: Tensor,
    r: float,
    *,
    loop: bool = False,
    max_num_neighbors: int | None = None,
    batch: Tensor | None = None,
    method: Literal["auto", "brute", "cells"] = "auto",
    budget: int = 1 << 22,
) -> Tensor:
    """All pairs of points within distance ``r`` of each other.

    Args:
        pos: (N, d) coordinates (any d, negative values fine).
        r: radius > 0; pairs with ``||x_i - x_j|| <= r`` are edges.
        loop: include the self loops (i -> i).
        max_num_neighbors: keep only the nearest this many neighbours of each centre (the self
            loop, at distance 0, counts as one). None keeps all.
        batch: (N,) scene id per point; points of different scenes are never connected.
        method: ``"cells"`` (cell list), ``"brute"`` (blocked distances) or ``"auto"`` (brute below
            300 x 300 pairs, the measured crossover).
        budget: candidate pairs evaluated at once (bounds the transient memory).

    Returns:
        (2, E) long ``edge_index``: row 0 the neighbour j, row 1 the centre i, sorted by centre
        then neighbour.
    """
    return _radius(pos, pos, r, max_num_neighbors=max_num_neighbors, batch_src=batch, batch_query=batch,
                   exclude_self=not loop, method=method, budget=budget)


def radius_neighbors(
    src: Tensor,
    query: Tensor,
    r: float,
    *,
    max_num_neighbors: int | None = None,
    batch_src: Tensor | None = None,
    batch_query: Tensor | None = None,
    method: Literal["auto", "brute", "cells"] = "auto",
    budget: int = 1 << 22,
) -> Tensor:
    """Bipartite radius search: for every query point, the source points within ``r``.

    Returns:
        (2, E) long: row 0 indexes ``src``, row 1 indexes ``query`` (messages flow source -> query),
        sorted by query then source.
    """
    return _radius(src, query, r, max_num_neighbors=max_num_neighbors, batch_src=batch_src,
                   batch_query=batch_query, exclude_self=False, method=method, budget=budget)


def knn(src: Tensor, query: Tensor, k: int, *, block: int = 4096) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest source points of every query point (brute force in blocks of queries).

    Returns:
        (indices (Nq, k) long, squared distances (Nq, k)), nearest first; ties by lower index.
    """
    _check_points(src, "source positions")
    _check_points(query, "query positions")
    if not 1 <= k <= src.shape[0]:
        raise UserError(f"knn: k must be in [1, {src.shape[0]}] (the number of source points), got {k}")
    idx, dist = [], []
    for a in range(0, query.shape[0], block):
        d2 = ((query[a:a + block, None, :] - src[None, :, :]) ** 2).sum(-1)  # (B, ns)
        d, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        idx.append(i)
        dist.append(d)
    if not idx:
        return torch.zeros(0, k, dtype=torch.long, device=src.device), src.new_zeros(0, k)
    return torch.cat(idx), torch.cat(dist)


def mean_nn_distance(pos: Tensor) -> float:
    """Mean distance from each point to its nearest other point (0 for fewer than 2 points)."""
    if pos.shape[0] < 2:
        return 0.0
    _, d2 = knn(pos, pos, 2)
    return float(d2[:, 1].clamp_min(0).sqrt().mean())


__all__ = ["knn", "mean_nn_distance", "radius_graph", "radius_neighbors"]
