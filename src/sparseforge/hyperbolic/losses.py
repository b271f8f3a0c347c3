"""Training objectives of HyboNet's graph tasks and of HGCN's Fermi-Dirac link predictor.

Papers: Chen et al., "Fully Hyperbolic Neural Networks", arXiv:2105.14686 (HyboNet, margin losses);
Chami et al., "Hyperbolic Graph Convolutional Neural Networks", arXiv:1910.12933 (Fermi-Dirac
decoder with binary cross-entropy). Used by Zhao et al., arXiv:2405.15481.

* node classification, margin (HyboNet's code):  mean_{n, c} ReLU(m - s_{n, y_n} + s_{n, c}),
  the mean over nodes *and* all classes, c = y_n included (that term is the constant m, so it
  contributes m / C);
* link prediction, margin (HyboNet's code): with one sampled negative per positive pair,
  mean over pairs and s in {s_pos, s_neg} of ReLU(m - s_pos + s) (the s = s_pos entry is the
  constant m and the averaging halves the gradient: kept so learning rates carry over);
* link prediction, Fermi-Dirac: BCE(logit(P(u, v)), 1) on positives and 0 on negatives, averaged
  over all pairs, with logit P = (r - d^2)/t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nc_margin_loss(scores: torch.Tensor, y: torch.Tensor, *, margin: float = 2.0) -> torch.Tensor:
    """HyboNet's node-classification loss on (N, C) scores and (N,) labels."""
    correct = scores.gather(1, y.view(-1, 1))  # (N, 1)
    return F.relu(margin - correct + scores).mean()


def lp_margin_loss(pos: torch.Tensor, neg: torch.Tensor, *, margin: float = 30.0) -> torch.Tensor:
    """HyboNet's link-prediction loss on paired (M,) positive and negative scores."""
    preds = torch.stack([pos, neg], dim=-1)  # (M, 2)
    return F.relu(margin - pos.unsqueeze(-1) + preds).mean()


def fermi_dirac_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on positive (label 1) and negative (label 0) edge logits, all pairs averaged."""
    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat([torch.ones_like(pos_logits), torch.zeros_like(neg_logits)])
    return F.binary_cross_entropy_with_logits(logits, labels)


__all__ = ["fermi_dirac_loss", "lp_margin_loss", "nc_margin_loss"]
