"""A small Lorentz (HyboNet) encoder-decoder Transformer for machine translation.

Paper: Chen et al., "Fully Hyperbolic Neural Networks", arXiv:2105.14686 (HyboNet's MT model),
trained with Sparse Spectral Training in Zhao et al., arXiv:2405.15481 (IWSLT'14: SST beats full
rank on the HyboNet Transformer at d >= 128).

Every representation is a point on H_k (d_model ambient coordinates, time first):

* embeddings: token tangent vectors v_w in R^{d-1} (|v_w| ~ 1 at init) plus sinusoidal positions
  scaled by a learnable a (init 1/sqrt(d)) in the same tangent space, mapped by
  expmap0((0, v_w + a pe_t)) (reconstructed default: a tangent-space lookup);
* attention sublayer: :class:`~sparseforge.hyperbolic.layers.LorentzMultiheadAttention` — per-head
  Lorentz q, k, v; score (2k + 2<q_i, k_j>_L)/tau + b; Lorentz midpoint of the values; an output
  LorentzLinear whose bias is the residual stream (HyboNet: residuals enter as the bias of the next
  LorentzLinear, z = W x + x_residual);
* feed-forward sublayer: LorentzLinear(d -> d_ff) then LorentzLinear(d_ff -> d) with ReLU on its
  input and the residual as its bias;
* no LayerNorm: every LorentzLinear renormalises onto the hyperboloid (its time coordinate lies in
  [1.1 sqrt(k), e^s + 1.1 sqrt(k)]);
* output logits: 2k + 2<h, p_w>_L + b_w = -d_L^2(h, p_w) + b_w against the target embedding points
  p_w = expmap0((0, v_w)) (tied, like the Euclidean model).

LorentzLinear weights start at U(+-0.1) with e^s = 2 (time coordinates in [1.1, 3.1] sqrt(k)) and the
input time column zeroed — reconstructed defaults: HyboNet's MT code uses U(+-0.02) and e^s = 10, which
on the toy language pair (d = 32, one layer, 2,000 pairs, 300 steps, lr 5e-3) left the label-smoothed
training loss at 4.08 against 2.91 with U(+-0.1) / e^s = 2 (e^s = 3: 3.01, 5: 3.58; the Euclidean
Transformer: 2.95). Pass ``init_bound=0.02, scale=10`` for HyboNet's values.
Interface as :class:`sparseforge.models.seq2seq.Seq2SeqTransformer` (``encode`` / ``decode`` /
``forward``), so :func:`sparseforge.models.seq2seq.greedy_decode` works for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.seq2seq import causal_mask, sinusoidal_positions
from . import lorentz as L
from .layers import LorentzLinear, LorentzMultiheadAttention, nc_scores


class LorentzFFN(nn.Module):
    """LorentzLinear(d -> d_ff), then LorentzLinear(d_ff -> d) on ReLU(input) with the residual as bias."""

    def __init__(self, d: int, d_ff: int, *, dropout: float = 0.0, k: float = 1.0, init_bound: float = 0.02,
                 scale: float = 10.0, linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        kw = {"k": k, "init_bound": init_bound, "scale": scale, "linear_layer": linear_layer, "dropout": dropout}
        self.fc1 = LorentzLinear(d, d_ff, **kw)
        self.fc2 = LorentzLinear(d_ff, d, nonlin=F.relu, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x), residual=x)


class LorentzEncoderLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, *, dropout: float, k: float, init_bound: float,
                 scale: float, linear_layer: type[nn.Module]) -> None:
        super().__init__()
        kw = {"dropout": dropout, "k": k, "init_bound": init_bound, "scale": scale, "linear_layer": linear_layer}
        self.self_attn = LorentzMultiheadAttention(d, n_heads, **kw)
        self.ffn = LorentzFFN(d, d_ff, **kw)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.self_attn(x, x, x, mask=mask))


class LorentzDecoderLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, *, dropout: float, k: float, init_bound: float,
                 scale: float, linear_layer: type[nn.Module]) -> None:
        super().__init__()
        kw = {"dropout": dropout, "k": k, "init_bound": init_bound, "scale": scale, "linear_layer": linear_layer}
        self.self_attn = LorentzMultiheadAttention(d, n_heads, **kw)
        self.cross_attn = LorentzMultiheadAttention(d, n_heads, **kw)
        self.ffn = LorentzFFN(d, d_ff, **kw)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor, cross_mask: torch.Tensor) -> torch.Tensor:
        y = self.self_attn(y, y, y, mask=self_mask)
        y = self.cross_attn(y, memory, memory, mask=cross_mask)
        return self.ffn(y)


class LorentzTransformer(nn.Module):
    """HyboNet-style encoder-decoder on H_k: ``forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V_tgt)``.

    Args:
        src_vocab / tgt_vocab: vocabulary sizes.
        d_model: ambient size (time included); d_model / n_heads >= 2.
        n_heads / n_layers: heads; encoder and decoder layers each.
        d_ff: feed-forward width (default 4 d_model).
        dropout: dropout on LorentzLinear inputs and attention weights.
        max_len: longest sequence; pad_id: padding id; k: curvature parameter.
        pos_scale: initial scale of the positional encodings (default 1/sqrt(d_model)).
        init_bound / scale: every LorentzLinear starts at W ~ U(+-init_bound) with e^s = ``scale``
            (reconstructed defaults 0.1 / 2; HyboNet's MT code: 0.02 / 10, see the module docstring).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, *, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None, dropout: float = 0.1, max_len: int = 256, pad_id: int = 0, k: float = 1.0,
                 pos_scale: float | None = None, init_bound: float = 0.1, scale: float = 2.0,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        if d_model % n_heads or d_model // n_heads < 2:
            raise UserError(f"d_model={d_model} must split into {n_heads} heads of >= 2 coordinates")
        d_ff = d_ff or 4 * d_model
        self.d_model, self.pad_id, self.max_len, self.k = d_model, pad_id, max_len, float(k)
        self.src_emb = nn.Embedding(src_vocab, d_model - 1, padding_idx=pad_id)
        self.tgt_emb = nn.Embedding(tgt_vocab, d_model - 1, padding_idx=pad_id)
        for emb in (self.src_emb, self.tgt_emb):
            nn.init.normal_(emb.weight, std=d_model ** -0.5)
            with torch.no_grad():
                emb.weight[pad_id].zero_()
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model - 1), persistent=False)
        # positions enter the tangent space with a learnable scale (init 1/sqrt(d): |pe| ~ sqrt(d/2) would
        # otherwise dwarf the unit-norm token vectors and push every point far from the origin)
        self.pos_scale = nn.Parameter(torch.tensor(d_model ** -0.5 if pos_scale is None else float(pos_scale)))
        kw = {"dropout": dropout, "k": k, "init_bound": init_bound, "scale": scale, "linear_layer": linear_layer}
        self.enc = nn.ModuleList(LorentzEncoderLayer(d_model, n_heads, d_ff, **kw) for _ in range(n_layers))
        self.dec = nn.ModuleList(LorentzDecoderLayer(d_model, n_heads, d_ff, **kw) for _ in range(n_layers))
        self.out_bias = nn.Parameter(torch.zeros(tgt_vocab))

    def _embed(self, emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.max_len:
            raise UserError(f"sequence of length {T} exceeds the model's max_len {self.max_len}")
        v = emb(ids) + self.pos_scale * self.pe[:T]  # (B, T, d-1) tangent at the origin
        return L.expmap0(F.pad(v, (1, 0)), k=self.k)  # (B, T, d) on H_k

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = src != self.pad_id  # (B, S)
        mask = keep[:, None, None, :]
        x = self._embed(self.src_emb, src)
        for layer in self.enc:
            x = layer(x, mask)
        return x, keep

    def output_points(self) -> torch.Tensor:
        return L.expmap0(F.pad(self.tgt_emb.weight, (1, 0)), k=self.k)  # (V, d)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_keep: torch.Tensor) -> torch.Tensor:
        T = tgt_in.shape[1]
        self_mask = causal_mask(T, tgt_in.device)[None, None]
        cross_mask = src_keep[:, None, None, :]
        y = self._embed(self.tgt_emb, tgt_in)
        for layer in self.dec:
            y = layer(y, memory, self_mask, cross_mask)
        return nc_scores(y, self.output_points(), self.out_bias, k=self.k)  # (B, T, V)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, keep = self.encode(src)
        return self.decode(tgt_in, memory, keep)


__all__ = ["LorentzDecoderLayer", "LorentzEncoderLayer", "LorentzFFN", "LorentzTransformer"]
