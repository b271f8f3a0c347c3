"""Spectral and low-rank training: SST (arXiv:2405.15481), LoRA (2106.09685), ReLoRA (2307.05695),
GaLore (2403.03507).

Layers plus optimizer hooks; the library never owns the training loop::

    from sparseforge import spectral
    model = spectral.convert(model, "sst", rank=8)                # or "lora", "relora", "galore", "full"
    opt = spectral.build_optimizer(model, lr=1e-3)                # AdamW / GaLoreAdamW, right decay groups
    ctl = spectral.attach("sst", model, opt, T3=200, warmup_iter=20, seed=0)   # resampling, re-SVD
    engine.fit(model, data, opt, step_fn=..., steps=...)
    dense = spectral.merge(model)                                 # plain nn.Linear, same outputs
"""

from .convert import attach, build_optimizer, convert, merge, method_names, param_groups, select_linears
from .family import SpectralMethod, record_of, spectral_methods
from .galore import GaLoreAdamW, GaLoreLinear
from .lora import LoRALinear
from .memory import analytic_trainable, layer_memory, memory_report
from .relora import ReLoRAController
from .sst import SAMPLINGS, SpectralLinear, SSTController, sample_indices

__all__ = [
    "SpectralMethod",
    "method_names",
    "record_of",
    "spectral_methods",
    "SAMPLINGS",
    "GaLoreAdamW",
    "GaLoreLinear",
    "LoRALinear",
    "ReLoRAController",
    "SSTController",
    "SpectralLinear",
    "analytic_trainable",
    "attach",
    "build_optimizer",
    "convert",
    "layer_memory",
    "memory_report",
    "merge",
    "param_groups",
    "sample_indices",
    "select_linears",
]
