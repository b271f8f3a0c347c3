"""Bayesian compression: Turbo-VBI with the three-layer hierarchical prior (arXiv:2302.10483).

* :mod:`~sparseforge.bayes.prior` — module A: Gamma/Gaussian prior, closed-form ρ- and s-steps, KL, ELBO;
* :mod:`~sparseforge.bayes.mrf` — module B: sum-product on the support MRF (exact chains, damped loopy BP);
* :mod:`~sparseforge.bayes.layout` — weights as the support matrix (fan-in x neurons);
* :mod:`~sparseforge.bayes.layers` — :class:`BayesLinear`, :class:`BayesConv2d` (local reparameterisation);
* :mod:`~sparseforge.bayes.structure` — compression rate, neuron sparsity, run count, tile occupancy;
* :mod:`~sparseforge.bayes.turbo_vbi` — :class:`TurboVBI` (targets, penalty, schedule callback, masks, bake).
"""

from .layers import BayesConv2d, BayesLayer, BayesLinear
from .layout import from_support, support_shape, to_support
from .mrf import IIDSupport, PairTable, SupportMRF, bp_grid, chain_forward_backward
from .prior import (
    GammaConstants,
    GammaPrior,
    extrinsic_from_posterior,
    extrinsic_logit,
    keep_threshold,
    kl_divergence,
    log_evidence_ratio,
    prior_elbo_terms,
    rho_moments,
    rho_update,
    s_update,
)
from .structure import column_runs, dead_neurons, run_count, structure_metrics, tile_occupancy
from .turbo_vbi import (
    TurboVBI,
    TurboVBICallback,
    TurboVBIConfig,
    calibrate_iid_prior,
    check_no_batchnorm_after,
    resolve_bayes_targets,
)

__all__ = [
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "GammaConstants",
    "GammaPrior",
    "IIDSupport",
    "PairTable",
    "SupportMRF",
    "TurboVBI",
    "TurboVBICallback",
    "TurboVBIConfig",
    "bp_grid",
    "calibrate_iid_prior",
    "chain_forward_backward",
    "check_no_batchnorm_after",
    "column_runs",
    "dead_neurons",
    "extrinsic_from_posterior",
    "extrinsic_logit",
    "from_support",
    "keep_threshold",
    "kl_divergence",
    "log_evidence_ratio",
    "prior_elbo_terms",
    "resolve_bayes_targets",
    "rho_moments",
    "rho_update",
    "run_count",
    "s_update",
    "structure_metrics",
    "support_shape",
    "tile_occupancy",
    "to_support",
]
