"""A vectorised MLS-MPM simulator (2-D and 3-D) generating particle trajectories.

Hu et al., "A Moving Least Squares Material Point Method with Displacement Discontinuity and
Two-Way Rigid Body Coupling", SIGGRAPH 2018 (MLS-MPM), with the constitutive models of the MPM
literature: Stomakhin et al. 2013 (fixed-corotated elasticity), Klar et al. 2016 (Drucker-Prager
sand by return mapping on the Hencky strain), von Mises plasticity and a Perzyna (Bingham-type)
viscoplastic flow rule. The generator stands in for the MPM datasets of GIOROM (Viswanath et al.,
"Reduced-Order Neural Operators: Learning Lagrangian Dynamics on Highly Sparse Graphs",
arXiv 2407.03925) and GNS (Sanchez-Gonzalez et al., arXiv 2002.09405), which cannot be downloaded here.

One sub-step of size dt on a grid of spacing dx (quadratic B-spline weights w_ip, D^-1 = 4/dx^2):

    P2G   m_i = sum_p w_ip m_p,
          (m v)_i = sum_p w_ip [m_p v_p + A_p (x_i - x_p)],   A_p = -dt V_p D^-1 tau_p + m_p C_p
    grid  v_i = (m v)_i / m_i + dt g;  walls (the ``bound`` margin nodes and the first node inside):
          slip (the normal component into the wall zeroed, Coulomb friction mu_w on the tangential
          part: |v_t| <- max(0, |v_t| - mu_w |v_n|)) or sticky (v_i = 0)
    G2P   v_p = sum_i w_ip v_i,   C_p = D^-1 sum_i w_ip v_i (x_i - x_p)^T,   x_p += dt v_p
          F_p <- (I + dt C_p) F_p,  then the material's return mapping on F_p

Kirchhoff stresses tau (mu, lambda the Lame parameters of E, nu; F = U Sigma V^T):

    water (weakly compressible)  J <- J (1 + dt tr C),  tau = K J (J - 1) I + eta J (C + C^T - (2/d) tr(C) I)
                                 (F = J^(1/d) I; eta a small Newtonian viscosity)
    jelly (fixed corotated)      tau = 2 mu (F - R) F^T + lambda J (J - 1) I,  F = R S
    Hencky models                tau = U (2 mu eps + lambda tr(eps) I) U^T,   eps = log Sigma
      sand   (Drucker-Prager)    e^ = eps - tr(eps)/d;  tr(eps) > 0 -> eps = 0;  otherwise
                                 dg = ||e^|| + (d lambda + 2 mu)/(2 mu) tr(eps) alpha,
                                 alpha = sqrt(2/3) 2 sin(phi) / (3 - sin(phi));  dg > 0 -> eps -= dg e^/||e^||
      plasticine (von Mises)     dg = ||e^|| - tau_y / (2 mu);  dg > 0 -> eps -= dg e^/||e^||
      goop (Perzyna)             dg = (||e^|| - tau_y / (2 mu)) / (1 + eta / (2 mu dt)),  same projection

The sub-step follows the CFL rule dt <= cfl dx / (c + v_max), c = sqrt((lambda + 2 mu)/rho) the
elastic wave speed, with a whole number of sub-steps per stored frame. Gravity acts along the last
axis. Material constants (scaled units, ``DEFAULT_MATERIALS``) are reconstructed defaults chosen so
each material shows its signature on a 64^2 grid: water levels out, jelly rebounds, sand slumps into a
pile with a slope (wall friction 0.5), plasticine keeps its dent, goop slumps slowly. Everything is batched over independent scenes (one grid each), so several trajectories run in
one set of tensor operations; each scene is deterministic per seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError

MATERIALS = ("water", "jelly", "sand", "plasticine", "goop")
PARTICLE_TYPES = {"goop": 4, "water": 5, "jelly": 6, "sand": 7, "plasticine": 8}


@dataclass(frozen=True)
class Material:
    """Constitutive parameters (scaled units: unit box, density 1).

    Attributes:
        name: one of :data:`MATERIALS` (or your own name).
        model: ``"fluid"``, ``"corotated"``, ``"drucker_prager"``, ``"von_mises"`` or ``"viscoplastic"``.
        E: Young's modulus (the bulk modulus K for ``"fluid"``).
        nu: Poisson ratio.
        rho: density.
        friction_angle: Drucker-Prager friction angle in degrees.
        yield_stress: von Mises / viscoplastic yield stress tau_y.
        viscosity: Perzyna viscosity eta of the viscoplastic model; Newtonian viscosity of ``"fluid"``.
        wall_friction: Coulomb friction coefficient against the walls (slip boundary).
    """

    name: str
    model: Literal["fluid", "corotated", "drucker_prager", "von_mises", "viscoplastic"]
    E: float
    nu: float = 0.3
    rho: float = 1.0
    friction_angle: float = 30.0
    yield_stress: float = 0.0
    viscosity: float = 0.0
    wall_friction: float = 0.0

    @property
    def mu(self) -> float:
        return 0.0 if self.model == "fluid" else self.E / (2 * (1 + self.nu))

    @property
    def lam(self) -> float:
        return self.E if self.model == "fluid" else self.E * self.nu / ((1 + self.nu) * (1 - 2 * self.nu))

    @property
    def wave_speed(self) -> float:
        return math.sqrt((self.lam + 2 * self.mu) / self.rho)

    @property
    def particle_type(self) -> int:
        return PARTICLE_TYPES.get(self.name, 5)


DEFAULT_MATERIALS: dict[str, Material] = {
    "water": Material("water", "fluid", E=400.0, viscosity=0.05),
    "jelly": Material("jelly", "corotated", E=1500.0, nu=0.3),
    "sand": Material("sand", "drucker_prager", E=800.0, nu=0.3, friction_angle=30.0, wall_friction=0.5),
    "plasticine": Material("plasticine", "von_mises", E=1500.0, nu=0.3, yield_stress=12.0),
    "goop": Material("goop", "viscoplastic", E=600.0, nu=0.3, yield_stress=1.0, viscosity=0.5),
}


def get_material(material: str | Material) -> Material:
    """A :class:`Material` from a name in :data:`MATERIALS` (or the object itself)."""
    if isinstance(material, Material):
        return material
    if material not in DEFAULT_MATERIALS:
        raise UserError(f"unknown material {material!r}; choose one of: {', '.join(MATERIALS)}")
    return DEFAULT_MATERIALS[material]


@dataclass(frozen=True)
class MPMConfig:
    """Simulation settings.

    Attributes:
        dim: 2 or 3.
        n_grid: grid nodes per axis (None: 64 in 2-D, 32 in 3-D); dx = 1 / n_grid.
        bound: wall margin in cells; particles live in [bound dx, 1 - bound dx]^d.
        gravity: acceleration along the last axis.
        frame_dt: simulated time between stored frames.
        cfl: CFL number of the sub-step rule.
        max_speed: the particle speed assumed by the CFL rule.
        boundary: ``"slip"``, ``"sticky"`` or ``"none"`` (no walls; keep particles away from the edges).
        init_speed: initial velocities are uniform in [-init_speed, init_speed]^d per scene.
        dtype: ``"float32"`` or ``"float64"``.
        device: torch device.
    """

    dim: int = 2
    n_grid: int | None = None
    bound: int = 3
    gravity: float = -9.8
    frame_dt: float = 2.5e-3
    cfl: float = 0.4
    max_speed: float = 6.0
    boundary: Literal["slip", "sticky", "none"] = "slip"
    init_speed: float = 1.0
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise UserError(f"dim must be 2 or 3, got {self.dim}")
        if self.n_grid is not None and self.n_grid < 2 * self.bound + 4:
            raise UserError(f"n_grid must be >= {2 * self.bound + 4} for a wall margin of {self.bound} cells")
        if self.boundary not in ("slip", "sticky", "none"):
            raise UserError(f"boundary must be slip, sticky or none, got {self.boundary!r}")
        if self.frame_dt <= 0 or self.cfl <= 0 or self.max_speed < 0:
            raise UserError("frame_dt and cfl must be > 0 and max_speed >= 0")

    @property
    def grid(self) -> int:
        return self.n_grid or (64 if self.dim == 2 else 32)

    @property
    def dx(self) -> float:
        return 1.0 / self.grid

    @property
    def bounds(self) -> list[list[float]]:
        """[[lo, hi]] per axis: where particles may be."""
        lo, hi = self.bound * self.dx, 1.0 - self.bound * self.dx
        return [[lo, hi] for _ in range(self.dim)]

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def substeps(self, material: Material) -> int:
        dt_max = self.cfl * self.dx / (material.wave_speed + self.max_speed)
        return max(1, math.ceil(self.frame_dt / dt_max - 1e-9))


# --------------------------------------------------------------------------------------------
# small batched linear algebra


def svd2(F: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form SVD of (..., 2, 2) matrices with rotations: F = U diag(s) V^T, det U = det V = 1.

    The second singular value carries the sign of det F (the convention MPM needs for inversion).
    """
    a, b, c, d = F[..., 0, 0], F[..., 0, 1], F[..., 1, 0], F[..., 1, 1]
    e, f, g, h = (a + d) / 2, (a - d) / 2, (c + b) / 2, (c - b) / 2
    q, r = torch.sqrt(e * e + h * h), torch.sqrt(f * f + g * g)
    a1, a2 = torch.atan2(g, f), torch.atan2(h, e)
    theta, phi = (a2 - a1) / 2, (a2 + a1) / 2
    U = _rot2(phi)
    V = _rot2(-theta)
    return U, torch.stack([q + r, q - r], -1), V


