"""Latent operators on a regular grid: a Fourier neural operator and a linear-attention transformer.

FNO: Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations",
arXiv 2010.08895. One block on channels-first grids z (B, C, G_1, ..., G_d):

    z <- sigma( F^-1[ R_k . F[z](k) ]  +  W z ),

F the real FFT over the grid axes, R_k a learned complex (C_in x C_out) matrix for each kept mode k
(the lowest ``modes`` frequencies per axis, both signs on all but the last axis; every frequency
when 2 * modes >= G), W a pointwise linear map, sigma = GELU (none after the last block). No
padding: the operator is equivariant to circular shifts of the grid.

Linear attention: Katharopoulos et al., "Transformers are RNNs", arXiv 2006.16236, with
phi(x) = elu(x) + 1:  Attn(Q, K, V)_i = phi(q_i)^T sum_j phi(k_j) v_j^T / (phi(q_i)^T sum_j phi(k_j)).
Used as GIOROM's 2025 latent operator (Viswanath et al., arXiv 2407.03925).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _kept(g: int, m: int, last: bool) -> Tensor:
    if last:
        return torch.arange(min(m, g // 2 + 1))
    if 2 * m >= g:
        return torch.arange(g)
    return torch.cat([torch.arange(m), torch.arange(g - m, g)])


def _pointwise(lin: nn.Linear, x: Tensor) -> Tensor:
    """Apply a Linear over the channel axis 1 of (B, C, ...)."""
    return lin(x.movedim(1, -1)).movedim(-1, 1)


class SpectralConv(nn.Module):
    """Fourier layer F^-1[R . F[z]] over the last ``len(grid_shape)`` axes of (B, C_in, *grid).

    Args:
        in_channels, out_channels: channel widths.
        modes: kept frequencies per axis (an int for all axes).
        grid_shape: the grid size per axis (fixes which modes exist).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | Sequence[int], grid_shape: Sequence[int]) -> None:
        super().__init__()
        d = len(grid_shape)
        modes = [modes] * d if isinstance(modes, int) else list(modes)
        self.grid_shape = tuple(int(g) for g in grid_shape)
        self.in_channels, self.out_channels = in_channels, out_channels
        for i, (g, m) in enumerate(zip(self.grid_shape, modes)):
            self.register_buffer(f"kept{i}", _kept(g, m, i == d - 1), persistent=False)
        kshape = [len(getattr(self, f"kept{i}")) for i in range(d)]
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(in_channels, out_channels, *kshape, 2))

    def _index(self) -> tuple[Tensor, ...]:
        d = len(self.grid_shape)
        return torch.meshgrid(*[getattr(self, f"kept{i}") for i in range(d)], indexing="ij")

    def forward(self, x: Tensor) -> Tensor:
        d = len(self.grid_shape)
        dims = tuple(range(-d, 0))
        X = torch.fft.rfftn(x, dim=dims)  # (B, C_in, G_1, ..., G_d // 2 + 1)
        idx = self._index()
        Xk = X[(slice(None), slice(None), *idx)]  # (B, C_in, k_1, ..., k_d)
        W = torch.view_as_complex(self.weight)  # (C_in, C_out, k_1, ..., k_d)
        B, kshape = Xk.shape[0], Xk.shape[2:]
        xm = Xk.flatten(2).permute(2, 0, 1)  # (K, B, C_in)
        wm = W.flatten(2).permute(2, 0, 1)  # (K, C_in, C_out)
        Yk = torch.bmm(xm, wm).permute(1, 2, 0).reshape(B, self.out_channels, *kshape)  # one matmul per mode
        Y = X.new_zeros((x.shape[0], self.out_channels, *X.shape[2:]))
        Y[(slice(None), slice(None), *idx)] = Yk
        return torch.fft.irfftn(Y, s=self.grid_shape, dim=dims)


