"""Proximal operators: the sparse envelope (SEF / WGSEF), group lasso and L1.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921. See :mod:`.envelope` for the equations.

Every operator subclasses :class:`ProxOperator` (``penalty(w)``, in-place ``prox_(w, step)``
with γ = step × weight) and is registered with ``family="prox"``.
"""

from __future__ import annotations

from .base import ProxOperator
from .envelope import (
    GroupEnvelope,
    exact_sef_prox,
    group_prox_scale,
    resolve_k,
    sef_prox,
    sef_value,
    solve_clip_sum,
    top_k_groups,
    wgsef_value,
)
from .group_lasso import GroupLasso
from .l1 import L1

__all__ = [
    "ProxOperator",
    "GroupEnvelope",
    "GroupLasso",
    "L1",
    "sef_value",
    "sef_prox",
    "exact_sef_prox",
    "wgsef_value",
    "group_prox_scale",
    "solve_clip_sum",
    "resolve_k",
    "top_k_groups",
]