def _rot2(t: Tensor) -> Tensor:
    c, s = torch.cos(t), torch.sin(t)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def svd_rot(F: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SVD with rotation factors (det U = det V = 1); the last singular value may be negative."""
    if F.shape[-1] == 2:
        return svd2(F)
    U, s, Vh = torch.linalg.svd(F)
    V = Vh.transpose(-1, -2)
    du, dv = torch.linalg.det(U) < 0, torch.linalg.det(V) < 0
    U = torch.where(du[..., None, None], U * torch.tensor([1.0, 1.0, -1.0], dtype=F.dtype, device=F.device), U)
    s = torch.where(du[..., None], s * torch.tensor([1.0, 1.0, -1.0], dtype=F.dtype, device=F.device), s)
    V = torch.where(dv[..., None, None], V * torch.tensor([1.0, 1.0, -1.0], dtype=F.dtype, device=F.device), V)
    s = torch.where(dv[..., None], s * torch.tensor([1.0, 1.0, -1.0], dtype=F.dtype, device=F.device), s)
    return U, s, V


def polar_rotation(F: Tensor) -> Tensor:
    """R of the polar decomposition F = R S (closed form in 2-D)."""
    if F.shape[-1] == 2:
        x = F[..., 0, 0] + F[..., 1, 1]
        y = F[..., 1, 0] - F[..., 0, 1]
        return _rot2(torch.atan2(y, x))
    U, _, V = svd_rot(F)
    return U @ V.transpose(-1, -2)


# --------------------------------------------------------------------------------------------
# constitutive models (pure functions)


def hencky_stress(U: Tensor, eps: Tensor, mu: float, lam: float) -> Tensor:
    """tau = U (2 mu eps + lambda tr(eps) I) U^T for principal log strains eps (..., d)."""
    diag = 2 * mu * eps + lam * eps.sum(-1, keepdim=True)
    return (U * diag[..., None, :]) @ U.transpose(-1, -2)


def corotated_stress(F: Tensor, mu: float, lam: float) -> Tensor:
    """Fixed-corotated Kirchhoff stress 2 mu (F - R) F^T + lambda J (J - 1) I."""
    R = polar_rotation(F)
    J = torch.linalg.det(F) if F.shape[-1] == 3 else F[..., 0, 0] * F[..., 1, 1] - F[..., 0, 1] * F[..., 1, 0]
    eye = torch.eye(F.shape[-1], dtype=F.dtype, device=F.device)
    return 2 * mu * (F - R) @ F.transpose(-1, -2) + (lam * J * (J - 1))[..., None, None] * eye


def return_mapping(eps: Tensor, material: Material, dt: float) -> Tensor:
    """Project principal Hencky strains eps (..., d) onto the material's yield surface."""
    d = eps.shape[-1]
    mu, lam = material.mu, material.lam
    tr = eps.sum(-1, keepdim=True)
    dev = eps - tr / d
    norm = dev.norm(dim=-1, keepdim=True)
    safe = norm.clamp_min(1e-12)
    if material.model == "drucker_prager":
        sphi = math.sin(math.radians(material.friction_angle))
        alpha = math.sqrt(2 / 3) * 2 * sphi / (3 - sphi)
        dg = norm + (d * lam + 2 * mu) / (2 * mu) * tr * alpha
        proj = eps - dg.clamp_min(0) * dev / safe
        out = torch.where(dg > 0, proj, eps)
        return torch.where(tr > 0, torch.zeros_like(eps), out)  # expansion: project to the cone's tip
    if material.model in ("von_mises", "viscoplastic"):
        dg = norm - material.yield_stress / (2 * mu)
        if material.model == "viscoplastic":
            dg = dg / (1 + material.viscosity / (2 * mu * dt))
        return eps - dg.clamp_min(0) * dev / safe
    raise ValueError(f"no return mapping for model {material.model!r}")


def wall_slip(gv: Tensor, lower: Tensor, upper: Tensor, friction: float = 0.0) -> Tensor:
    """Separating walls with Coulomb friction on grid velocities gv (n, d).

    At wall nodes (``lower`` / ``upper`` (n, d) masks per axis) the normal component moving into the
    wall is zeroed and the tangential speed is reduced by ``friction`` x the removed normal speed.
    """
    d = gv.shape[1]
    for k in range(d):
        vn = gv[:, k]
        into = (lower[:, k] & (vn < 0)) | (upper[:, k] & (vn > 0))
        if friction > 0:
            tang = gv.clone()
            tang[:, k] = 0
            speed = tang.norm(dim=1, keepdim=True)
            scale = (1 - friction * vn.abs()[:, None] / speed.clamp_min(1e-30)).clamp_min(0)
            gv = torch.where(into[:, None], tang * scale, gv)
        else:
            gv = torch.where(into[:, None] & (torch.arange(d, device=gv.device) == k), torch.zeros_like(gv), gv)
    return gv


# --------------------------------------------------------------------------------------------
# transfers


def bspline_weights(fx: Tensor) -> Tensor:
    """Quadratic B-spline weights (P, 3, d) for fractional offsets fx = x/dx - base in [0.5, 1.5)."""
    return torch.stack([0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1) ** 2, 0.5 * (fx - 0.5) ** 2], 1)


