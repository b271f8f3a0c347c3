"""Graph-neural-operator kernel integrals between two point sets (GNO / GINO).

Li et al., "Neural Operator: Graph Kernel Network for Partial Differential Equations",
arXiv 2003.03485, and Li et al., "Geometry-Informed Neural Operator", arXiv 2309.00583, as used by
GIOROM (Viswanath et al., arXiv 2407.03925) to move features between particles and a latent grid.
For a query y with neighbours N(y) = {x_j : ||x_j - y|| <= r} among the sources,

    linear:     u(y) = mean_{j in N(y)} kappa(y, x_j) * f(x_j)     (elementwise product)
    nonlinear:  u(y) = mean_{j in N(y)} kappa(y, x_j, f(x_j))

and u(y) = 0 when N(y) is empty. With ``kernel_inputs="source_only"`` the kernel sees x_j (and
f(x_j)) but not y, the variant in the GIOROM code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .scatter import scatter_mean


def kernel_integral(kernel_fn: nn.Module, src_pos: Tensor, query_pos: Tensor, edge_index: Tensor,
                    src_feat: Tensor | None = None, *, transform: Literal["linear", "nonlinear"] = "linear",
                    kernel_inputs: Literal["both", "source_only"] = "both") -> Tensor:
    """Mean kernel integral over the edges ``edge_index`` (row 0 source, row 1 query).

    Returns:
        (n_query, C) features.
    """
    s, q = edge_index[0], edge_index[1]
    parts = [src_pos[s]] if kernel_inputs == "source_only" else [query_pos[q], src_pos[s]]
    if transform == "nonlinear":
        if src_feat is None:
            raise ValueError("the nonlinear kernel integral needs source features")
        parts.append(src_feat[s])
    k = kernel_fn(torch.cat(parts, dim=-1))  # (E, C)
    if transform == "linear" and src_feat is not None:
        k = k * src_feat[s]
    return scatter_mean(k, q, query_pos.shape[0])


class IntegralTransform(nn.Module):
    """:func:`kernel_integral` with a learned kernel ``kernel_fn`` (an MLP).

    Args:
        kernel_fn: maps the concatenated kernel inputs to C channels.
        transform: ``"linear"`` or ``"nonlinear"``.
        kernel_inputs: ``"both"`` (kappa(y, x), GINO) or ``"source_only"`` (kappa(x), GIOROM's code).
    """

    def __init__(self, kernel_fn: nn.Module, *, transform: Literal["linear", "nonlinear"] = "linear",
                 kernel_inputs: Literal["both", "source_only"] = "both") -> None:
        super().__init__()
        if transform not in ("linear", "nonlinear"):
            raise ValueError(f"transform must be 'linear' or 'nonlinear', got {transform!r}")
        if kernel_inputs not in ("both", "source_only"):
            raise ValueError(f"kernel_inputs must be 'both' or 'source_only', got {kernel_inputs!r}")
        self.kernel_fn, self.transform, self.kernel_inputs = kernel_fn, transform, kernel_inputs

    def forward(self, src_pos: Tensor, query_pos: Tensor, edge_index: Tensor, src_feat: Tensor | None = None) -> Tensor:
        return kernel_integral(self.kernel_fn, src_pos, query_pos, edge_index, src_feat,
                               transform=self.transform, kernel_inputs=self.kernel_inputs)


__all__ = ["IntegralTransform", "kernel_integral"]
