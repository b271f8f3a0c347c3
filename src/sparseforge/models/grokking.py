"""Models of the grokking-tickets experiments: a modular-arithmetic MLP and a one-layer Transformer.

Paper: Gouki Minegishi, Yusuke Iwasawa, Yutaka Matsuo, "Grokking Tickets: Lottery Tickets
Accelerate Grokking" (arXiv 2310.19470; v3: "Bridging Lottery Ticket and Grokking").


MLP (paper eq. 1), no biases, every matrix trainable and prunable::

    e      = E[:, a] + E[:, b]                      E   in R^{d_emb x p}
    h      = ReLU(W_in e)                           W_in  in R^{d_hidden x d_emb}
    logits = W_U^T (W_out h)                        W_out in R^{d_emb x d_hidden}, W_U in R^{d_emb x p}

each matrix initialised from N(0, kappa^2 / fan_in) (fan-ins p, d_emb, d_hidden, d_emb).
E is stored transposed, ``embed`` of shape (p, d_emb), the ``nn.Embedding`` layout (a fast lookup).
With d_emb = 500, d_hidden = 48, p = 67 it has 115,000 weights.

One-layer Transformer (the repository's pruning model): tokens [a, b], no "=" token, no positional
embedding, no LayerNorm, no biases, one causal head with d_head = d_model::

    x  = E[:, tokens]^T                                        # (B, 2, d)
    x  = x + W_O softmax(mask(Q K^T / sqrt(d_head))) V         # Q = x W_Q^T, ...
    x  = x + W_out ReLU(W_in x)
    logits = x[:, -1] W_U                                      # (B, p)

E ~ N(0, 1/p), all other matrices ~ N(0, 1/d_model) (variances). With d_model = 128 and p = 67 it
has 115,456 weights. ``pos_emb`` and ``mlp_bias`` reproduce the v3 appendix variant (off by default).

Both models also accept a *soft one-hot* input through :meth:`forward_onehot` (``(B, 2, p)``
float): SynFlow's data-free "all-ones input" for a token model is the embedding applied to an
all-ones vocabulary vector at each position (a reconstructed choice for SynFlow on token models).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model

__all__ = ["ModMLP", "ModTransformer", "grokking_mlp", "grokking_transformer", "float64_cross_entropy"]


def float64_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the logits cast to float64 first (a float32 loss underflows late in training, once the train loss is ~1e-8)."""
    return F.cross_entropy(logits.double(), target)


