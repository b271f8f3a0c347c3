"""Optimizer wrappers: :class:`ProximalOptimizer` applies prox operators after any torch step.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921: proximal SGD θ ← prox_{ηλR}(O.step(θ)). Schedules of the regularization weight
(warm-up, linear ramp) are in :mod:`sparseforge.optim.schedules`.
"""

from __future__ import annotations

from .calibrate import Calibration, calibrate_strength
from .proximal import (
    PROX_LAYER_TYPES,
    ProximalOptimizer,
    ProxMap,
    build_prox_map,
    coupled_tensors,
    layer_group_stats,
    nonzero_groups,
    overall_group_sparsity,
    project_to_counts_,
    project_top_k_,
    weight_decay_groups,
)
from .schedules import linear_ramp, warmup_cosine

__all__ = [
    "Calibration",
    "PROX_LAYER_TYPES",
    "ProxMap",
    "ProximalOptimizer",
    "build_prox_map",
    "calibrate_strength",
    "coupled_tensors",
    "layer_group_stats",
    "overall_group_sparsity",
    "linear_ramp",
    "nonzero_groups",
    "project_to_counts_",
    "project_top_k_",
    "warmup_cosine",
    "weight_decay_groups",
]
