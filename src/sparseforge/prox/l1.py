"""L1 (lasso) baseline: elementwise soft-thresholding.

Paper context: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope
Regularization", arXiv:2212.12921 (an unstructured baseline); Tibshirani, "Regression shrinkage and
selection via the lasso" (JRSS-B, 1996).

    R(θ) = λ Σ_i |θ_i|,     prox_{γR}(θ)_i = sign(θ_i) · max(0, |θ_i| − γ),  γ = step × λ.
"""

from __future__ import annotations

import torch

from ..registry import register_method
from .base import ProxOperator


@register_method("l1", family="prox")
class L1(ProxOperator):
    """Elementwise L1 penalty λ‖θ‖₁ and its soft-threshold prox."""

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__(weight)

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        return self.weight * w.abs().sum()

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, step: float) -> torch.Tensor:
        g = self.gamma(step)
        if g == 0.0:
            return w
        # θ ← θ · max(0, 1 − γ/|θ|) written without a division: sign(θ)·relu(|θ| − γ)
        w.copy_(torch.sign(w) * torch.clamp(w.abs() - g, min=0.0))
        return w
