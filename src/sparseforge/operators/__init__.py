"""Learned particle simulators: GIOROM (reduced-order neural operator) and the GNS baseline,
dense decoders, and their training / rollout procedures."""

from .decoders import DecodePlan, IDWDecoder, NeuralFieldDecoder, SplatDecoder, build_decoder
from .features import ParticleSimulator, ParticleStats
from .giorom import GIOROM, GIOROMConfig
from .gns import GNS, GNSConfig
from .latent import FNO, LinearAttentionLatent, SpectralConv
from .rollout import (
    DecoderBatches,
    chamfer_distance,
    compare_rollouts,
    constant_velocity,
    decoder_loss,
    dense_rollout,
    exponential_lr,
    median_time,
    n_params,
    one_step_mse,
    relative_l2,
    rollout,
    rollout_mse,
    step_times,
    stepper_loss,
)

__all__ = [
    "FNO",
    "GIOROM",
    "GIOROMConfig",
    "GNS",
    "GNSConfig",
    "DecodePlan",
    "DecoderBatches",
    "IDWDecoder",
    "LinearAttentionLatent",
    "NeuralFieldDecoder",
    "ParticleSimulator",
    "ParticleStats",
    "SpectralConv",
    "SplatDecoder",
    "build_decoder",
    "chamfer_distance",
    "compare_rollouts",
    "constant_velocity",
    "decoder_loss",
    "dense_rollout",
    "exponential_lr",
    "median_time",
    "n_params",
    "one_step_mse",
    "relative_l2",
    "rollout",
    "rollout_mse",
    "step_times",
    "stepper_loss",
]