class FNO(nn.Module):
    """Lift (pointwise) -> ``n_blocks`` Fourier blocks -> project (pointwise), channels first."""

    def __init__(self, in_channels: int, out_channels: int, *, grid_shape: Sequence[int], width: int = 32,
                 modes: int = 12, n_blocks: int = 2) -> None:
        super().__init__()
        self.lift = nn.Linear(in_channels, width)
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes, grid_shape) for _ in range(n_blocks))
        self.skip = nn.ModuleList(nn.Linear(width, width) for _ in range(n_blocks))
        self.project = nn.Linear(width, out_channels)

    def forward(self, z: Tensor) -> Tensor:
        """(B, C_in, *grid) -> (B, C_out, *grid)."""
        z = _pointwise(self.lift, z)
        n = len(self.spectral)
        for i, (sc, sk) in enumerate(zip(self.spectral, self.skip)):
            z = sc(z) + _pointwise(sk, z)
            if i < n - 1:
                z = F.gelu(z)
        return _pointwise(self.project, z)


def linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """(B, H, N, D) queries/keys/values -> (B, H, N, D), phi = elu + 1."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    kv = torch.einsum("bhnd,bhne->bhde", k, v)  # (B, H, D, D)
    z = 1.0 / (torch.einsum("bhnd,bhd->bhn", q, k.sum(2)) + 1e-6)
    return torch.einsum("bhnd,bhde,bhn->bhne", q, kv, z)


class LinearAttentionLatent(nn.Module):
    """A linear-attention transformer over the G^d grid tokens (channels first in and out).

    Args:
        in_channels, out_channels: channel widths.
        grid_shape: grid size per axis.
        width: token width; heads: attention heads; n_blocks: blocks; ff: feed-forward width.
        kv_source: ``"coords"`` (keys and values from grid-coordinate embeddings, queries from the
            features: the GIOROM 2025 code, simplified) or ``"features"`` (all from the features).
    """

    def __init__(self, in_channels: int, out_channels: int, *, grid_shape: Sequence[int], width: int = 64,
                 heads: int = 4, n_blocks: int = 2, ff: int = 256,
                 kv_source: Literal["coords", "features"] = "coords") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        d = len(grid_shape)
        axes = [torch.linspace(0, 1, g) for g in grid_shape]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
        self.register_buffer("coords", coords, persistent=False)
        self.grid_shape, self.heads, self.kv_source = tuple(grid_shape), heads, kv_source
        self.lift = nn.Linear(in_channels, width)
        self.coord_embed = nn.Linear(d, width)
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.blocks.append(nn.ModuleDict({
                "ln_q": nn.LayerNorm(width), "ln_kv": nn.LayerNorm(width), "q": nn.Linear(width, width),
                "k": nn.Linear(width, width), "v": nn.Linear(width, width), "o": nn.Linear(width, width),
                "ln_ff": nn.LayerNorm(width),
                "ff": nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Linear(ff, width)),
            }))
        self.project = nn.Linear(width, out_channels)

    def forward(self, z: Tensor) -> Tensor:
        B = z.shape[0]
        x = self.lift(z.flatten(2).transpose(1, 2))  # (B, N, width)
        c = self.coord_embed(self.coords).expand(B, -1, -1)
        H = self.heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(B, t.shape[1], H, -1).transpose(1, 2)  # (B, H, N, D)

        for blk in self.blocks:
            src = c if self.kv_source == "coords" else x
            kv = blk["ln_kv"](src)
            q = split(blk["q"](blk["ln_q"](x)))
            a = linear_attention(q, split(blk["k"](kv)), split(blk["v"](kv)))
            x = x + blk["o"](a.transpose(1, 2).reshape(B, -1, x.shape[-1]))
            x = x + blk["ff"](blk["ln_ff"](x))
        out = self.project(x)  # (B, N, C_out)
        return out.transpose(1, 2).reshape(B, -1, *self.grid_shape)


__all__ = ["FNO", "LinearAttentionLatent", "SpectralConv", "linear_attention"]