def _stencil(dim: int, device: torch.device) -> Tensor:
    return torch.tensor(list(itertools.product(range(3), repeat=dim)), dtype=torch.long, device=device)


@dataclass
class MPMState:
    """Particle state of all scenes, flattened: P = n_scenes * N particles."""

    x: Tensor  # (P, d)
    v: Tensor  # (P, d)
    C: Tensor  # (P, d, d) APIC affine velocity
    F: Tensor  # (P, d, d) deformation gradient (fluids: J^(1/d) I)
    J: Tensor  # (P,) volume ratio (fluids)
    U: Tensor  # (P, d, d) cached rotation of the Hencky models
    eps: Tensor  # (P, d) cached principal log strain
    vol: Tensor  # (P,)
    mass: Tensor  # (P,)
    scene: Tensor  # (P,) long


class MPMSimulator:
    """MLS-MPM for independent scenes of one material (one grid per scene).

    Args:
        material: a name in :data:`MATERIALS` or a :class:`Material`.
        x0: (S, N, d) initial positions (inside the bounds).
        v0: (S, N, d) initial velocities.
        vol: (S, N) particle volumes (area / count of each shape).
        config: :class:`MPMConfig`.
    """

    def __init__(self, material: str | Material, x0: Tensor, v0: Tensor, vol: Tensor,
                 config: MPMConfig | None = None) -> None:
        self.material = get_material(material)
        self.config = cfg = config or MPMConfig(dim=x0.shape[-1])
        if x0.dim() != 3 or x0.shape[-1] != cfg.dim:
            raise UserError(f"initial positions must be (scenes, N, {cfg.dim}), got {tuple(x0.shape)}")
        dt, dev = cfg.torch_dtype, torch.device(cfg.device)
        S, N, d = x0.shape
        self.n_scenes, self.n_particles = S, N
        P = S * N
        eye = torch.eye(d, dtype=dt, device=dev).expand(P, d, d).clone()
        vol = vol.to(dev, dt).reshape(P)
        self.state = MPMState(
            x=x0.to(dev, dt).reshape(P, d).clone(), v=v0.to(dev, dt).reshape(P, d).clone(),
            C=torch.zeros(P, d, d, dtype=dt, device=dev), F=eye.clone(), J=torch.ones(P, dtype=dt, device=dev),
            U=eye.clone(), eps=torch.zeros(P, d, dtype=dt, device=dev), vol=vol, mass=vol * self.material.rho,
            scene=torch.arange(S, device=dev).repeat_interleave(N),
        )
        self.n_sub = cfg.substeps(self.material)
        self.dt = cfg.frame_dt / self.n_sub
        G = cfg.grid
        self._offsets = _stencil(d, dev)  # (3^d, d), last axis fastest
        self._offsets_f = self._offsets.to(dt)
        self._gstride = torch.tensor([G ** (d - 1 - k) for k in range(d)], dtype=torch.long, device=dev)
        self._offset_key = (self._offsets * self._gstride).sum(-1)  # (3^d,)
        node = torch.stack(torch.meshgrid(*[torch.arange(G, device=dev)] * d, indexing="ij"), -1).reshape(-1, d)
        # wall nodes: the margin plus the first node of the domain, so that particles stop at the bounds
        self._lower = (node <= cfg.bound).repeat(S, 1)  # (S G^d, d)
        self._upper = (node >= G - cfg.bound).repeat(S, 1)
        self._wall = (self._lower | self._upper).any(1)
        self._gravity = torch.zeros(d, dtype=dt, device=dev)
        self._gravity[-1] = cfg.gravity
        lo, hi = cfg.bounds[0]
        if cfg.boundary == "none":
            lo, hi = 0.5 * cfg.dx + 1e-6, (G - 1.5) * cfg.dx - 1e-6
        self._clamp = (lo, hi)

    # one sub-step ---------------------------------------------------------------------------
    def _stress(self) -> Tensor:
        s, m = self.state, self.material
        d = s.x.shape[1]
        if m.model == "fluid":
            eye = torch.eye(d, dtype=s.x.dtype, device=s.x.device)
            tau = (m.lam * s.J * (s.J - 1))[:, None, None] * eye
            if m.viscosity > 0:  # Newtonian viscous stress on the deviatoric strain rate
                D = s.C + s.C.transpose(1, 2)
                D = D - D.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] / d * eye
                tau = tau + m.viscosity * s.J[:, None, None] * D
            return tau
        if m.model == "corotated":
            return corotated_stress(s.F, m.mu, m.lam)
        return hencky_stress(s.U, s.eps, m.mu, m.lam)

    def substep(self) -> None:
        """Advance every scene by one sub-step dt."""
        s, cfg, dt = self.state, self.config, self.dt
        P, d = s.x.shape
        G, dx = cfg.grid, cfg.dx
        inv_dx = 1.0 / dx
        base = torch.floor(s.x * inv_dx - 0.5).long()  # (P, d)
        fx = s.x * inv_dx - base  # (P, d) in [0.5, 1.5)
        w = bspline_weights(fx)  # (P, 3, d)
        wk = w[:, :, 0]
        for k in range(1, d):  # outer product over axes -> (P, 3^d), stencil order of self._offsets
            wk = (wk[:, :, None] * w[:, None, :, k]).reshape(P, -1)
        off = self._offsets_f  # (K, d)
        K = off.shape[0]
        node = (base * self._gstride).sum(-1, keepdim=True) + self._offset_key[None, :]  # (P, K)
        node = node + (s.scene * G**d)[:, None]
        # P2G: contribution to node k is w_k [m v + A (off_k - fx) dx] = w_k [b + dx A off_k]
        A = (-dt * 4 * inv_dx * inv_dx) * s.vol[:, None, None] * self._stress() + s.mass[:, None, None] * s.C
        b = s.mass[:, None] * s.v - dx * (A @ fx[:, :, None])[..., 0]  # (P, d)
        Aoff = (A.reshape(P * d, d) @ off.t()).reshape(P, d, K).transpose(1, 2)  # (P, K, d)
        contrib = wk[..., None] * torch.cat([b[:, None, :] + dx * Aoff, s.mass[:, None, None].expand(P, K, 1)], -1)
        n_nodes = self.n_scenes * G**d
        flat = node.reshape(-1)
        grid = s.x.new_zeros(n_nodes, d + 1).index_add_(0, flat, contrib.reshape(-1, d + 1))
        gm, gmv = grid[:, d], grid[:, :d]
        has = gm > 0
        gv = torch.where(has[:, None], gmv / gm.clamp_min(1e-30)[:, None] + dt * self._gravity, torch.zeros_like(gmv))
        if cfg.boundary == "slip":
            gv = wall_slip(gv, self._lower, self._upper, self.material.wall_friction)
        elif cfg.boundary == "sticky":
            gv = torch.where(self._wall[:, None], torch.zeros_like(gv), gv)
        # G2P: v = sum_k w_k v_k;  C = 4/dx^2 sum_k w_k v_k (off_k - fx)^T dx
        wv = wk[..., None] * gv.index_select(0, flat).reshape(P, K, d)  # (P, K, d)
        new_v = wv.sum(1)
        mom1 = (wv.transpose(1, 2).reshape(P * d, K) @ off).reshape(P, d, d)  # sum_k w_k v_k off_k^T
        s.C = (4 * inv_dx) * (mom1 - new_v[:, :, None] * fx[:, None, :])
        s.v = new_v
        s.x = (s.x + dt * new_v).clamp(*self._clamp)
        self._update_deformation()

    def _update_deformation(self) -> None:
        s, m, dt = self.state, self.material, self.dt
        d = s.x.shape[1]
        if m.model == "fluid":
            tr = s.C.diagonal(dim1=-2, dim2=-1).sum(-1)
            s.J = (s.J * (1 + dt * tr)).clamp(0.2, 5.0)
            return
        eye = torch.eye(d, dtype=s.x.dtype, device=s.x.device)
        F = (eye + dt * s.C) @ s.F
        if m.model == "corotated":
            s.F = F
            return
        U, sig, V = svd_rot(F)
        eps = return_mapping(torch.log(sig.clamp_min(1e-4)), m, dt)
        s.U, s.eps = U, eps
        s.F = (U * torch.exp(eps)[:, None, :]) @ V.transpose(-1, -2)

    def positions(self) -> Tensor:
        """(S, N, d) current positions."""
        return self.state.x.reshape(self.n_scenes, self.n_particles, -1)

    def momentum(self) -> Tensor:
        """(S, d) total momentum per scene."""
        s = self.state
        return (s.mass[:, None] * s.v).reshape(self.n_scenes, self.n_particles, -1).sum(1)

    def run(self, n_frames: int) -> Tensor:
        """(S, n_frames, N, d) positions: frame 0 is the initial state, then one frame per frame_dt."""
        frames = [self.positions().clone()]
        from ..engine.progress import progress

        for _ in progress(range(n_frames - 1), desc=f"mpm {self.material.name}"):
            for _ in range(self.n_sub):
                self.substep()
            frames.append(self.positions().clone())
        return torch.stack(frames, 1)


