"""Graph models for node classification and link prediction, hyperbolic (HyboNet) and Euclidean (GCN).

Papers: Chen et al., "Fully Hyperbolic Neural Networks", arXiv:2105.14686 (HyboNet encoder and
decoders); Chami et al., arXiv:1910.12933 (HGCN task layout, Fermi-Dirac decoder); Kipf & Welling,
arXiv:1609.02907 (GCN); trained with SST in Zhao et al., arXiv:2405.15481.

HyboNet encoder: features x in R^F are lifted to the hyperboloid as expmap0((0, x)) in H^F
(F + 1 coordinates), then ``n_layers`` Lorentz graph convolutions (LorentzLinear -> aggregation)
of ``dim`` coordinates each (time included: points in H^{dim-1}); no activation (HyboNet's scripts:
``act=None``). Layer counting follows HGCN: its ``num_layers`` counts the decoder, so HyboNet's
``num-layers 4`` for node classification is three convolutions here, and link prediction's
``num-layers 2`` is two (HGCN appends one layer for LP).

Heads:

* node classification: hyperbolic -> :class:`~sparseforge.hyperbolic.layers.LorentzNCDecoder`
  (scores -d_L^2(h, p_c) + b_c, margin loss); Euclidean -> a linear classifier (cross-entropy),
  kept dense (``spectral_exclude``) like every output classifier of the comparison;
* link prediction: ``"margin"`` (score -d^2, HyboNet's margin loss; default for the hyperbolic
  model) or ``"fermi_dirac"`` (logit (r - d^2)/t with BCE; default for the Euclidean GCN), where d^2
  is the squared Lorentzian distance -2k - 2<x, y>_L on the hyperboloid and the squared Euclidean
  distance in the GCN.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.graph_nets import GCNEncoder
from . import lorentz as L
from .layers import FermiDiracDecoder, LorentzGraphConv, LorentzNCDecoder, fermi_dirac_logits
from .losses import fermi_dirac_loss, lp_margin_loss, nc_margin_loss

Geometry = Literal["hyperbolic", "euclidean"]
GEOMETRIES = ("hyperbolic", "euclidean")
LP_DECODERS = ("margin", "fermi_dirac")


class HyboNetEncoder(nn.Module):
    """expmap0((0, x)) then ``n_layers`` :class:`LorentzGraphConv` s of ``dim`` coordinates.

    Args:
        in_features: F (Euclidean feature size).
        dim: ambient size of the hidden points (time included; HyboNet: 16).
        n_layers: number of graph convolutions.
        dropout: input dropout of every LorentzLinear.
        k: curvature parameter.
    """

    def __init__(self, in_features: int, dim: int = 16, n_layers: int = 2, *, dropout: float = 0.0,
                 k: float = 1.0, linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        if n_layers < 1:
            raise UserError(f"n_layers must be >= 1, got {n_layers}")
        self.k = float(k)
        dims = [in_features + 1] + [dim] * n_layers
        self.layers = nn.ModuleList(
            LorentzGraphConv(a, b, dropout=dropout, k=k, linear_layer=linear_layer) for a, b in zip(dims[:-1], dims[1:])
        )
        self.out_features = dim

    def lift(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean features (N, F) -> points expmap0((0, x)) (N, F + 1)."""
        return L.expmap0(F.pad(x, (1, 0)), k=self.k)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        for layer in self.layers:
            h = layer(h, adj)
        return h  # (N, dim) on H_k


