"""Graph-task metrics: ROC-AUC and average precision (link prediction), F1 (node classification).

As reported by HGCN (Chami et al., arXiv:1910.12933) and HyboNet (Chen et al., arXiv:2105.14686),
and by Zhao et al., arXiv:2405.15481 for SST on hyperbolic graph networks:

* ROC-AUC = P(s_pos > s_neg) + P(s_pos = s_neg)/2, computed from average ranks (Mann-Whitney U);
* average precision = sum_k (R_k - R_{k-1}) P_k over the score thresholds (scikit-learn's definition,
  ties grouped);
* F1: binary (positive class 1) for two classes, micro-averaged (= accuracy for single-label data)
  otherwise — HGCN's convention.
"""

from __future__ import annotations

import torch

from ..errors import UserError


def _flat(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, y = torch.as_tensor(scores).detach().double().flatten().cpu(), torch.as_tensor(labels).flatten().cpu()
    if s.numel() != y.numel():
        raise UserError(f"scores ({s.numel()}) and labels ({y.numel()}) must have the same length")
    return s, y.bool()


def _average_ranks(s: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties sharing their average rank (vectorised)."""
    sv, order = torch.sort(s)
    n = s.numel()
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = sv[1:] != sv[:-1]
    group = torch.cumsum(new.long(), 0) - 1  # (n,) tie-group id in sorted order
    pos = torch.arange(1, n + 1, dtype=torch.float64)
    n_groups = int(group[-1]) + 1 if n else 0
    first = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce_(0, group, pos, "amin", include_self=False)
    last = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce_(0, group, pos, "amax", include_self=False)
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = ((first + last) / 2)[group]
    return ranks


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher = positive) against binary ``labels``."""
    s, y = _flat(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError("ROC-AUC needs at least one positive and one negative example")
    r = _average_ranks(s)
    u = float(r[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision (area under the precision-recall step curve), ties grouped."""
    s, y = _flat(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise UserError("average precision needs at least one positive example")
    order = torch.argsort(s, descending=True, stable=True)
    sv, yv = s[order], y[order].double()
    tp = torch.cumsum(yv, 0)
    fp = torch.cumsum(1 - yv, 0)
    last = torch.ones_like(sv, dtype=torch.bool)  # last element of each tie group (a threshold)
    last[:-1] = sv[1:] != sv[:-1]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - prev) * precision).sum())


def f1_score(pred: torch.Tensor, labels: torch.Tensor, *, num_classes: int | None = None) -> float:
    """F1: binary (class 1 positive) when there are two classes, micro-averaged otherwise."""
    p, y = torch.as_tensor(pred).flatten().cpu(), torch.as_tensor(labels).flatten().cpu()
    c = num_classes if num_classes is not None else int(max(int(p.max()), int(y.max())) + 1)
    if c <= 2:
        tp = float(((p == 1) & (y == 1)).sum())
        fp = float(((p == 1) & (y != 1)).sum())
        fn = float(((p != 1) & (y == 1)).sum())
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return float((p == y).double().mean())  # micro F1 of single-label predictions


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of exact matches."""
    return float((torch.as_tensor(pred).flatten() == torch.as_tensor(labels).flatten()).double().mean())


__all__ = ["accuracy", "average_precision", "f1_score", "roc_auc"]
