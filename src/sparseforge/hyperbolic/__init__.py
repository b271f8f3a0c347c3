"""Hyperbolic (Lorentz-model) networks: manifold ops, HyboNet layers, graph models and a Lorentz Transformer.

Papers: Chen et al., "Fully Hyperbolic Neural Networks" (HyboNet), arXiv:2105.14686; trained with
Sparse Spectral Training in Zhao et al., "Sparse Spectral Training and Inference on Euclidean and
Hyperbolic Neural Networks", arXiv:2405.15481.

* :mod:`~sparseforge.hyperbolic.lorentz` — ``inner, project, expmap0, logmap0, expmap, logmap, dist,
  transp`` (geoopt's conventions: <x, x>_L = -k, time first, ambient tangent vectors);
* :mod:`~sparseforge.hyperbolic.layers` — :class:`LorentzLinear` (its W x + b is a plain
  ``nn.Linear``, so ``spectral.convert`` works unchanged), :class:`LorentzAgg`,
  :class:`LorentzGraphConv`, :class:`LorentzMultiheadAttention`, :class:`LorentzNCDecoder`,
  :class:`FermiDiracDecoder`;
* :mod:`~sparseforge.hyperbolic.models` — :class:`HyboNetEncoder`, :class:`NodeClassifier`,
  :class:`LinkPredictor`, :func:`build_graph_model` (hyperbolic or Euclidean GCN);
* :mod:`~sparseforge.hyperbolic.transformer` — :class:`LorentzTransformer` (encoder-decoder);
* :mod:`~sparseforge.hyperbolic.tasks` — training procedures for the graph tasks and translation.

geoopt is never imported here; the tests use it as a cross-check when installed.
"""

from . import lorentz
from .layers import (
    FermiDiracDecoder,
    LorentzAgg,
    LorentzGraphConv,
    LorentzLinear,
    LorentzMultiheadAttention,
    LorentzNCDecoder,
)
from .models import HyboNetEncoder, LinkPredictor, NodeClassifier, build_graph_model

__all__ = [
    "FermiDiracDecoder",
    "HyboNetEncoder",
    "LinkPredictor",
    "LorentzAgg",
    "LorentzGraphConv",
    "LorentzLinear",
    "LorentzMultiheadAttention",
    "LorentzNCDecoder",
    "NodeClassifier",
    "build_graph_model",
    "lorentz",
]