class NodeClassifier(nn.Module):
    """Encoder + class scores; ``loss(scores, y)`` is the margin loss (hyperbolic) or cross-entropy.

    ``forward(x, adj) -> (N, C)`` scores (higher = more likely; argmax predicts). ``spectral_exclude``
    names the Euclidean linear classifier, which stays dense (pass it as ``exclude=`` to
    ``spectral.convert``; :func:`sparseforge.hyperbolic.tasks.setup_method` does).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, geometry: Geometry, margin: float = 2.0) -> None:
        super().__init__()
        self.encoder, self.head, self.geometry, self.margin = encoder, head, geometry, float(margin)
        self.spectral_exclude = ("head",) if geometry == "euclidean" else ()

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x, adj))

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.geometry == "hyperbolic":
            return nc_margin_loss(scores, y, margin=self.margin)
        return F.cross_entropy(scores, y)


class LinkPredictor(nn.Module):
    """Encoder + pair scores from squared distances.

    ``forward(x, adj) -> (N, dim)`` embeddings; :meth:`score` ranks pairs (higher = edge);
    :meth:`loss` is the margin loss or Fermi-Dirac BCE.
    """

    def __init__(self, encoder: nn.Module, *, geometry: Geometry, decoder: str = "margin", k: float = 1.0,
                 margin: float = 30.0, r: float = 2.0, t: float = 1.0) -> None:
        super().__init__()
        if decoder not in LP_DECODERS:
            raise UserError(f"lp decoder must be one of {', '.join(LP_DECODERS)}, got {decoder!r}")
        self.encoder, self.geometry, self.decoder_kind = encoder, geometry, decoder
        self.k, self.margin = float(k), float(margin)
        self.fd = FermiDiracDecoder(r=r, t=t)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, adj)

    def sqdist(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """d^2(h_u, h_v) for ``pairs`` (2, M): -2k - 2<h_u, h_v>_L or ||h_u - h_v||^2."""
        a, b = h[pairs[0]], h[pairs[1]]
        if self.geometry == "hyperbolic":
            return L.sqdist(a, b, k=self.k, check=False)
        return ((a - b) ** 2).sum(-1)

    def score(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        d2 = self.sqdist(h, pairs)
        return -d2 if self.decoder_kind == "margin" else fermi_dirac_logits(d2, r=self.fd.r, t=self.fd.t)

    def loss(self, h: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        sp, sn = self.score(h, pos), self.score(h, neg)
        if self.decoder_kind == "margin":
            return lp_margin_loss(sp, sn, margin=self.margin)
        return fermi_dirac_loss(sp, sn)


def build_graph_model(geometry: Geometry, task: Literal["nc", "lp"], in_features: int, num_classes: int = 2, *,
                      dim: int = 16, n_layers: int | None = None, dropout: float | None = None,
                      lp_decoder: str | None = None, k: float = 1.0, margin: float | None = None,
                      linear_layer: type[nn.Module] = nn.Linear) -> nn.Module:
    """A :class:`NodeClassifier` or :class:`LinkPredictor` with HyboNet's Disease defaults.

    Defaults (HyboNet scripts): NC 3 convolutions, dropout 0.1, margin 2; LP 2 convolutions,
    dropout 0, margin 30; LP decoder ``margin`` (hyperbolic) / ``fermi_dirac`` (Euclidean).
    """
    if geometry not in GEOMETRIES:
        raise UserError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    if task not in ("nc", "lp"):
        raise UserError(f"task must be 'nc' or 'lp', got {task!r}")
    n_layers = n_layers if n_layers is not None else (3 if task == "nc" else 2)
    dropout = dropout if dropout is not None else (0.1 if task == "nc" else 0.0)
    if geometry == "hyperbolic":
        enc: nn.Module = HyboNetEncoder(in_features, dim, n_layers, dropout=dropout, k=k, linear_layer=linear_layer)
    else:
        enc = GCNEncoder(in_features, dim, n_layers, dropout=dropout, linear_layer=linear_layer)
    if task == "nc":
        head = LorentzNCDecoder(dim, num_classes, k=k) if geometry == "hyperbolic" else nn.Linear(dim, num_classes)
        return NodeClassifier(enc, head, geometry=geometry, margin=2.0 if margin is None else margin)
    dec = lp_decoder or ("margin" if geometry == "hyperbolic" else "fermi_dirac")
    return LinkPredictor(enc, geometry=geometry, decoder=dec, k=k, margin=30.0 if margin is None else margin)


__all__ = ["GEOMETRIES", "HyboNetEncoder", "LinkPredictor", "NodeClassifier", "build_graph_model"]
