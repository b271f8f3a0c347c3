"""Gap reduction, the SST paper's headline metric (Zhao et al., arXiv:2405.15481, spec §2.11).

With B the best of the *other* low-rank methods on the metric:
    lower is better  (perplexity):  (M_B - M_SST) / (M_B - M_full)
    higher is better (BLEU, F1):    (M_SST - M_B) / (M_full - M_B)
Undefined (None) when full rank is not better than B (the denominator is <= 0).
"""

from __future__ import annotations

from collections.abc import Mapping


def gap_reduction(full: float, sst: float, others: Mapping[str, float] | list[float], *,
                  lower_is_better: bool = True) -> float | None:
    """(B - SST) / (B - full) in the metric's "better" direction; None when undefined."""
    vals = list(others.values()) if isinstance(others, Mapping) else list(others)
    if not vals:
        return None
    if lower_is_better:
        best = min(vals)
        den, num = best - full, best - sst
    else:
        best = max(vals)
        den, num = full - best, sst - best
    if not den > 0:
        return None
    return float(num / den)


__all__ = ["gap_reduction"]
