"""LoRA layers for pre-training from scratch (the SST paper's low-rank baseline).

Paper: Edward J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
Used as in Zhao et al., "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural
Networks", arXiv:2405.15481 (a baseline there).

Equation: h = W0 x + s B A x + b, with W0 (out x in) the layer's real random init, **frozen**;
A in R^{r x in} Kaiming-uniform (nn.Linear's init, a = sqrt(5)), B in R^{out x r} zeros, s = alpha / r.
Reconstructed defaults: alpha = r so s = 1 (``alpha=None``); the bias stays trainable
(``train_bias=True``) like every method of the comparison.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .sst import check_rank


def kaiming_uniform_A_(A: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """nn.Linear's init, U(+-1/sqrt(in)) (= kaiming_uniform with a = sqrt(5)), in place."""
    bound = 1.0 / math.sqrt(A.shape[1])
    with torch.no_grad():
        if generator is None:
            return A.uniform_(-bound, bound)
        A.copy_((torch.rand(A.shape, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).to(A))
    return A


class LoRALinear(nn.Module):
    """Frozen W0 plus a trainable rank-r update s B A.

    Args:
        in_features / out_features: as in ``nn.Linear``.
        rank: r (1 <= r < min(in, out)).
        alpha: scale numerator; s = alpha / r (default alpha = r, s = 1).
        weight / bias_init: the frozen base weight and the initial bias (default: nn.Linear init).
        train_bias: train the bias (default True).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        alpha: float | None = None,
        bias: bool = True,
        weight: torch.Tensor | None = None,
        bias_init: torch.Tensor | None = None,
        train_bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_rank(rank, in_features, out_features)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank
        if weight is None:
            ref = nn.Linear(in_features, out_features, bias=bias)
            weight = ref.weight.detach()
            if bias and bias_init is None:
                bias_init = ref.bias.detach()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)  # W0 (out, in), frozen
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device))
        kaiming_uniform_A_(self.lora_A, generator)
        if bias:
            b = torch.zeros(out_features) if bias_init is None else bias_init.detach().clone()
            self.bias = nn.Parameter(b.to(weight), requires_grad=train_bias)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, **opts: Any) -> LoRALinear:
        return cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                   weight=linear.weight.detach(),
                   bias_init=None if linear.bias is None else linear.bias.detach(), **opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.weight, self.bias)  # (..., out)
        return h + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)  # (..., r) -> (..., out)

    def delta(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge_and_reinit_(self, generator: torch.Generator | None = None) -> None:
        """W0 <- W0 + s B A; A re-initialised (Kaiming), B = 0: the function is unchanged."""
        self.weight.add_(self.delta())
        kaiming_uniform_A_(self.lora_A, generator)
        self.lora_B.zero_()

    def merge(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + self.delta())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"scaling={self.scaling:g}")


__all__ = ["LoRALinear", "kaiming_uniform_A_"]
