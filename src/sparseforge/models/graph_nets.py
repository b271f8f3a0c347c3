"""Euclidean graph convolutional network, the Euclidean counterpart of HyboNet's graph encoder.

Paper: Thomas N. Kipf, Max Welling, "Semi-Supervised Classification with Graph Convolutional
Networks", arXiv:1609.02907, in the layout of HGCN (Chami et al., "Hyperbolic Graph Convolutional
Neural Networks", arXiv:1910.12933) used as the Euclidean baseline of Zhao et al.,
arXiv:2405.15481 (Sparse Spectral Training on Euclidean and hyperbolic networks).

Layer: H' = act(A_hat (dropout(H) W^T + b)), with A_hat the row-normalised A + I (HGCN) or any
sparse / dense (N, N) operator. ``W`` is a plain ``nn.Linear`` named ``linear`` so that
:func:`sparseforge.spectral.convert` swaps it. Not in the model registry: the models take an
adjacency as a second input, which the registry's single-input tests do not cover.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def graph_aggregate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A x for a sparse (COO / CSR) or dense (N, N) operator ``adj`` and (N, d) features."""
    return torch.sparse.mm(adj, x) if adj.layout != torch.strided else adj @ x


class GCNLayer(nn.Module):
    """act(A (dropout(x) W^T + b)).

    Args:
        in_features / out_features: sizes.
        dropout: dropout on the input.
        act: activation (None for identity).
        bias: bias of the linear map.
        linear_layer: injectable linear class (default ``nn.Linear``).
    """

    def __init__(self, in_features: int, out_features: int, *, dropout: float = 0.0,
                 act: Callable[[torch.Tensor], torch.Tensor] | None = F.relu, bias: bool = True,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        self.linear = linear_layer(in_features, out_features, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.act = act

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = graph_aggregate(adj, self.linear(self.dropout(x)))  # (N, out)
        return h if self.act is None else self.act(h)


class GCNEncoder(nn.Module):
    """A stack of ``n_layers`` :class:`GCNLayer` s: (N, F) features -> (N, hidden) embeddings.

    Args:
        in_features: F.
        hidden: width of every layer (HGCN / HyboNet: 16).
        n_layers: number of graph convolutions.
        dropout: input dropout of every layer.
        act: activation after every layer (HGCN: ReLU).
    """

    def __init__(self, in_features: int, hidden: int = 16, n_layers: int = 2, *, dropout: float = 0.0,
                 act: Callable[[torch.Tensor], torch.Tensor] | None = F.relu,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        dims = [in_features] + [hidden] * n_layers
        self.layers = nn.ModuleList(
            GCNLayer(a, b, dropout=dropout, act=act, linear_layer=linear_layer) for a, b in zip(dims[:-1], dims[1:])
        )
        self.out_features = hidden

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, adj)
        return x


__all__ = ["GCNEncoder", "GCNLayer", "graph_aggregate"]
