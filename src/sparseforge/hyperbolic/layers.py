"""HyboNet layers on the Lorentz model: linear, graph aggregation, attention and decoders.

Paper: Weize Chen, Xu Han, Yankai Lin, Hexu Zhao, Zhiyuan Liu, Peng Li, Maosong Sun, Jie Zhou,
"Fully Hyperbolic Neural Networks", ACL 2022, arXiv:2105.14686 (HyboNet). Trained with Sparse
Spectral Training in Zhao et al., "Sparse Spectral Training and Inference on Euclidean and
Hyperbolic Neural Networks", arXiv:2405.15481.

Equations (curvature -1/k, points on <x, x>_L = -k, time coordinate first):

* Lorentz linear (HyboNet eq. 3, with HyboNet's code parametrisation):
      z = W h(x) + b  (+ residual),  W in R^{n_out x n_in} acting on all n_in coordinates;
      t = sigmoid(z_0) e^s + 1.1 sqrt(k),       s learnable, initialised to ln 10;
      y = (t, z_{1:} sqrt(t^2 - k) / max(||z_{1:}||, 1e-8)).
  ``W`` and ``b`` live in a plain ``nn.Linear`` submodule named ``linear``, so
  :func:`sparseforge.spectral.convert` (SST, LoRA, ReLoRA, GaLore) swaps it unchanged: SST then
  trains W = U diag(sigma) V^T and nothing else in the layer changes. Initialisation:
  W ~ U(+-1/sqrt(n_out)) with the column of the input time coordinate zeroed, b = 0.
  The 1.1 sqrt(k) offset and sqrt(t^2 - k) scale generalise HyboNet's k = 1 constants
  (reconstructed default).
* Lorentz aggregation (the GCN step): S = A_hat Y, out = sqrt(k) S / sqrt(|<S, S>_L|).
* Lorentz attention (HyboNet's MT code): per-head Lorentz q_i, k_j, v_j;
      score_ij = (2k + 2<q_i, k_j>_L) / tau + b,  tau learnable (init sqrt(d_model)), b learnable (init 0);
      a_i = softmax_j(score_ij) after masking;  out_i = midpoint_j(a_ij, v_j) = sqrt(k) S / sqrt(|<S, S>_L|).
* Decoders: node classification score_c = 2k + 2<h, p_c>_L + b_c (= -d_L^2(h, p_c) + b_c) with
  class points p_c = expmap0((0, v_c)) (tangent parametrisation, so plain Adam trains them);
  link prediction score = -d_L^2(h_u, h_v) (margin loss) or the Fermi-Dirac probability
  P = 1 / (exp((d^2 - r)/t) + 1) (Ganea et al. / HGCN, Chami et al. arXiv:1910.12933).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from . import lorentz as L

# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------


def lorentz_map(z: torch.Tensor, log_scale: torch.Tensor, *, k: float = 1.0, heads: int = 1,
                offset: float = 1.1, eps: float = 1e-8) -> torch.Tensor:
    """HyboNet's map of a linear output z onto the hyperboloid (per head when ``heads > 1``).

    Args:
        z: (..., n) with n divisible by ``heads``; each head's first coordinate is its time.
        log_scale: s (scalar, or (heads,)): the time coordinate is sigmoid(z_0) e^s + offset sqrt(k).
        k: curvature parameter (> 0).
        heads: number of independent Lorentz points in the last axis.
    """
    if heads > 1:
        shp = z.shape
        z = z.reshape(*shp[:-1], heads, shp[-1] // heads)  # (..., H, n/H)
        s = log_scale.reshape(-1, 1) if log_scale.numel() > 1 else log_scale
        return lorentz_map(z, s, k=k, heads=1, offset=offset, eps=eps).reshape(shp)
    zt, zs = z[..., :1], z[..., 1:]
    t = torch.sigmoid(zt) * log_scale.exp() + offset * math.sqrt(k)  # (..., 1)
    sq = (t * t - k).clamp_min(0).sqrt()
    nrm = zs.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.cat([t, zs * (sq / nrm)], dim=-1)


def minkowski_scores(q: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
    """All-pairs Minkowski products <q_i, k_j>_L: (..., Tq, n) x (..., Tk, n) -> (..., Tq, Tk)."""
    kk = torch.cat([-kk[..., :1], kk[..., 1:]], dim=-1)
    return q @ kk.transpose(-1, -2)


def lorentz_attention(q: torch.Tensor, kk: torch.Tensor, v: torch.Tensor, *, k: float = 1.0,
                      tau: torch.Tensor | float = 1.0, bias: torch.Tensor | float = 0.0,
                      mask: torch.Tensor | None = None, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """Lorentz attention: softmax_j((2k + 2<q_i, k_j>_L)/tau + b) then the Lorentz midpoint of v.

    Args:
        q / kk / v: (..., Tq, n), (..., Tk, n), (..., Tk, n) points on H_k.
        mask: boolean, broadcastable to (..., Tq, Tk); True = may attend.
    Returns:
        (..., Tq, n) points on H_k.
    """
    scores = (2 * k + 2 * minkowski_scores(q, kk)) / tau + bias  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    a = torch.softmax(scores, dim=-1)
    a = torch.nan_to_num(a)  # a fully masked row attends to nothing (its midpoint falls back below)
    if dropout > 0 and training:
        a = F.dropout(a, dropout, training=True)
    S = a @ v  # (..., Tq, n)
    return L.normalize(S, k=k)


def nc_scores(h: torch.Tensor, points: torch.Tensor, bias: torch.Tensor | None = None, *, k: float = 1.0) -> torch.Tensor:
    """Node-classification scores 2k + 2<h, p_c>_L + b_c: (N, n) x (C, n) -> (N, C)."""
    s = 2 * k + 2 * minkowski_scores(h, points)
    return s if bias is None else s + bias


def fermi_dirac_logits(sqdist: torch.Tensor, *, r: float = 2.0, t: float = 1.0) -> torch.Tensor:
    """Logit of the Fermi-Dirac edge probability 1 / (exp((d^2 - r)/t) + 1), i.e. (r - d^2)/t."""
    return (r - sqdist) / t


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------


class LorentzLinear(nn.Module):
    """HyboNet's Lorentz linear layer; its W x + b is the plain ``nn.Linear`` ``self.linear``.

    Args:
        in_features: ambient input size (time coordinate included).
        out_features: ambient output size (time included; per head when ``heads > 1``).
        bias: bias of the inner linear.
        dropout: dropout on the input (after ``nonlin``).
        scale: initial e^s (time coordinate range), HyboNet: 10.
        fixscale: keep s fixed.
        nonlin: optional activation applied to the input first.
        k: curvature parameter.
        heads: output ``heads`` Lorentz points of out_features / heads coordinates each.
        init_bound: W ~ U(+-init_bound); default 1/sqrt(out_features) (graph code; MT code: 0.02).
        linear_layer: the inner layer class (injectable; default ``nn.Linear``).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, dropout: float = 0.0,
                 scale: float = 10.0, fixscale: bool = False, nonlin: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 k: float = 1.0, heads: int = 1, init_bound: float | None = None,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        if out_features % heads or out_features // heads < 2:
            raise UserError(f"LorentzLinear: out_features={out_features} must split into {heads} heads of >= 2 coordinates")
        if in_features < 2:
            raise UserError(f"LorentzLinear: in_features={in_features} must be >= 2 (time + space)")
        self.in_features, self.out_features, self.heads, self.k = in_features, out_features, heads, float(k)
        self.linear = linear_layer(in_features, out_features, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.nonlin = nonlin
        init = torch.full((heads,) if heads > 1 else (), math.log(scale))
        self.scale = nn.Parameter(init, requires_grad=not fixscale)
        self.reset_parameters(init_bound)

    @torch.no_grad()
    def reset_parameters(self, init_bound: float | None = None) -> None:
        lin = self.linear
        if not isinstance(getattr(lin, "weight", None), torch.Tensor) or not isinstance(lin.weight, nn.Parameter):
            return  # an injected layer with its own parametrisation keeps its init
        bound = 1.0 / math.sqrt(self.out_features) if init_bound is None else init_bound
        lin.weight.uniform_(-bound, bound)
        lin.weight[:, 0] = 0  # the input time coordinate starts ignored (HyboNet)
        if getattr(lin, "bias", None) is not None:
            lin.bias.zero_()

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.nonlin is not None:
            x = self.nonlin(x)
        z = self.linear(self.dropout(x))  # (..., out)
        if residual is not None:
            z = z + residual  # residual connection as the bias of this layer (HyboNet MT)
        return lorentz_map(z, self.scale, k=self.k, heads=self.heads)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, heads={self.heads}, k={self.k:g}"


def aggregate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A x for a sparse (COO/CSR) or dense (N, N) adjacency and (N, d) features."""
    return torch.sparse.mm(adj, x) if adj.layout != torch.strided else adj @ x


class LorentzAgg(nn.Module):
    """Lorentz neighbourhood aggregation: sqrt(k) S / sqrt(|<S, S>_L|) with S = A_hat Y."""

    def __init__(self, *, k: float = 1.0) -> None:
        super().__init__()
        self.k = float(k)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return L.normalize(aggregate(adj, x), k=self.k)


class LorentzGraphConv(nn.Module):
    """HyboNet graph convolution: :class:`LorentzLinear` then :class:`LorentzAgg`."""

    def __init__(self, in_features: int, out_features: int, *, dropout: float = 0.0, bias: bool = True,
                 nonlin: Callable[[torch.Tensor], torch.Tensor] | None = None, k: float = 1.0,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        self.lin = LorentzLinear(in_features, out_features, bias=bias, dropout=dropout, nonlin=nonlin, k=k,
                                 linear_layer=linear_layer)
        self.agg = LorentzAgg(k=k)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.agg(self.lin(x), adj)


class LorentzMultiheadAttention(nn.Module):
    """HyboNet multi-head attention on H_k.

    q, k, v are per-head Lorentz points produced by :class:`LorentzLinear` layers with ``heads``
    heads (one ``nn.Linear`` each, so SST converts them); the heads' midpoints are concatenated
    and mapped by an output :class:`LorentzLinear` that takes the residual stream as its bias
    (the output projection is a reconstructed default).

    Args:
        d_model: ambient size (time included); d_model / n_heads >= 2.
        n_heads: number of heads.
        dropout: dropout on the attention weights and on the projections' inputs.
        k: curvature parameter.
        init_bound / scale: the projections' LorentzLinear init (U(+-init_bound)) and initial e^s.
    """

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, k: float = 1.0,
                 init_bound: float | None = 0.02, scale: float = 10.0, linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        if d_model % n_heads or d_model // n_heads < 2:
            raise UserError(f"d_model={d_model} must split into {n_heads} heads of >= 2 coordinates")
        self.d_model, self.n_heads, self.k, self.attn_dropout = d_model, n_heads, float(k), dropout
        kw = {"k": k, "init_bound": init_bound, "scale": scale, "linear_layer": linear_layer}
        self.q_proj = LorentzLinear(d_model, d_model, heads=n_heads, dropout=dropout, **kw)
        self.k_proj = LorentzLinear(d_model, d_model, heads=n_heads, dropout=dropout, **kw)
        self.v_proj = LorentzLinear(d_model, d_model, heads=n_heads, dropout=dropout, **kw)
        self.out_proj = LorentzLinear(d_model, d_model, dropout=dropout, **kw)
        self.tau = nn.Parameter(torch.tensor(math.sqrt(d_model)))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                mask: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``query`` (B, Tq, d) over ``key``/``value`` (B, Tk, d).

        Args:
            mask: boolean, broadcastable to (B, 1, Tq, Tk) (True = may attend).
            residual: added to the output projection's pre-activation (default ``query``).
        """
        B, Tq, d = query.shape
        Tk, H = key.shape[1], self.n_heads

        def split(t: torch.Tensor, T: int) -> torch.Tensor:
            return t.view(B, T, H, d // H).transpose(1, 2)  # (B, H, T, d/H)

        q, kk, v = split(self.q_proj(query), Tq), split(self.k_proj(key), Tk), split(self.v_proj(value), Tk)
        ctx = lorentz_attention(q, kk, v, k=self.k, tau=self.tau, bias=self.bias, mask=mask,
                                dropout=self.attn_dropout, training=self.training)  # (B, H, Tq, d/H)
        ctx = ctx.transpose(1, 2).reshape(B, Tq, d)  # heads concatenated
        return self.out_proj(ctx, residual=query if residual is None else residual)


class LorentzNCDecoder(nn.Module):
    """Class points p_c = expmap0((0, v_c)) and biases b_c; scores 2k + 2<h, p_c>_L + b_c.

    Args:
        dim: ambient size of the node embeddings (time included).
        num_classes: C.
        k: curvature parameter.
        bias: learn b_c.
    """

    def __init__(self, dim: int, num_classes: int, *, k: float = 1.0, bias: bool = True) -> None:
        super().__init__()
        self.k = float(k)
        self.tangent = nn.Parameter(torch.randn(num_classes, dim - 1) / math.sqrt(dim))  # v_c (C, dim-1)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def points(self) -> torch.Tensor:
        v = F.pad(self.tangent, (1, 0))  # (C, dim) with u_0 = 0
        return L.expmap0(v, k=self.k)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nc_scores(h, self.points(), self.bias, k=self.k)


class FermiDiracDecoder(nn.Module):
    """Edge probability 1 / (exp((d^2 - r)/t) + 1) from a squared distance d^2 (HGCN's decoder).

    ``forward`` returns the probability; :meth:`logits` the logit (r - d^2)/t used with
    binary cross-entropy.
    """

    def __init__(self, *, r: float = 2.0, t: float = 1.0) -> None:
        super().__init__()
        if t <= 0:
            raise UserError(f"Fermi-Dirac temperature t must be > 0, got {t}")
        self.r, self.t = float(r), float(t)

    def logits(self, sqdist: torch.Tensor) -> torch.Tensor:
        return fermi_dirac_logits(sqdist, r=self.r, t=self.t)

    def forward(self, sqdist: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(sqdist))

    def extra_repr(self) -> str:
        return f"r={self.r:g}, t={self.t:g}"


__all__ = [
    "FermiDiracDecoder",
    "LorentzAgg",
    "LorentzGraphConv",
    "LorentzLinear",
    "LorentzMultiheadAttention",
    "LorentzNCDecoder",
    "aggregate",
    "fermi_dirac_logits",
    "lorentz_attention",
    "lorentz_map",
    "minkowski_scores",
    "nc_scores",
]