# --------------------------------------------------------------------------------------------
# random initial conditions


def _inside(points: Tensor, prims: list[tuple[str, Tensor, Tensor]]) -> Tensor:
    ok = torch.zeros(points.shape[0], dtype=torch.bool)
    for kind, c, s in prims:
        if kind == "box":
            ok |= ((points - c).abs() <= s).all(1)
        else:
            ok |= ((points - c) ** 2).sum(1) <= float(s) ** 2
    return ok


def random_shape(dim: int, g: torch.Generator, config: MPMConfig) -> list[tuple[str, Tensor, Tensor]]:
    """A box, a disc/sphere or the union of both, placed in the upper part of the box."""
    kind = ["box", "disc", "union"][int(torch.randint(0, 3, (1,), generator=g))]
    scale = 1.0 if dim == 2 else 0.8

    def u(a: float, b: float, n: int = 1) -> Tensor:
        return a + (b - a) * torch.rand(n, generator=g, dtype=torch.float64)

    prims: list[tuple[str, Tensor, Tensor]] = []
    if kind in ("box", "union"):
        prims.append(("box", torch.zeros(dim, dtype=torch.float64), u(0.07, 0.14, dim) * scale))
    if kind in ("disc", "union"):
        r = u(0.08, 0.14) * scale
        c = torch.zeros(dim, dtype=torch.float64) if kind == "disc" else (u(-1, 1, dim) * 0.1)
        prims.append(("disc", c, r))
    lo = torch.stack([c - s if k == "box" else c - s.expand_as(c) for k, c, s in prims]).min(0).values
    hi = torch.stack([c + s if k == "box" else c + s.expand_as(c) for k, c, s in prims]).max(0).values
    blo, bhi = config.bounds[0][0] + 0.04, config.bounds[0][1] - 0.04
    room_lo = torch.full((dim,), blo, dtype=torch.float64)
    room_lo[-1] = 0.25  # start above the floor: things fall
    room_hi = torch.full((dim,), bhi, dtype=torch.float64)
    span_lo, span_hi = room_lo - lo, room_hi - hi
    shift = span_lo + (span_hi - span_lo).clamp_min(0) * torch.rand(dim, generator=g, dtype=torch.float64)
    return [(k, c + shift, s) for k, c, s in prims]


