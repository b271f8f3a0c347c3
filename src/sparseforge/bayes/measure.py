"""Compaction and side-by-side measurement of several trained variants of one network.

Used to compare Turbo-VBI (arXiv:2302.10483) with its baselines after compaction: every variant is
physically shrunk by :func:`sparseforge.compact` (outputs checked), its FLOPs counted on the compacted
model, and the latencies of all variants timed in one interleaved loop, in ``blocks`` separate blocks
so that a spread can be reported next to each median.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["compact_and_measure"]


@torch.no_grad()
def compact_and_measure(
    models: Mapping[str, nn.Module], example: torch.Tensor, *, repeats: int = 30, blocks: int = 5, warmup: int = 3,
    compact: bool = True,
) -> dict[str, dict[str, Any]]:
    """Compact every model and measure params, FLOPs and latency side by side.

    Args:
        models: name -> trained (masked, plain-layer) model; not modified (a model without zero weights
            is measured as it is).
        example: the input batch used for compaction, FLOPs and timing (e.g. 1024 images).
        repeats: timed forward passes per model in total.
        blocks: the repeats are split into this many interleaved blocks; the block medians give the
            reported median and spread.
        warmup: untimed passes per block.
        compact: False: measure the models as they are (e.g. already deployed ones, which compacting again
            would replace by a fresh export and so lose what the deployment applied).

    Returns:
        name -> ``{"params", "nonzero_params", "flops", "params_compact", "flops_compact",
        "latency_ms", "latency_spread_ms", "latency_blocks_ms", "compact_max_abs_diff", "model"}``:
        ``latency_ms`` is the median of the block medians, ``latency_spread_ms`` half their range.
    """
    from .. import metrics
    from ..compaction import compact as compact_fn

    out: dict[str, dict[str, Any]] = {}
    small: dict[str, nn.Module] = {}
    for name, m in models.items():
        m.eval()
        has_zeros = any(bool((p == 0).any()) for p in m.parameters() if p.dim() >= 2)
        s = compact_fn(m, example) if has_zeros and compact else m  # nothing to remove: its own compaction
        s.eval()
        diff = float((s(example) - m(example)).abs().max())
        before = metrics.summary(m, example, latency=False)
        after = metrics.summary(s, example, latency=False)
        out[name] = {"params": before["params"], "nonzero_params": before["nonzero_params"], "flops": before["flops"],
                     "params_compact": after["params"], "flops_compact": after["flops"], "compact_max_abs_diff": diff,
                     "model": s}
        small[name] = s
    per_block = max(1, repeats // max(1, blocks))
    samples: dict[str, list[float]] = {n: [] for n in small}
    for _ in range(max(1, blocks)):
        lat = metrics.compare_latency(small, example, repeats=per_block, warmup=warmup)
        for n, v in lat.items():
            samples[n].append(v)
    for n, v in samples.items():
        out[n]["latency_ms"] = float(statistics.median(v))
        out[n]["latency_spread_ms"] = (max(v) - min(v)) / 2.0
        out[n]["latency_blocks_ms"] = v
    return out