class ModMLP(nn.Module):
    """The paper's modular-arithmetic MLP (eq. 1): embed, sum the two tokens, one ReLU layer, unembed.

    Args:
        p: modulus = vocabulary size.
        d_emb: embedding width (paper: 500).
        d_hidden: hidden width (paper: 48).
        num_classes: output classes (``p`` for ``a op b mod p``; ``2p-1`` for ``add_nomod``).
        init_scale: kappa; every matrix is drawn from N(0, kappa^2 / fan_in).
    """

    def __init__(self, p: int = 67, *, d_emb: int = 500, d_hidden: int = 48, num_classes: int | None = None,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        c = num_classes or p
        self.p, self.vocab_size, self.num_classes = p, p, c
        self.embed = nn.Parameter(torch.empty(p, d_emb))  # E^T: (p, d_emb), row t = token t (nn.Embedding layout)
        self.w_in = nn.Parameter(torch.empty(d_hidden, d_emb))
        self.w_out = nn.Parameter(torch.empty(d_emb, d_hidden))
        self.unembed = nn.Parameter(torch.empty(d_emb, c))  # W_U
        self.init_scale = init_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = self.init_scale
        for w, fan_in in ((self.embed, self.p), (self.w_in, self.w_in.shape[1]),
                          (self.w_out, self.w_out.shape[1]), (self.unembed, self.unembed.shape[0])):
            nn.init.normal_(w, 0.0, k / math.sqrt(fan_in))

    def _from_embedded(self, e: torch.Tensor) -> torch.Tensor:
        # e: (B, 2, d_emb)
        h = F.relu(e.sum(1) @ self.w_in.T)  # (B, d_hidden)
        return (h @ self.w_out.T) @ self.unembed  # (B, d_emb) -> (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 2) long tokens -> (B, num_classes) logits."""
        return self._from_embedded(F.embedding(x, self.embed))  # (B, 2, d_emb)

    def forward_onehot(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 2, p) soft one-hot -> logits (``E x`` instead of a lookup)."""
        return self._from_embedded(x @ self.embed)  # (B, 2, p) @ (p, d_emb)

    def neuron_token_map(self) -> torch.Tensor:
        """U = W_in E: (d_hidden, p), each hidden neuron's response to each token."""
        return self.w_in @ self.embed.T


class ModTransformer(nn.Module):
    """One-layer, one-head causal Transformer on the token pair, read out at the last position.

    Args:
        p: modulus = vocabulary size.
        d_model: residual width (= d_head, one head).
        d_mlp: MLP width.
        num_classes: output classes (default ``p``).
        n_ctx: sequence length (2: the tokens a, b).
        pos_emb: add a learned positional embedding (v3 appendix; off in the repository's code).
        mlp_bias: give the MLP biases (v3 appendix; off in the repository's code).
    """

    def __init__(self, p: int = 67, *, d_model: int = 128, d_mlp: int = 128, num_classes: int | None = None,
                 n_ctx: int = 2, pos_emb: bool = False, mlp_bias: bool = False) -> None:
        super().__init__()
        c = num_classes or p
        d = d_model
        self.p, self.vocab_size, self.num_classes, self.d_model = p, p, c, d
        self.embed = nn.Parameter(torch.randn(p, d) / math.sqrt(p))  # E^T (p, d), E ~ N(0, 1/p)
        self.pos = nn.Parameter(torch.randn(n_ctx, d) / math.sqrt(d)) if pos_emb else None
        s = 1.0 / math.sqrt(d)
        self.w_q = nn.Parameter(torch.randn(d, d) * s)
        self.w_k = nn.Parameter(torch.randn(d, d) * s)
        self.w_v = nn.Parameter(torch.randn(d, d) * s)
        self.w_o = nn.Parameter(torch.randn(d, d) * s)
        self.w_in = nn.Parameter(torch.randn(d_mlp, d) * s)
        self.w_out = nn.Parameter(torch.randn(d, d_mlp) * s)
        self.b_in = nn.Parameter(torch.zeros(d_mlp)) if mlp_bias else None
        self.b_out = nn.Parameter(torch.zeros(d)) if mlp_bias else None
        self.unembed = nn.Parameter(torch.randn(d, c) * s)
        self.register_buffer("causal", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)

    def _from_embedded(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d)
        if self.pos is not None:
            x = x + self.pos[: x.shape[1]]
        q, k, v = x @ self.w_q.T, x @ self.w_k.T, x @ self.w_v.T  # (B, T, d) each
        att = (q @ k.transpose(1, 2)) / math.sqrt(self.d_model)  # (B, T, T)
        T = x.shape[1]
        att = att.masked_fill(~self.causal[:T, :T], float("-inf")).softmax(-1)
        x = x + (att @ v) @ self.w_o.T
        h = x @ self.w_in.T
        if self.b_in is not None:
            h = h + self.b_in
        m = F.relu(h) @ self.w_out.T
        if self.b_out is not None:
            m = m + self.b_out
        x = x + m
        return x[:, -1] @ self.unembed  # (B, C): logits at the last position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 2) long tokens -> (B, num_classes) logits."""
        return self._from_embedded(F.embedding(x, self.embed))  # (B, 2, d)

    def forward_onehot(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, p) soft one-hot -> logits."""
        return self._from_embedded(x @ self.embed)

    def neuron_token_map(self) -> torch.Tensor:
        """U = W_in E: (d_mlp, p), each MLP neuron's direct response to each token."""
        return self.w_in @ self.embed.T


@register_model("grokking_mlp", input_shape=(2,), input_dtype="long", vocab_size=67, task="modular")
def grokking_mlp(*, p: int = 67, d_emb: int = 500, d_hidden: int = 48, num_classes: int | None = None,
                 init_scale: float = 1.0, **_: object) -> ModMLP:
    """The paper's MLP (115,000 weights at the defaults)."""
    return ModMLP(p, d_emb=d_emb, d_hidden=d_hidden, num_classes=num_classes, init_scale=init_scale)


@register_model("grokking_transformer", input_shape=(2,), input_dtype="long", vocab_size=67, task="modular")
def grokking_transformer(*, p: int = 67, d_model: int = 128, d_mlp: int = 128, num_classes: int | None = None,
                         pos_emb: bool = False, mlp_bias: bool = False, **_: object) -> ModTransformer:
    """The repository's one-layer Transformer (115,456 weights at the defaults)."""
    return ModTransformer(p, d_model=d_model, d_mlp=d_mlp, num_classes=num_classes, pos_emb=pos_emb,
                          mlp_bias=mlp_bias)
