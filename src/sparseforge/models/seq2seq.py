"""A small encoder-decoder Transformer for translation, and greedy decoding for any such model.

Paper: Vaswani et al., "Attention Is All You Need", arXiv:1706.03762 — the Euclidean baseline of
the translation experiments in Zhao et al., "Sparse Spectral Training and Inference on Euclidean and
Hyperbolic Neural Networks", arXiv:2405.15481.

Post-LN blocks (the original Transformer and fairseq's IWSLT default):
    encoder:  x = LN(x + Drop(SelfAttn(x)));            x = LN(x + Drop(FFN(x)))
    decoder:  y = LN(y + Drop(CausalSelfAttn(y)));      y = LN(y + Drop(CrossAttn(y, memory)));
              y = LN(y + Drop(FFN(y)))
    FFN(x) = W2 ReLU(W1 x + b1) + b2;  embeddings scaled by sqrt(d) plus sinusoidal positions;
    output logits tied to the target embedding (so the head is no ``nn.Linear`` and stays dense under
    ``spectral.convert``, like the tied LM heads of the paper's comparison).
Every projection (q, k, v, out, W1, W2) is a plain ``nn.Linear`` (``linear_layer`` is injectable).

Interface shared with :class:`sparseforge.hyperbolic.transformer.LorentzTransformer`:
``encode(src) -> (memory, src_keep)``, ``decode(tgt_in, memory, src_keep) -> logits``,
``forward(src, tgt_in) -> logits`` with ``src_keep`` (B, S) True at real tokens.
Not in the model registry (two inputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """(n, d) sinusoidal position encodings (Vaswani et al., sec. 3.5)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / d)  # (n, ceil(d/2))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe


def pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """(B, T_max) int64 right-padded batch."""
    T = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.as_tensor(s)
    return out


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True where position i may attend to j (j <= i)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class MultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention with plain ``nn.Linear`` q/k/v/out projections."""

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        if d_model % n_heads:
            raise UserError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (linear_layer(d_model, d_model) for _ in range(4))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` bool broadcastable to (B, H, Tq, Tk), True = may attend."""
        B, Tq, d = query.shape
        Tk, H = key.shape[1], self.n_heads

        def split(t: torch.Tensor, T: int) -> torch.Tensor:
            return t.view(B, T, H, d // H).transpose(1, 2)  # (B, H, T, d/H)

        q, k, v = split(self.q_proj(query), Tq), split(self.k_proj(key), Tk), split(self.v_proj(value), Tk)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, Tq, d))  # (B, Tq, d)


class _FFN(nn.Module):
    def __init__(self, d: int, d_ff: int, dropout: float, linear_layer: type[nn.Module]) -> None:
        super().__init__()
        self.fc1, self.fc2 = linear_layer(d, d_ff), linear_layer(d_ff, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float, linear_layer: type[nn.Module]) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d, n_heads, dropout=dropout, linear_layer=linear_layer)
        self.ffn = _FFN(d, d_ff, dropout, linear_layer)
        self.ln1, self.ln2, self.drop = nn.LayerNorm(d), nn.LayerNorm(d), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.drop(self.self_attn(x, x, x, mask=mask)))
        return self.ln2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float, linear_layer: type[nn.Module]) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d, n_heads, dropout=dropout, linear_layer=linear_layer)
        self.cross_attn = MultiheadAttention(d, n_heads, dropout=dropout, linear_layer=linear_layer)
        self.ffn = _FFN(d, d_ff, dropout, linear_layer)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor, cross_mask: torch.Tensor) -> torch.Tensor:
        y = self.ln1(y + self.drop(self.self_attn(y, y, y, mask=self_mask)))
        y = self.ln2(y + self.drop(self.cross_attn(y, memory, memory, mask=cross_mask)))
        return self.ln3(y + self.drop(self.ffn(y)))


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: ``forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V_tgt)``.

    Args:
        src_vocab / tgt_vocab: vocabulary sizes.
        d_model: width; n_heads: heads; n_layers: encoder and decoder layers each.
        d_ff: FFN width (default 4 d_model).
        dropout: dropout rate.
        max_len: longest sequence.
        pad_id: padding id (ignored by attention).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, *, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None, dropout: float = 0.1, max_len: int = 256, pad_id: int = 0,
                 linear_layer: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.d_model, self.pad_id, self.max_len = d_model, pad_id, max_len
        self.src_emb = nn.Embedding(src_vocab, d_model, padding_idx=pad_id)
        self.tgt_emb = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model), persistent=False)
        self.enc = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, linear_layer) for _ in range(n_layers))
        self.dec = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout, linear_layer) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.out_bias = nn.Parameter(torch.zeros(tgt_vocab))
        for emb in (self.src_emb, self.tgt_emb):
            nn.init.normal_(emb.weight, std=d_model ** -0.5)
            with torch.no_grad():
                emb.weight[pad_id].zero_()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _embed(self, emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.max_len:
            raise UserError(f"sequence of length {T} exceeds the model's max_len {self.max_len}")
        return self.drop(emb(ids) * math.sqrt(self.d_model) + self.pe[:T])

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = src != self.pad_id  # (B, S)
        mask = keep[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(self.src_emb, src)
        for layer in self.enc:
            x = layer(x, mask)
        return x, keep

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_keep: torch.Tensor) -> torch.Tensor:
        T = tgt_in.shape[1]
        self_mask = causal_mask(T, tgt_in.device)[None, None]  # (1, 1, T, T)
        cross_mask = src_keep[:, None, None, :]
        y = self._embed(self.tgt_emb, tgt_in)
        for layer in self.dec:
            y = layer(y, memory, self_mask, cross_mask)
        return y @ self.tgt_emb.weight.T + self.out_bias  # (B, T, V) tied output

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, keep = self.encode(src)
        return self.decode(tgt_in, memory, keep)


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, *, bos_id: int, eos_id: int, pad_id: int,
                  max_len: int = 64) -> list[list[int]]:
    """Greedy decoding for a model with ``encode`` / ``decode``; returns ids without <bos>/<eos>.

    Decoding stops once every sentence produced <eos> or after ``max_len`` tokens.
    """
    memory, keep = model.encode(src)
    B = src.shape[0]
    ys = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        nxt = model.decode(ys, memory, keep)[:, -1].argmax(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    out = []
    for row in ys[:, 1:].tolist():
        seq = []
        for t in row:
            if t in (eos_id, pad_id):
                break
            seq.append(t)
        out.append(seq)
    return out


__all__ = ["MultiheadAttention", "Seq2SeqTransformer", "causal_mask", "greedy_decode", "pad_batch", "sinusoidal_positions"]
