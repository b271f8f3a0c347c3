"""Group lasso baseline: block soft-thresholding of group norms.

Paper context: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope
Regularization", arXiv:2212.12921 (the group-lasso baseline); Yuan & Lin, "Model selection and
estimation in regression with grouped variables" (JRSS-B, 2006).

    R(θ) = λ Σ_j w_j ‖θ_{g_j}‖₂
    prox_{γR}(θ)_{g_j} = max(0, 1 − γ w_j / ‖θ_{g_j}‖) · θ_{g_j},   γ = step × λ

Groups with ‖θ_g‖ ≤ γ w_j become exactly zero. Group multipliers: ``group_weights="none"``
(reconstructed default, w_j = 1), ``"sqrt_size"`` (√|g_j|) or ``"custom"`` (a user vector),
rescaled to max 1, as for WGSEF.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..registry import register_method
from .base import ProxOperator, check_coupled, lifted_norms, lifted_sq_norms, scale_groups_
from .envelope import group_multipliers


@register_method("group_lasso", family="prox")
class GroupLasso(ProxOperator):
    """Group lasso λ Σ_j w_j ‖θ_{g_j}‖ with block soft-thresholding prox.

    Args:
        grouping: a name of :data:`sparseforge.groups.GROUPINGS`.
        weight: λ.
        group_weights: ``"none"`` | ``"sqrt_size"`` | ``"custom"`` (then pass ``multipliers``).
        multipliers: custom (n_groups,) positive group multipliers.
        coupled: 1-D tensors in the same groups (bias, BN γ/β; filter/row groupings only).
    """

    layer_options = ("group_weights", "multipliers")

    def __init__(
        self,
        grouping: str = "filter",
        weight: float = 0.0,
        *,
        group_weights: str = "none",
        multipliers: torch.Tensor | None = None,
        coupled: Sequence[torch.Tensor] = (),
    ) -> None:
        super().__init__(weight)
        from ..errors import UserError
        from ..groups import GROUPINGS

        if grouping not in GROUPINGS:
            raise UserError(f"unknown grouping {grouping!r}; choose one of: {', '.join(GROUPINGS)}")
        self.grouping = grouping
        self.group_weights = group_weights
        self.multipliers = multipliers
        self.coupled = check_coupled(grouping, coupled)

    def _w(self, w: torch.Tensor) -> torch.Tensor | None:
        return group_multipliers(w, self.grouping, self.group_weights, self.multipliers, n_coupled=len(self.coupled))

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        z = lifted_norms(w, self.grouping, self.coupled)
        mw = self._w(w)
        return self.weight * (z.sum() if mw is None else (z * mw.to(z.dtype)).sum())

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, step: float) -> torch.Tensor:
        g = self.gamma(step)
        if g == 0.0:
            return w
        a = lifted_sq_norms(w, self.grouping, self.coupled).sqrt()  # (m,)
        mw = self._w(w)
        thr = g if mw is None else g * mw.to(a.dtype)
        # max(0, 1 − thr/a) with a = 0 -> 0 (never divides by zero)
        scale = torch.clamp(1.0 - thr / a.clamp_min(torch.finfo(a.dtype).tiny), min=0.0)
        scale_groups_(w, scale, self.grouping, self.coupled)
        return w
