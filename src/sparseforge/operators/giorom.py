"""GIOROM: a reduced-order neural operator time-stepper on sparse particle graphs.

Viswanath et al., "Reduced-Order Neural Operators: Learning Lagrangian Dynamics on Highly Sparse
Graphs", arXiv 2407.03925 (v3: "Learning Lagrangian Interaction Dynamics with Sampling-Based Model
Order Reduction"). The time-stepper runs on a sparse subset of n << N particles; a
discretisation-agnostic decoder (:mod:`sparseforge.operators.decoders`) rebuilds any set of query
points. One step, from the features of :mod:`sparseforge.operators.features`:

1. encode      h_i = MLP_node(node features),  e_ij = MLP_edge(edge features)   (radius graph, self loops)
2. processor A M_a interaction blocks  m_ij = MLP([h_i, h_j, e_ij]), e_ij += m_ij,
               h_i += MLP([h_i, mean_j w_ij m_ij])
3. GNO lift    positions normalised to [0, 1]^d by the bounds; a latent grid of G^d points y;
               z(y) = mean_{||x_j - y|| <= r_gno} kappa_in([y, x_j, h_j])   (0 without neighbours)
4. latent      z' = FNO(z)  (or a linear-attention transformer)
5. GNO project o_i = mean_{||y - x_i|| <= r_gno} kappa_out([x_i, y]) * z'(y)
6. skip        h_i <- MLP_proj(o_i) + h_i
7. processor B M_b further interaction blocks (their own weights, the edge latents of step 2)
8. decode      a^_i = MLP_dec(h_i), the normalised acceleration; Euler integration in frame units.

Scenes of a batch keep their own graph, grid and GNO neighbourhoods (``batch`` vector). Reconstructed
defaults (named options): ``normalize_velocity=True``, ``kernel_inputs="both"``, ``gno_channels=64``,
``gno_radius`` = 1.5 grid spacings, ``fno_modes=12``, ``fno_width=32``, ``operator_residual=True``,
3-D grids run a 3-D FNO.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..graph import IntegralTransform, InteractionBlock, mlp, radius_neighbors
from .features import ParticleSimulator, ParticleStats
from .latent import FNO, LinearAttentionLatent


@dataclass
class GIOROMConfig:
    """Hyperparameters of :class:`GIOROM` (defaults: the GIOROM v1 code, reconstructions marked).

    Attributes:
        window: W velocities of history.
        hidden: node / edge latent width (128).
        n_types, type_dim: particle-type embedding (9 types, 16 wide).
        blocks_a, blocks_b: interaction blocks before and after the operator (2 + 2).
        aggr: message aggregation (``"mean"``, the code's).
        agg_weight: ``"none"`` (w_ij = 1) or ``"inv_dist"`` (w_ij = 1 / (1 + ||x_i - x_j||)).
        latent: ``"fno"`` (v1), ``"transformer"`` (2025 code) or ``"none"`` (the ablation without steps 3-6).
        grid: latent grid size G per axis (None: 32 in 2-D, 16 in 3-D).
        fno_modes, fno_width, fno_blocks: FNO (reconstructed default 12 / 32 / 2).
        gno_channels: C, the lift's output width (reconstructed default 64).
        gno_radius: r_gno in normalised units (None: 1.5 grid spacings, reconstructed default).
        kernel_inputs: ``"both"`` (kappa(y, x), reconstructed default) or ``"source_only"`` (the code's).
        operator_residual: h <- MLP_proj(o) + h (2025 code) instead of h <- MLP_proj(o) (v1).
        normalize_velocity: normalise input velocities (reconstructed default True).
        attn_width, attn_heads, attn_blocks, attn_ff: the transformer latent.
    """

    window: int = 5
    hidden: int = 128
    n_types: int = 9
    type_dim: int = 16
    blocks_a: int = 2
    blocks_b: int = 2
    aggr: Literal["mean", "sum"] = "mean"
    agg_weight: Literal["none", "inv_dist"] = "none"
    latent: Literal["fno", "transformer", "none"] = "fno"
    grid: int | None = None
    fno_modes: int = 12
    fno_width: int = 32
    fno_blocks: int = 2
    gno_channels: int = 64
    gno_radius: float | None = None
    kernel_inputs: Literal["both", "source_only"] = "both"
    operator_residual: bool = True
    normalize_velocity: bool = True
    attn_width: int = 64
    attn_heads: int = 4
    attn_blocks: int = 2
    attn_ff: int = 256

    def __post_init__(self) -> None:
        if self.latent not in ("fno", "transformer", "none"):
            raise UserError(f"latent must be fno, transformer or none, got {self.latent!r}")
        if self.grid is not None and self.grid < 2:
            raise UserError(f"latent grid must be >= 2 points per axis, got {self.grid}")
        for k in ("window", "hidden", "fno_modes", "fno_width", "gno_channels"):
            if getattr(self, k) < 1:
                raise UserError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.blocks_a < 0 or self.blocks_b < 0:
            raise UserError("blocks_a and blocks_b must be >= 0")


def _kernel(in_dim: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for i, w in enumerate(widths):
        layers.append(nn.Linear(d, w))
        if i < len(widths) - 1:
            layers.append(nn.GELU())
        d = w
    return nn.Sequential(*layers)


def inverse_distance_weight(pos: Tensor, edge_index: Tensor) -> Tensor:
    """w_ij = 1 / (1 + ||x_i - x_j||) per edge."""
    return 1.0 / (1.0 + (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1))


class GIOROM(ParticleSimulator):
    """The GIOROM time-stepper (see the module docstring).

    Args:
        stats: bounds, graph radius (of the sparse set) and statistics (:class:`ParticleStats`).
        config: :class:`GIOROMConfig`.
    """

    def __init__(self, stats: ParticleStats, config: GIOROMConfig | None = None) -> None:
        cfg = config or GIOROMConfig()
        super().__init__(stats, window=cfg.window, hidden=cfg.hidden, n_types=cfg.n_types, type_dim=cfg.type_dim,
                         normalize_velocity=cfg.normalize_velocity)
        self.config = cfg
        d, H = self.dim, cfg.hidden
        self.blocks_a = nn.ModuleList(InteractionBlock(H, H, H, aggr=cfg.aggr) for _ in range(cfg.blocks_a))
        self.blocks_b = nn.ModuleList(InteractionBlock(H, H, H, aggr=cfg.aggr) for _ in range(cfg.blocks_b))
        G = cfg.grid or (32 if d == 2 else 16)
        self.grid_size = G
        self.gno_radius = float(cfg.gno_radius if cfg.gno_radius is not None else 1.5 / (G - 1))
        if cfg.latent != "none":
            axes = [torch.linspace(0, 1, G)] * d
            self.register_buffer("grid_points", torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d),
                                 persistent=False)
            both = cfg.kernel_inputs == "both"
            C = cfg.gno_channels
            self.lift = IntegralTransform(_kernel((2 * d if both else d) + H, (64, 64, C)), transform="nonlinear",
                                          kernel_inputs=cfg.kernel_inputs)
            self.project = IntegralTransform(_kernel(2 * d if both else d, (32, 64, H)), transform="linear",
                                             kernel_inputs=cfg.kernel_inputs)
            shape = (G,) * d
            if cfg.latent == "fno":
                self.latent_op: nn.Module = FNO(C, H, grid_shape=shape, width=cfg.fno_width, modes=cfg.fno_modes,
                                                n_blocks=cfg.fno_blocks)
            else:
                self.latent_op = LinearAttentionLatent(C, H, grid_shape=shape, width=cfg.attn_width,
                                                       heads=cfg.attn_heads, n_blocks=cfg.attn_blocks, ff=cfg.attn_ff)
            self.proj_mlp = mlp(H, 2 * H, H, n_hidden=1, layer_norm=False, activation=nn.GELU)

    def normalized_positions(self, pos: Tensor) -> Tensor:
        return (pos - self.bounds[:, 0]) / (self.bounds[:, 1] - self.bounds[:, 0])

    def operator(self, h: Tensor, pos: Tensor, batch: Tensor | None) -> Tensor:
        """Steps 3-5: particles -> latent grid -> operator -> particles; (P, hidden)."""
        u = self.normalized_positions(pos)  # (P, d)
        n_scenes = int(batch.max()) + 1 if batch is not None and batch.numel() else 1
        g = self.grid_points  # (G^d, d)
        grid = g.repeat(n_scenes, 1)  # (B G^d, d)
        gb = torch.arange(n_scenes, device=pos.device).repeat_interleave(g.shape[0]) if batch is not None else None
        lift_edges = radius_neighbors(u, grid, self.gno_radius, batch_src=batch, batch_query=gb)
        z = self.lift(u, grid, lift_edges, h)  # (B G^d, C)
        shape = (self.grid_size,) * self.dim
        z = z.reshape(n_scenes, *shape, -1).movedim(-1, 1)  # (B, C, G, ..., G)
        z = self.latent_op(z)  # (B, H, G, ..., G)
        z = z.movedim(1, -1).reshape(n_scenes * g.shape[0], -1)  # (B G^d, H)
        proj_edges = radius_neighbors(grid, u, self.gno_radius, batch_src=gb, batch_query=batch)
        return self.project(grid, u, proj_edges, z)  # (P, H)

    def process(self, h: Tensor, e: Tensor, edge_index: Tensor, pos: Tensor, batch: Tensor | None) -> Tensor:
        w = inverse_distance_weight(pos, edge_index) if self.config.agg_weight == "inv_dist" else None
        for blk in self.blocks_a:
            h, e = blk(h, e, edge_index, w)
        if self.config.latent != "none":
            o = self.proj_mlp(self.operator(h, pos, batch))
            h = o + h if self.config.operator_residual else o
        for blk in self.blocks_b:
            h, e = blk(h, e, edge_index, w)
        return h

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}, gno_radius={self.gno_radius:.4g}, radius={self.radius:.4g}, " + \
            f"config={asdict(self.config)}"


__all__ = ["GIOROM", "GIOROMConfig", "inverse_distance_weight"]
