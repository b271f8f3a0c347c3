"""Module A of Turbo-VBI: the three-layer hierarchical prior and its closed-form VBI updates.

Paper: Chengyu Xia, Danny H. K. Tsang, Vincent K. N. Lau, "Structured Bayesian Compression for Deep
Neural Networks Based on the Turbo-VBI Approach", arXiv:2302.10483 (IEEE Trans. Signal Processing 71,
2023). The paper gives the prior's structure; the update rules below are the variational updates
re-derived for real-valued weights (equation numbers are this module's own).

Prior of one weight n (support s_n, precision ρ_n, value w_n):

    (P1)  p(ρ_n | s_n) = Gamma(ρ_n; a, b)^{s_n} · Gamma(ρ_n; ā, b̄)^{1-s_n}     (shape, rate)
    (P2)  p(w_n | ρ_n) = N(w_n; 0, 1/ρ_n)
    (P3)  s ~ a support prior with marginal message π_n = P(s_n = 1) from module B

Variational family q(w, ρ, s) = Π_n N(w_n; μ_n, σ_n²) · Gamma(ρ_n; ã_n, b̃_n) · Bern(s_n; π̃_n):

    (A1)  ρ-step   ã = π̃ a + (1-π̃) ā + ½,     b̃ = π̃ b + (1-π̃) b̄ + ½ (μ² + σ²)        ("real")
                   ã = π̃ a + (1-π̃) ā + 1,     b̃ = π̃ b + (1-π̃) b̄ + (μ² + σ²)          ("complex")
    (A2)  moments  ⟨ρ⟩ = ã / b̃,               ⟨ln ρ⟩ = ψ(ã) - ln b̃
    (A3)  s-step   e1 = a ln b - lnΓ(a) + (a-1)⟨ln ρ⟩ - b⟨ρ⟩,  e0 = ā ln b̄ - lnΓ(ā) + (ā-1)⟨ln ρ⟩ - b̄⟨ρ⟩
                   ℓ = e1 - e0,                π̃ = sigmoid(ℓ + logit π)
    (A4)  message  ν = sigmoid(ℓ)   (extrinsic: posterior / prior, renormalised)
    (A5)  w-step   KL_n = ½ [⟨ρ⟩ (σ² + μ²) - 1 - ln(⟨ρ⟩ σ²)]     (loss: mean CE + (β/N) Σ_n KL_n)
    (A6)  ELBO     Σ_n  ½⟨ln ρ⟩ - ½ ln 2π - ½⟨ρ⟩(μ² + σ²)                         E ln p(w | ρ)
                      + π̃ e1 + (1-π̃) e0 + π̃ ln π + (1-π̃) ln(1-π)                E ln p(ρ | s) p(s)
                      + ½ ln(2πe σ²) + ã - ln b̃ + lnΓ(ã) + (1-ã)ψ(ã) + H(π̃)      entropies

With a = ā = 1 the s-step keeps a weight (π̃ > ½) exactly when
``⟨ρ⟩ < [ln(b/b̄) + logit π] / (b - b̄)`` (:func:`keep_threshold`).

Every update is a pure function computed in float64 (``lgamma`` / ``digamma``, log-odds instead of
products of small numbers); probabilities are clamped to ``[1e-12, 1 - 1e-12]`` before any logit or
entropy so saturated π̃ (exactly 0 or 1) stays finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from ..errors import ConfigError

__all__ = [
    "EPS",
    "GammaConstants",
    "GammaPrior",
    "rho_update",
    "rho_moments",
    "log_evidence_ratio",
    "s_update",
    "posterior_logit",
    "extrinsic_from_posterior",
    "extrinsic_logit",
    "kl_divergence",
    "prior_elbo_terms",
    "keep_threshold",
    "logit",
    "bernoulli_entropy",
]

EPS = 1e-12  # clamp for probabilities before logits / entropies (saturated π̃ stays finite)

RhoForm = Literal["real", "complex"]
ExtrinsicA = Literal["extrinsic", "demo"]


class GammaConstants(NamedTuple):
    """Shape/rate of the active (a, b) and inactive (ā, b̄) Gamma priors of one layer."""

    a: float
    b: float
    a_bar: float
    b_bar: float


@dataclass(frozen=True)
class GammaPrior:
    """How a layer's Gamma constants (P1) are chosen.

    Attributes:
        preset: ``"scaled"`` (reconstructed default): a = ā = 1, b = (κ s_l)², b̄ = b / r, with
            s_l the std of the layer's weights when the Bayesian phase starts, so the decision
            threshold sits at the layer's own weight scale; ``"fl_demo"``: a = 1, b = 1, ā = 1,
            b̄ = 0.01 (the first author's federated-learning demo; with b/b̄ = 100 the s-step
            prunes almost nothing); ``"custom"``: the constants ``a, b, a_bar, b_bar`` below.
        kappa: κ of ``"scaled"``.
        ratio: r = b / b̄ of ``"scaled"`` (must be > 1: the inactive prior has the larger precision).
        a, b, a_bar, b_bar: the constants of ``"custom"``.
    """

    preset: Literal["scaled", "fl_demo", "custom"] = "scaled"
    kappa: float = 0.5
    ratio: float = 10.0
    a: float = 1.0
    b: float = 1.0
    a_bar: float = 1.0
    b_bar: float = 0.01

    def __post_init__(self) -> None:
        if self.preset not in ("scaled", "fl_demo", "custom"):
            raise ConfigError(f"gamma_preset must be 'scaled', 'fl_demo' or 'custom', got {self.preset!r}")
        for k in ("kappa", "ratio", "a", "b", "a_bar", "b_bar"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"Gamma constant {k} must be a positive number, got {v!r}; set a value > 0")
        if self.preset == "scaled" and self.ratio <= 1:
            raise ConfigError(f"gamma ratio r = b/b̄ must be > 1 (inactive precision larger), got {self.ratio}")

    def constants(self, weight_std: float) -> GammaConstants:
        """The layer's (a, b, ā, b̄); ``weight_std`` is s_l (only ``"scaled"`` reads it)."""
        if self.preset == "fl_demo":
            return GammaConstants(1.0, 1.0, 1.0, 0.01)
        if self.preset == "custom":
            return GammaConstants(float(self.a), float(self.b), float(self.a_bar), float(self.b_bar))
        s = float(weight_std)
        if not (math.isfinite(s) and s > 0):
            raise ConfigError(f"the 'scaled' Gamma prior needs a layer with non-zero weights (std {s}); "
                              "warm-start the model or use gamma_preset='custom'")
        b = (self.kappa * s) ** 2
        return GammaConstants(1.0, b, 1.0, b / self.ratio)


