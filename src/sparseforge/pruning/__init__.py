"""Pruning: scores (magnitude, random, SNIP, GraSP, SynFlow), exact top-k masks, lottery tickets.

Public contract::

    sparseforge.pruning.scores(model, method, *, batch=None, loss_fn=None, targets=None) -> {name: tensor}
    sparseforge.pruning.prune_global(model, scores, sparsity, *, targets=None) -> {name: bool mask}

``targets`` are module names or patterns (:func:`sparseforge.select`); their weights (parameters with >= 2
dimensions) are scored and pruned; the default is every weight of the model.

``sparsity`` is always the fraction of weights REMOVED (pruning rate k); masks are True = kept and
paired with parameters by name. ``prune_global(model, "synflow", sparsity, batch=...)`` runs a
scorer's own schedule (SynFlow: 100 rounds, exponential). The lottery procedure
(:func:`lottery_ticket`) takes a training callback and never owns the loop.
"""

from __future__ import annotations

from .lottery import (
    LotteryResult,
    SnapshotCallback,
    TrainResult,
    lottery_ticket,
    norm_matched_init,
    norm_ratio,
    rewind,
    snapshot,
    ticket_mask,
)
from .prune import (
    apply_masks_,
    density_by_layer,
    imp_sparsities,
    mask_sparsity,
    prune,
    prune_global,
    temporarily_masked,
    topk_masks,
)
from .scores import (
    GraspOptions,
    RandomOptions,
    Scorer,
    SynflowOptions,
    get_scorer,
    grasp,
    hessian_gradient_product,
    magnitude,
    prunable_params,
    random_scores,
    scores,
    snip,
    synflow,
)

__all__ = [
    "GraspOptions",
    "LotteryResult",
    "RandomOptions",
    "Scorer",
    "SynflowOptions",
    "SnapshotCallback",
    "TrainResult",
    "apply_masks_",
    "density_by_layer",
    "get_scorer",
    "grasp",
    "hessian_gradient_product",
    "imp_sparsities",
    "lottery_ticket",
    "magnitude",
    "mask_sparsity",
    "norm_matched_init",
    "norm_ratio",
    "prunable_params",
    "prune",
    "prune_global",
    "random_scores",
    "rewind",
    "scores",
    "snapshot",
    "snip",
    "synflow",
    "temporarily_masked",
    "ticket_mask",
    "topk_masks",
]
