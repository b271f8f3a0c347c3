"""A small OPT-style decoder-only language model (the SST paper's LM family, at laptop scale).

OPT (Zhang et al., arXiv:2205.01068) block, pre-LN:
    h = x + OutProj(Attn(LN1(x)))          causal multi-head attention, q/k/v/out projections
    y = h + FC2(ReLU(FC1(LN2(h))))          MLP of width ``mlp_ratio * d``
Learned absolute position embeddings, a final LayerNorm, an LM head tied to the token embedding
(so it is no ``nn.Linear`` and stays dense under ``spectral.convert``). Linear weights and
embeddings ~ N(0, 0.02), biases 0 (OPT's init). ``linear_layer`` is injectable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, linear: Callable[..., nn.Module]) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model={d} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, h, C // h).transpose(1, 2)  # (B, h, T, C/h)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, C/h)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, mlp_ratio: int, linear: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_heads, linear)
        self.fc1, self.fc2 = linear(d, mlp_ratio * d), linear(mlp_ratio * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.relu(self.fc1(self.ln2(x))))  # (B, T, C)


class CausalLM(nn.Module):
    """Decoder-only LM: ``forward(idx (B, T) long) -> logits (B, T, vocab)``."""

    def __init__(self, *, vocab_size: int = 256, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 mlp_ratio: int = 4, seq_len: int = 64, linear_layer: Callable[..., nn.Module] = nn.Linear,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self.vocab_size, self.d_model, self.seq_len = vocab_size, d_model, seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, linear_layer) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's seq_len {self.seq_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C)
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln_f(x), self.tok_emb.weight)  # tied head: (B, T, vocab)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lm_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy of a batch ``(x, y)`` of token windows (B, T) (a ``fit`` step function).

    Hugging Face causal LMs are accepted too (their output's ``.logits``).
    """
    x, y = batch
    out = model(x)
    logits = getattr(out, "logits", out)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # logits (B, T, V)


@torch.no_grad()
def perplexity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int = 64, device: Any = "cpu") -> float:
    """exp(mean token NLL) over the windows ``(x, y)`` (B, T), in chunks of ``batch`` windows."""
    import math

    tot, n = 0.0, 0
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        out = model(xb)
        logits = getattr(out, "logits", out)  # (b, T, V)
        tot += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum"))
        n += yb.numel()
    return math.exp(tot / max(1, n))


@register_model("causal_lm", input_shape=(64,), input_dtype="long", vocab_size=256)
def causal_lm(*, vocab_size: int = 256, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
              mlp_ratio: int = 4, seq_len: int = 64, **kw: Any) -> CausalLM:
    """OPT-style byte-level LM (defaults: d = 64, 2 layers, 4 heads, context 64, V = 256)."""
    return CausalLM(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                    mlp_ratio=mlp_ratio, seq_len=seq_len, **kw)


__all__ = ["CausalLM", "causal_lm", "lm_step", "perplexity"]
