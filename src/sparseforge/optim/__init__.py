"""Optimizer wrappers: :class:`ProximalOptimizer` applies prox operators after any torch step.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921 (spec ``shared/methods/wgsef.md`` §2.7): proximal SGD θ ← prox_{ηλR}(O.step(θ)).
"""

from __future__ import annotations

from .proximal import (
    ProximalOptimizer,
    build_prox_map,
    coupled_tensors,
    nonzero_groups,
    project_top_k_,
    regularized_layers,
)

__all__ = [
    "ProximalOptimizer",
    "build_prox_map",
    "coupled_tensors",
    "nonzero_groups",
    "project_top_k_",
    "regularized_layers",
]
