"""GaLore: full-rank weights, Adam state in a low-rank projection of the gradient.

Paper: Jiawei Zhao, Zhenyu Zhang, Beidi Chen, Zhangyang Wang, Anima Anandkumar, Yuandong Tian,
"GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv:2403.03507.
Compared against in Zhao et al., arXiv:2405.15481.

For a matrix parameter W (m x n) with gradient G:
* every ``update_proj_gap`` steps (T_proj = 200), P <- top-r singular vectors of the current G:
  if m >= n, P = V[:, :r] (n x r) and R = G P (m x r)  ("right");
  else       P = U[:, :r] (m x r) and R = P^T G (r x n) ("left").
  The side is decided once from G's full-rank shape and stored (a projector side chosen per step would flip for square-ish gradients).
* Adam on R:  M <- b1 M + (1-b1) R,  V <- b2 V + (1-b2) R^2,
  N = (M / (1-b1^t)) / (sqrt(V / (1-b2^t)) + eps);   moments are *not* reset when P changes.
* W <- W - lr * scale * back(N),   back(N) = N P^T (right) or P N (left),  scale = 0.25 [recall];
  then decoupled weight decay  W <- W - lr * wd * W.
Parameters of groups without ``rank`` (and every non-matrix) get plain AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import UserError


def galore_projector(G: torch.Tensor, rank: int, side: str) -> torch.Tensor:
    """Orthonormal P from the SVD of G (float32 at least): (n, r) for ``right``, (m, r) for ``left``."""
    U, _, Vh = torch.linalg.svd(G.float() if G.dtype in (torch.float16, torch.bfloat16) else G, full_matrices=False)
    P = Vh[:rank].T if side == "right" else U[:, :rank]
    return P.to(G.dtype).contiguous()


def project(G: torch.Tensor, P: torch.Tensor, side: str) -> torch.Tensor:
    return G @ P if side == "right" else P.T @ G


def project_back(N: torch.Tensor, P: torch.Tensor, side: str) -> torch.Tensor:
    return N @ P.T if side == "right" else P @ N


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW whose matrix groups (those with a ``rank`` key) keep their moments in a rank-r subspace.

    Args:
        params: parameters or groups; a group ``{"params": [...], "rank": r}`` is projected.
        lr, betas, eps, weight_decay: as AdamW.
        update_proj_gap: T_proj, steps between projector refreshes (>= 1).
        scale: GaLore's alpha (0.25).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        update_proj_gap: int = 200,
        scale: float = 0.25,
    ) -> None:
        if int(update_proj_gap) < 1:
            raise UserError(f"GaLore update_proj_gap must be >= 1 step, got {update_proj_gap}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, rank=None,
                        update_proj_gap=int(update_proj_gap), scale=scale)
        super().__init__(params, defaults)
        for g in self.param_groups:
            if g["rank"] is not None:
                for p in g["params"]:
                    if p.ndim != 2:
                        raise UserError("GaLore groups with a rank must hold matrices only")
                    if not 1 <= int(g["rank"]) < min(p.shape):
                        raise UserError(f"GaLore rank must satisfy 1 <= rank < min{tuple(p.shape)}, got {g['rank']}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                G = p.grad
                st = self.state[p]
                low_rank = g["rank"] is not None
                if len(st) == 0:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    if low_rank:
                        m, n = G.shape
                        st["side"] = "right" if m >= n else "left"
                if low_rank:
                    side = st["side"]
                    if int(st["step"]) % g["update_proj_gap"] == 0 or "projector" not in st:
                        st["projector"] = galore_projector(G, int(g["rank"]), side)
                    R = project(G, st["projector"], side)  # (m, r) or (r, n)
                else:
                    R = G
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(R)
                    st["exp_avg_sq"] = torch.zeros_like(R)
                st["step"] += 1
                t = float(st["step"])
                M, V = st["exp_avg"], st["exp_avg_sq"]
                M.mul_(b1).add_(R, alpha=1 - b1)
                V.mul_(b2).addcmul_(R, R, value=1 - b2)
                N = (M / (1 - b1**t)) / ((V / (1 - b2**t)).sqrt_() + g["eps"])
                if low_rank:
                    p.add_(project_back(N, st["projector"], st["side"]), alpha=-g["lr"] * g["scale"])
                else:
                    p.add_(N, alpha=-g["lr"])
                if g["weight_decay"] > 0:
                    p.add_(p, alpha=-g["lr"] * g["weight_decay"])
        return loss


class GaLoreLinear(nn.Linear):
    """An ``nn.Linear`` marked for GaLore (``galore_rank``); it trains exactly like nn.Linear."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, **kw: Any) -> None:
        super().__init__(in_features, out_features, bias=bias, **kw)
        self.galore_rank = int(rank)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> GaLoreLinear:
        new = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return new

    def merge(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        lin.load_state_dict(self.state_dict())
        return lin


__all__ = ["GaLoreAdamW", "GaLoreLinear", "galore_projector", "project", "project_back"]

_ = math