def sample_shape(prims: list[tuple[str, Tensor, Tensor]], n: int, g: torch.Generator) -> tuple[Tensor, float]:
    """``n`` points on a jittered lattice inside the shape, and the shape's area/volume."""
    dim = prims[0][1].numel()
    lo = torch.stack([c - s if k == "box" else c - s.expand_as(c) for k, c, s in prims]).min(0).values
    hi = torch.stack([c + s if k == "box" else c + s.expand_as(c) for k, c, s in prims]).max(0).values
    mc = lo + (hi - lo) * torch.rand(40_000, dim, generator=g, dtype=torch.float64)
    area = float(_inside(mc, prims).double().mean()) * float((hi - lo).prod())
    a = (area / n) ** (1 / dim)
    for _ in range(60):
        axes = [torch.arange(float(lo[k]) + a / 2, float(hi[k]), a, dtype=torch.float64) for k in range(dim)]
        lattice = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
        lattice = lattice + (torch.rand(lattice.shape, generator=g, dtype=torch.float64) - 0.5) * 0.5 * a
        pts = lattice[_inside(lattice, prims)]
        if pts.shape[0] >= n:
            keep = torch.sort(torch.randperm(pts.shape[0], generator=g)[:n]).values
            return pts[keep], area
        a *= 0.97
    raise UserError(f"could not place {n} particles in the random shape; use fewer particles")