def _f64(x: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def logit(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """log(p / (1 - p)) in float64 with p clamped to [eps, 1 - eps]."""
    p = _f64(p).clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def bernoulli_entropy(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """H(p) = -p ln p - (1-p) ln(1-p), float64, finite for p in {0, 1}."""
    p = _f64(p).clamp(eps, 1.0 - eps)
    return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


def rho_update(
    mu: torch.Tensor, sigma2: torch.Tensor, pi_t: torch.Tensor, c: GammaConstants, *, form: RhoForm = "real"
) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ-step (A1): the exact coordinate update of q(ρ) = Gamma(ã, b̃) given q(w) and q(s).

    Args:
        mu: posterior means μ (any shape).
        sigma2: posterior variances σ² (same shape).
        pi_t: support posteriors π̃ (same shape).
        c: the layer's Gamma constants.
        form: ``"real"`` (½ terms; exact ELBO step for real weights) or ``"complex"`` (+1 and
            μ² + σ² without ½: the complex-Gaussian form of the authors' demo, kept for comparison).

    Returns:
        (ã, b̃) in float64.
    """
    mu, sigma2, pi_t = _f64(mu), _f64(sigma2), _f64(pi_t).clamp(0.0, 1.0)
    second = mu * mu + sigma2  # ⟨w²⟩
    if form == "real":
        a_t = pi_t * c.a + (1.0 - pi_t) * c.a_bar + 0.5
        b_t = pi_t * c.b + (1.0 - pi_t) * c.b_bar + 0.5 * second
    elif form == "complex":
        a_t = pi_t * c.a + (1.0 - pi_t) * c.a_bar + 1.0
        b_t = pi_t * c.b + (1.0 - pi_t) * c.b_bar + second
    else:
        raise ConfigError(f"rho_update must be 'real' or 'complex', got {form!r}")
    return a_t, b_t


def rho_moments(a_t: torch.Tensor, b_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A2): ⟨ρ⟩ = ã/b̃ and ⟨ln ρ⟩ = ψ(ã) - ln b̃ under Gamma(ã, b̃), float64."""
    a_t, b_t = _f64(a_t), _f64(b_t)
    return a_t / b_t, torch.digamma(a_t) - torch.log(b_t)


def log_evidence_ratio(e_rho: torch.Tensor, e_log_rho: torch.Tensor, c: GammaConstants) -> torch.Tensor:
    """(A3): ℓ = e1 - e0, the log-evidence ratio for s_n = 1 vs 0 contributed by module A.

    e1 = a ln b - lnΓ(a) + (a-1)⟨ln ρ⟩ - b⟨ρ⟩ and e0 likewise with (ā, b̄); computed with lgamma
    in float64 (never b^a/Γ(a)·exp(-b⟨ρ⟩) as a product).
    """
    e_rho, e_log_rho = _f64(e_rho), _f64(e_log_rho)
    a, b, ab, bb = (_f64(v) for v in c)
    e1 = a * torch.log(b) - torch.lgamma(a) + (a - 1.0) * e_log_rho - b * e_rho
    e0 = ab * torch.log(bb) - torch.lgamma(ab) + (ab - 1.0) * e_log_rho - bb * e_rho
    return e1 - e0


def posterior_logit(ell: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """logit π̃ = ℓ + logit π (A3), float64; unsaturated, so it also ranks weights."""
    return _f64(ell) + logit(pi)


def s_update(ell: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """s-step (A3): π̃ = sigmoid(ℓ + logit π), the exact coordinate update of q(s) given q(ρ)."""
    return torch.sigmoid(posterior_logit(ell, pi))


def extrinsic_from_posterior(
    ell: torch.Tensor, pi_t: torch.Tensor | None = None, pi: torch.Tensor | None = None, *, rule: ExtrinsicA = "extrinsic"
) -> torch.Tensor:
    """Message A → B (A4).

    Args:
        ell: module A's log-evidence ratio ℓ.
        pi_t: current π̃ (only ``rule="demo"``).
        pi: current incoming prior π (only ``rule="demo"``).
        rule: ``"extrinsic"`` (default, the turbo rule): ν = sigmoid(ℓ), the posterior divided by
            the prior and renormalised, independent of π; ``"demo"``: π̃π / (π̃π + (1-π̃)(1-π)),
            the authors' demo line, which multiplies by the prior a second time (double counting;
            for comparison only).

    Returns:
        ν in float64 (probability that s_n = 1 according to module A alone).
    """
    if rule == "extrinsic":
        return torch.sigmoid(_f64(ell))
    if rule == "demo":
        if pi_t is None or pi is None:
            raise ConfigError("extrinsic_a='demo' needs the current π̃ and π")
        return torch.sigmoid(logit(pi_t) + logit(pi))
    raise ConfigError(f"extrinsic_a must be 'extrinsic' or 'demo', got {rule!r}")


def extrinsic_logit(ell: torch.Tensor, pi: torch.Tensor | None = None, *, rule: ExtrinsicA = "extrinsic") -> torch.Tensor:
    """Log-odds of the message A → B (A4), float64 and unsaturated (what module B consumes).

    ``"extrinsic"``: ℓ; ``"demo"``: logit π̃ + logit π = ℓ + 2 logit π (see :func:`extrinsic_from_posterior`).
    """
    if rule == "extrinsic":
        return _f64(ell)
    if rule == "demo":
        if pi is None:
            raise ConfigError("extrinsic_a='demo' needs the current π")
        return _f64(ell) + 2.0 * logit(pi)
    raise ConfigError(f"extrinsic_a must be 'extrinsic' or 'demo', got {rule!r}")


def kl_divergence(mu: torch.Tensor, log_sigma2: torch.Tensor | None, e_rho: torch.Tensor) -> torch.Tensor:
    """(A5): KL_n = ½[⟨ρ⟩(σ² + μ²) - 1 - ln(⟨ρ⟩σ²)] per weight, differentiable in μ and log σ².

    It differs from -E_q ln p(w | ρ) - H(q(w)) only by a constant in (μ, σ), and is >= 0 with
    equality iff μ = 0 and σ² = 1/⟨ρ⟩. With ``log_sigma2=None`` (σ frozen near 0) the σ-terms are
    dropped and what remains is the L2 penalty ½⟨ρ⟩μ² (a frozen log σ² would add a huge constant).
    Computed in the dtype of ``mu`` (``e_rho`` is cast), since it sits in the training loss.
    """
    e_rho = e_rho.to(mu.dtype)
    if log_sigma2 is None:
        return 0.5 * e_rho * mu * mu
    return 0.5 * (e_rho * (torch.exp(log_sigma2) + mu * mu) - 1.0 - torch.log(e_rho) - log_sigma2)


def prior_elbo_terms(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    a_t: torch.Tensor,
    b_t: torch.Tensor,
    pi_t: torch.Tensor,
    pi: torch.Tensor,
    c: GammaConstants,
) -> torch.Tensor:
    """(A6): each weight's ELBO terms apart from the likelihood, float64.

    E_q[ln p(w|ρ) + ln p(ρ|s) + ln p(s)] + H(q(w)) + H(q(ρ)) + H(q(s)), with p(s) = Π Bern(π)
    (module B's message as an independent prior). Adding E_q ln p(D | w) gives the ELBO.
    """
    mu, sigma2, a_t, b_t = _f64(mu), _f64(sigma2), _f64(a_t), _f64(b_t)
    pi_t_c = _f64(pi_t).clamp(EPS, 1.0 - EPS)
    pi_c = _f64(pi).clamp(EPS, 1.0 - EPS)
    e_rho, e_log_rho = rho_moments(a_t, b_t)
    a, b, ab, bb = (_f64(v) for v in c)
    e1 = a * torch.log(b) - torch.lgamma(a) + (a - 1.0) * e_log_rho - b * e_rho
    e0 = ab * torch.log(bb) - torch.lgamma(ab) + (ab - 1.0) * e_log_rho - bb * e_rho
    log_2pi = math.log(2.0 * math.pi)
    ln_pw = 0.5 * e_log_rho - 0.5 * log_2pi - 0.5 * e_rho * (mu * mu + sigma2)
    ln_prho_s = pi_t_c * (e1 + torch.log(pi_c)) + (1.0 - pi_t_c) * (e0 + torch.log1p(-pi_c))
    h_w = 0.5 * (log_2pi + 1.0 + torch.log(sigma2))
    h_rho = a_t - torch.log(b_t) + torch.lgamma(a_t) + (1.0 - a_t) * torch.digamma(a_t)
    return ln_pw + ln_prho_s + h_w + h_rho + bernoulli_entropy(pi_t_c)


def keep_threshold(c: GammaConstants, pi: torch.Tensor | float) -> torch.Tensor:
    """For a = ā = 1: π̃ > ½ exactly when ⟨ρ⟩ < [ln(b/b̄) + logit π] / (b - b̄)."""
    if c.a != 1.0 or c.a_bar != 1.0:
        raise ConfigError("keep_threshold holds for a = ā = 1 only")
    return (math.log(c.b / c.b_bar) + logit(pi)) / (c.b - c.b_bar)
