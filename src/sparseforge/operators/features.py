"""Shared pieces of learned particle simulators: features, noise, normalisation, integration.

Sanchez-Gonzalez et al., "Learning to Simulate Complex Physics with Graph Networks",
arXiv 2002.09405 (GNS), and Viswanath et al., "Reduced-Order Neural Operators: Learning Lagrangian
Dynamics on Highly Sparse Graphs", arXiv 2407.03925 (GIOROM), in frame units (dt absorbed):

    v_t = x_t - x_{t-1},     a_t = x_{t+1} - 2 x_t + x_{t-1}

Node features: a particle-type embedding, the W most recent velocities normalised as
(v - mean_v) / sqrt(std_v^2 + sigma^2), and the distances to the lower and upper walls per axis,
divided by the connectivity radius r and clipped to [-1, 1]. Edge features for j -> i:
delta_ij = (x_j - x_i) / r and ||delta_ij||.

Training noise (random walk): eps_k ~ N(0, (sigma / sqrt(W))^2), velocity noise = cumsum_k eps_k,
position noise = cumsum of the velocity noise with 0 for the oldest frame; the target is corrected
so that the clean next position is reached from the noisy state:

    a_target = x_{t+1} - x~_t - (x~_t - x~_{t-1}).

Integration (semi-implicit Euler): a = a^ sqrt(std_a^2 + sigma^2) + mean_a,
v_{t+1} = (x_t - x_{t-1}) + a, x_{t+1} = x_t + v_{t+1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..graph import mlp, radius_graph


@dataclass
class ParticleStats:
    """What a simulator needs from the dataset metadata.

    Attributes:
        bounds: [[lo, hi]] per axis.
        radius: connectivity radius r of the graph the model runs on.
        vel_mean, vel_std, acc_mean, acc_std: per-axis statistics in frame units.
        noise_std: sigma of the training noise (also folded into the normalisation).
    """

    bounds: list[list[float]]
    radius: float
    vel_mean: list[float]
    vel_std: list[float]
    acc_mean: list[float]
    acc_std: list[float]
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.radius) or self.radius <= 0:
            raise UserError(f"connectivity radius must be > 0, got {self.radius}")
        if self.noise_std < 0:
            raise UserError(f"noise_std must be >= 0, got {self.noise_std}")

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], *, noise_std: float = 0.0, radius: float | None = None) -> ParticleStats:
        """From a GNS ``metadata.json`` dict (``radius`` overrides ``default_connectivity_radius``)."""
        return cls(bounds=[list(map(float, b)) for b in meta["bounds"]],
                   radius=float(radius if radius is not None else meta["default_connectivity_radius"]),
                   vel_mean=list(meta["vel_mean"]), vel_std=list(meta["vel_std"]),
                   acc_mean=list(meta["acc_mean"]), acc_std=list(meta["acc_std"]), noise_std=float(noise_std))

    @property
    def dim(self) -> int:
        return len(self.bounds)


def velocities(window: Tensor) -> Tensor:
    """(P, W + 1, d) positions -> (P, W, d) finite-difference velocities."""
    return window[:, 1:] - window[:, :-1]


def wall_features(pos: Tensor, bounds: Tensor, radius: float) -> Tensor:
    """(P, 2d): distances to the lower and upper walls per axis, / r, clipped to [-1, 1]."""
    lower = (pos - bounds[:, 0]) / radius
    upper = (bounds[:, 1] - pos) / radius
    return torch.cat([lower, upper], -1).clamp(-1.0, 1.0)


def edge_features(pos: Tensor, edge_index: Tensor, radius: float) -> Tensor:
    """(E, d + 1): (x_j - x_i) / r and its norm, for edges j -> i."""
    delta = (pos[edge_index[0]] - pos[edge_index[1]]) / radius
    return torch.cat([delta, delta.norm(dim=-1, keepdim=True)], -1)


def random_walk_noise(shape: tuple[int, int, int] | torch.Size, noise_std: float, *, dtype: torch.dtype = torch.float32,
                      device: Any = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """(P, W + 1, d) position noise of a random walk in velocity (0 on the oldest frame)."""
    P, W1, d = shape
    W = W1 - 1
    if noise_std == 0 or W == 0:
        return torch.zeros(P, W1, d, dtype=dtype, device=device)
    eps = torch.randn(P, W, d, dtype=dtype, device=device, generator=generator) * (noise_std / math.sqrt(W))
    vel_noise = torch.cumsum(eps, 1)  # (P, W, d)
    pos_noise = torch.cumsum(vel_noise, 1)
    return torch.cat([torch.zeros(P, 1, d, dtype=dtype, device=device), pos_noise], 1)


def target_acceleration(window: Tensor, next_pos: Tensor) -> Tensor:
    """a = x_{t+1} - x_t - (x_t - x_{t-1}) from a (possibly noisy) window (P, W + 1, d)."""
    return next_pos - 2 * window[:, -1] + window[:, -2]


def integrate(window: Tensor, acc: Tensor) -> Tensor:
    """Semi-implicit Euler in frame units: x_{t+1} = x_t + (x_t - x_{t-1}) + a."""
    return window[:, -1] + (window[:, -1] - window[:, -2]) + acc


class ParticleSimulator(nn.Module):
    """Encoder and decoder shared by GNS and GIOROM; subclasses implement :meth:`process`.

    Args:
        stats: dataset statistics and graph radius (:class:`ParticleStats`).
        window: W, the velocity history length.
        hidden: latent width of nodes and edges (and of every MLP's hidden layers).
        n_types: number of particle types (embedding rows).
        type_dim: particle-type embedding width.
        normalize_velocity: normalise the input velocities (the GIOROM code computes but does not
            use the normalisation; True is the reconstructed default).
    """

    def __init__(self, stats: ParticleStats, *, window: int = 5, hidden: int = 128, n_types: int = 9,
                 type_dim: int = 16, normalize_velocity: bool = True) -> None:
        super().__init__()
        if window < 1:
            raise UserError(f"window must be >= 1, got {window}")
        d = stats.dim
        self.dim, self.window, self.hidden, self.n_types = d, window, hidden, n_types
        self.radius, self.noise_std, self.normalize_velocity = float(stats.radius), float(stats.noise_std), normalize_velocity
        s2 = stats.noise_std ** 2
        f = torch.float32
        self.register_buffer("bounds", torch.tensor(stats.bounds, dtype=f))
        self.register_buffer("vel_mean", torch.tensor(stats.vel_mean, dtype=f))
        self.register_buffer("vel_scale", torch.tensor([math.sqrt(v * v + s2) for v in stats.vel_std], dtype=f).clamp_min(1e-12))
        self.register_buffer("acc_mean", torch.tensor(stats.acc_mean, dtype=f))
        self.register_buffer("acc_scale", torch.tensor([math.sqrt(a * a + s2) for a in stats.acc_std], dtype=f).clamp_min(1e-12))
        self.type_embedding = nn.Embedding(n_types, type_dim)
        self.node_encoder = mlp(type_dim + window * d + 2 * d, hidden, hidden)
        self.edge_encoder = mlp(d + 1, hidden, hidden)
        self.decoder = mlp(hidden, hidden, d, layer_norm=False)

    # ------------------------------------------------------------------------------------
    def graph(self, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        """Radius graph with self loops on the current positions (scenes kept apart)."""
        return radius_graph(pos, self.radius, loop=True, batch=batch)

    def node_features(self, window: Tensor, particle_type: Tensor) -> Tensor:
        v = velocities(window)  # (P, W, d)
        if self.normalize_velocity:
            v = (v - self.vel_mean) / self.vel_scale
        parts = [self.type_embedding(particle_type), v.flatten(1), wall_features(window[:, -1], self.bounds, self.radius)]
        return torch.cat(parts, -1)

    def forward(self, window: Tensor, particle_type: Tensor, batch: Tensor | None = None,
                edge_index: Tensor | None = None) -> Tensor:
        """Normalised acceleration (P, d) from positions ``window`` (P, W + 1, d).

        Args:
            window: the last W + 1 positions of every particle.
            particle_type: (P,) long.
            batch: (P,) scene ids (several scenes in one call never interact); None = one scene.
            edge_index: a precomputed graph (default: :meth:`graph` of the last positions).
        """
        if window.dim() != 3 or window.shape[1] != self.window + 1 or window.shape[2] != self.dim:
            raise UserError(f"window must be (P, {self.window + 1}, {self.dim}), got {tuple(window.shape)}")
        pos = window[:, -1]
        ei = self.graph(pos, batch) if edge_index is None else edge_index
        h = self.node_encoder(self.node_features(window, particle_type.long()))  # (P, hidden)
        e = self.edge_encoder(edge_features(pos, ei, self.radius))  # (E, hidden)
        h = self.process(h, e, ei, pos, batch)
        return self.decoder(h)

    def process(self, h: Tensor, e: Tensor, edge_index: Tensor, pos: Tensor, batch: Tensor | None) -> Tensor:
        """The processor between encoder and decoder (a subclass hook: GNS message passing, GIOROM's operator)."""
        raise NotImplementedError(f"{type(self).__name__} must define process (see GNS, GIOROM)")

    def acceleration(self, normalized: Tensor) -> Tensor:
        """De-normalise: a = a^ sqrt(std^2 + sigma^2) + mean."""
        return normalized * self.acc_scale + self.acc_mean

    def normalize_acceleration(self, acc: Tensor) -> Tensor:
        return (acc - self.acc_mean) / self.acc_scale

    def predict_positions(self, window: Tensor, particle_type: Tensor, batch: Tensor | None = None) -> Tensor:
        """Next positions (P, d) by semi-implicit Euler on the predicted acceleration."""
        return integrate(window, self.acceleration(self(window, particle_type, batch)))


__all__ = [
    "ParticleSimulator",
    "ParticleStats",
    "edge_features",
    "integrate",
    "random_walk_noise",
    "target_acceleration",
    "velocities",
    "wall_features",
]