def initial_conditions(n_particles: int, seed: int, config: MPMConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(x0 (N, d), v0 (N, d), vol (N,)) of one random scene, deterministic per seed."""
    g = torch.Generator().manual_seed(int(seed))
    prims = random_shape(config.dim, g, config)
    x, area = sample_shape(prims, n_particles, g)
    v = (torch.rand(config.dim, generator=g, dtype=torch.float64) * 2 - 1) * config.init_speed
    v0 = v.expand(n_particles, config.dim).clone()
    vol = torch.full((n_particles,), area / n_particles, dtype=torch.float64)
    return x, v0, vol


def _check_request(material: str | Material, n_particles: int, n_frames: int, dim: int) -> Material:
    m = get_material(material)
    if int(n_particles) < 1:
        raise UserError(f"n_particles must be >= 1, got {n_particles}")
    if int(n_frames) < 1:
        raise UserError(f"n_frames must be >= 1, got {n_frames}")
    if dim not in (2, 3):
        raise UserError(f"dim must be 2 or 3, got {dim}")
    return m


def simulate_many(material: str | Material, n_particles: int, n_frames: int, seeds: list[int], *, dim: int = 2,
                  config: MPMConfig | None = None) -> Tensor:
    """Trajectories of ``len(seeds)`` random scenes simulated together: (S, T, N, dim) positions."""
    m = _check_request(material, n_particles, n_frames, dim)
    cfg = config or MPMConfig(dim=dim)
    if cfg.dim != dim:
        cfg = replace(cfg, dim=dim)
    init = [initial_conditions(n_particles, s, cfg) for s in seeds]
    x0 = torch.stack([a for a, _, _ in init])
    v0 = torch.stack([b for _, b, _ in init])
    vol = torch.stack([c for _, _, c in init])
    sim = MPMSimulator(m, x0, v0, vol, cfg)
    return sim.run(int(n_frames))


def simulate(material: str | Material, n_particles: int, n_frames: int, seed: int, *, dim: int = 2,
             config: MPMConfig | None = None) -> Tensor:
    """One random trajectory of ``material``: (n_frames, n_particles, dim) positions.

    Args:
        material: ``water``, ``jelly``, ``sand``, ``plasticine`` or ``goop`` (or a :class:`Material`).
        n_particles: particles (>= 1).
        n_frames: stored frames, ``config.frame_dt`` apart (frame 0 = the initial state).
        seed: the random shape, placement and initial velocity.
        dim: 2 or 3.
        config: simulation settings (:class:`MPMConfig`).
    """
    return simulate_many(material, n_particles, n_frames, [seed], dim=dim, config=config)[0]


__all__ = [
    "DEFAULT_MATERIALS",
    "MATERIALS",
    "MPMConfig",
    "MPMSimulator",
    "MPMState",
    "Material",
    "PARTICLE_TYPES",
    "bspline_weights",
    "corotated_stress",
    "get_material",
    "hencky_stress",
    "initial_conditions",
    "polar_rotation",
    "random_shape",
    "return_mapping",
    "sample_shape",
    "simulate",
    "simulate_many",
    "svd2",
    "svd_rot",
]
