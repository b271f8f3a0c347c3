"""GNS baseline: an encode-process-decode graph network on the full particle cloud.

Sanchez-Gonzalez et al., "Learning to Simulate Complex Physics with Graph Networks", arXiv 2002.09405.
The same features, noise, normalisation and integrator as GIOROM
(:mod:`sparseforge.operators.features`); the processor is M interaction blocks with their own
weights (M = 10 of width 128 in the paper), with residual node and edge updates:

    m_ij = MLP_e([h_i, h_j, e_ij]),  e_ij <- e_ij + m_ij,  h_i <- h_i + MLP_n([h_i, sum_j m_ij]),

and the decoder reads the normalised acceleration a^_i = MLP_dec(h_i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ..errors import UserError
from ..graph import InteractionBlock
from .features import ParticleSimulator, ParticleStats


@dataclass
class GNSConfig:
    """Hyperparameters of :class:`GNS`.

    Attributes:
        window: W velocities of history.
        hidden: latent width (128).
        n_types, type_dim: particle-type embedding.
        blocks: interaction blocks M (10 in the paper).
        aggr: ``"sum"`` (GNS) or ``"mean"``.
        normalize_velocity: normalise the input velocities.
    """

    window: int = 5
    hidden: int = 128
    n_types: int = 9
    type_dim: int = 16
    blocks: int = 10
    aggr: Literal["mean", "sum"] = "sum"
    normalize_velocity: bool = True

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.hidden < 1 or self.window < 1:
            raise UserError("GNS needs blocks, hidden and window >= 1")


class GNS(ParticleSimulator):
    """GNS on the full cloud (see the module docstring)."""

    def __init__(self, stats: ParticleStats, config: GNSConfig | None = None) -> None:
        cfg = config or GNSConfig()
        super().__init__(stats, window=cfg.window, hidden=cfg.hidden, n_types=cfg.n_types, type_dim=cfg.type_dim,
                         normalize_velocity=cfg.normalize_velocity)
        self.config = cfg
        H = cfg.hidden
        self.blocks = nn.ModuleList(InteractionBlock(H, H, H, aggr=cfg.aggr) for _ in range(cfg.blocks))

    def process(self, h: Tensor, e: Tensor, edge_index: Tensor, pos: Tensor, batch: Tensor | None) -> Tensor:
        for blk in self.blocks:
            h, e = blk(h, e, edge_index)
        return h


__all__ = ["GNS", "GNSConfig"]
