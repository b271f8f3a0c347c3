"""Particle physics for generating training data: a small MLS-MPM simulator (:mod:`.mpm`)."""

from .mpm import (
    DEFAULT_MATERIALS,
    MATERIALS,
    PARTICLE_TYPES,
    Material,
    MPMConfig,
    MPMSimulator,
    get_material,
    simulate,
    simulate_many,
)

__all__ = [
    "DEFAULT_MATERIALS",
    "MATERIALS",
    "MPMConfig",
    "MPMSimulator",
    "Material",
    "PARTICLE_TYPES",
    "get_material",
    "simulate",
    "simulate_many",
]
