"""Structure metrics of pruning masks: how regular is the sparsity Turbo-VBI promotes?

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483, claims a "more regular" sparse structure: weights clustered
inside each neuron and whole neurons removed. These measurable versions are reconstructed defaults,
computed from boolean masks M_l arranged as the support matrix S (rows = fan-in, columns = neurons;
:mod:`sparseforge.bayes.layout`):

* compression rate = total prunable weights / non-zero weights;
* neuron sparsity = fraction of dead neurons: a neuron is dead when its fan-in column is all zero, or
  (for a chain of layers) its fan-out — the next layer's input slice it feeds — is all zero;
* run count = mean number of maximal runs of consecutive non-zeros per alive column (per neuron);
  1 means every surviving neuron keeps one contiguous block of its fan-in;
* tile occupancy = fraction of 4x4 tiles of S (zero-padded at the edges) holding a non-zero; lower
  is more block-regular at equal density.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .layout import Layout, to_support

__all__ = ["column_runs", "run_count", "tile_occupancy", "dead_neurons", "structure_metrics"]


def column_runs(s: torch.Tensor) -> torch.Tensor:
    """Number of maximal runs of True per column of a boolean (R, C) matrix, (C,) long."""
    s = s.to(torch.bool)
    starts = s.clone()
    starts[1:] &= ~s[:-1]  # a run starts where the entry is on and the one above is off
    return starts.sum(0)


def run_count(s: torch.Tensor) -> float:
    """Mean :func:`column_runs` over the columns that have at least one non-zero (nan if none)."""
    runs = column_runs(s)
    alive = s.to(torch.bool).any(0)
    return float(runs[alive].double().mean()) if bool(alive.any()) else float("nan")


def _tiles(s: torch.Tensor, tile: int) -> torch.Tensor:
    x = s.to(torch.float32)[None, None]
    R, C = s.shape
    x = F.pad(x, (0, (-C) % tile, 0, (-R) % tile))
    return F.max_pool2d(x, tile)[0, 0] > 0  # (ceil(R/t), ceil(C/t))


def tile_occupancy(s: torch.Tensor, tile: int = 4) -> float:
    """Fraction of ``tile`` x ``tile`` tiles of S (zero-padded) holding at least one non-zero."""
    return float(_tiles(s, tile).double().mean())


def dead_neurons(masks: Sequence[torch.Tensor], *, chain: bool = True) -> list[torch.Tensor]:
    """Dead output units per layer: (out,) bool each.

    Args:
        masks: weight-shaped boolean masks (``(out, in)`` or ``(out, in, kh, kw)``) in forward order.
        chain: the layers form a chain (layer l+1 reads layer l's outputs, flattened channel-major
            when a conv feeds a linear layer), so a unit whose fan-out is all zero is dead too.
            Pairs whose sizes do not fit a chain are checked by fan-in only.
    """
    out: list[torch.Tensor] = []
    for i, m in enumerate(masks):
        m = m.to(torch.bool)
        dead = ~m.reshape(m.shape[0], -1).any(1)  # fan-in all zero
        if chain and i + 1 < len(masks):
            nxt = masks[i + 1].to(torch.bool)
            if nxt.shape[1] % m.shape[0] == 0:  # conv: in == out_l; linear after flatten: in == out_l·H·W
                fan_out = nxt.reshape(nxt.shape[0], m.shape[0], -1).any(2).any(0)
                dead = dead | ~fan_out
        out.append(dead)
    return out


def structure_metrics(
    masks: Mapping[str, torch.Tensor],
    *,
    layout: Layout = "fanin_x_out",
    exclude: Sequence[str] = (),
    chain: bool = True,
    tile: int = 4,
) -> dict[str, Any]:
    """Compression rate, density, neuron sparsity, run count and tile occupancy of ``masks``.

    Args:
        masks: ``{param_name: weight-shaped bool mask}`` in forward order (True = kept).
        layout: conv layout of the support matrix.
        exclude: names left out of the structure figures (e.g. the output layer, whose neurons are
            the classes); they still count in the compression rate.
        chain: see :func:`dead_neurons`.
        tile: tile side of the occupancy metric.

    Returns:
        Flat figures ``compression_rate``, ``density``, ``neuron_sparsity``, ``run_count``,
        ``tile_occupancy`` and ``layers`` (one row per mask).
    """
    names = list(masks)
    ms = [masks[n].to(torch.bool).cpu() for n in names]
    total = sum(m.numel() for m in ms)
    kept = sum(int(m.sum()) for m in ms)
    dead = dead_neurons(ms, chain=chain)
    rows, n_units, n_dead, runs_sum, runs_n, tiles_occ, tiles_n = [], 0, 0, 0, 0, 0, 0
    for name, m, d in zip(names, ms, dead):
        s = to_support(m, layout)
        cr = column_runs(s)
        alive = s.any(0)
        t = _tiles(s, tile)
        row = {"layer": name, "shape": "x".join(map(str, m.shape)), "weights": m.numel(), "nonzero": int(m.sum()),
               "density": float(m.double().mean()), "neurons": int(m.shape[0]), "dead_neurons": int(d.sum()),
               "run_count": float(cr[alive].double().mean()) if bool(alive.any()) else float("nan"),
               "tile_occupancy": float(t.double().mean()), "in_structure": name not in exclude}
        rows.append(row)
        if name in exclude:
            continue
        n_units += m.shape[0]
        n_dead += int(d.sum())
        runs_sum += int(cr[alive].sum())
        runs_n += int(alive.sum())
        tiles_occ += int(t.sum())
        tiles_n += t.numel()
    return {
        "compression_rate": total / max(kept, 1),
        "density": kept / max(total, 1),
        "neuron_sparsity": n_dead / max(n_units, 1),
        "run_count": runs_sum / runs_n if runs_n else float("nan"),
        "tile_occupancy": tiles_occ / max(tiles_n, 1),
        "layers": rows,
    }
