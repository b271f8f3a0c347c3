"""Bayesian Linear and Conv2d layers for Turbo-VBI: q(w) = N(μ, σ²) with local reparameterisation.

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483; local reparameterisation from Kingma, Salimans, Welling,
"Variational Dropout and the Local Reparameterization Trick", arXiv:1506.02557.

In training mode the pre-activations are sampled instead of the weights (m = mask):

    Linear:  mean = x (μ⊙m)ᵀ + bias,        var = x² (σ²⊙m)ᵀ,        out = mean + √var · ε
    Conv:    mean = conv(x, μ⊙m) + bias,     var = conv(x², σ²⊙m),    ε ~ N(0, 1)

In evaluation mode the output is the deterministic layer with weight μ⊙m (never sampled weights).
Each layer also holds the Turbo-VBI state of its weights as float64 buffers: the Gamma constants
(a, b, ā, b̄), q(ρ) = Gamma(ã, b̃), π̃ = q(s = 1), the log-evidence ratio ℓ of module A, the
posterior log-odds logit π̃, the message π from module B and the pruning ``mask``. Biases are point
estimates without a prior.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .prior import GammaConstants, kl_divergence, rho_moments

__all__ = ["BayesLayer", "BayesLinear", "BayesConv2d", "FROZEN_LOG_SIGMA2"]

# σ = softplus(-30) ≈ 9.4e-14 when σ is not learned (the authors' demo freezes σ there)
FROZEN_LOG_SIGMA2 = 2.0 * math.log(math.log1p(math.exp(-30.0)))
_VAR_EPS = 1e-16


class BayesLayer(nn.Module):
    """Shared parameters, buffers and KL of :class:`BayesLinear` and :class:`BayesConv2d`.

    Attributes:
        mu: posterior means μ (weight-shaped Parameter).
        log_sigma2: log posterior variances (Parameter; frozen when ``learn_sigma=False``).
        bias: point-estimate bias or None.
        mask: bool buffer, True = kept (applied in every forward, so pruned weights contribute
            nothing and receive zero gradient).
    """

    mu: nn.Parameter
    log_sigma2: nn.Parameter

    def _init_bayes(self, weight: torch.Tensor, bias: torch.Tensor | None, *, learn_sigma: bool,
                    log_sigma2_init: float) -> None:
        self.learn_sigma = bool(learn_sigma)
        self.mu = nn.Parameter(weight.detach().clone())
        init = log_sigma2_init if learn_sigma else FROZEN_LOG_SIGMA2
        self.log_sigma2 = nn.Parameter(torch.full_like(weight.detach(), float(init)), requires_grad=bool(learn_sigma))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        f64 = dict(dtype=torch.float64, device=weight.device)
        shape = weight.shape
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool, device=weight.device))
        self.register_buffer("gamma", torch.tensor([1.0, 1.0, 1.0, 0.01], **f64))  # (a, b, ā, b̄)
        self.register_buffer("a_tilde", torch.ones(shape, **f64))
        self.register_buffer("b_tilde", torch.ones(shape, **f64))
        self.register_buffer("pi_tilde", torch.full(shape, 0.5, **f64))
        self.register_buffer("pi_prior", torch.full(shape, 0.5, **f64))
        self.register_buffer("ell", torch.zeros(shape, **f64))
        self.register_buffer("post_logit", torch.zeros(shape, **f64))
        # ⟨ρ⟩ in the weights' dtype, cached for the per-step KL (refreshed by set_rho_)
        self.register_buffer("e_rho_w", torch.ones(shape, dtype=weight.dtype, device=weight.device))

    # --- views -------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The effective (evaluation) weight μ ⊙ mask."""
        return self.mu * self.mask

    def sigma2(self) -> torch.Tensor:
        """σ² (weight-shaped, the parameter's dtype)."""
        return torch.exp(self.log_sigma2)

    def constants(self) -> GammaConstants:
        a, b, ab, bb = (float(v) for v in self.gamma.tolist())
        return GammaConstants(a, b, ab, bb)

    def set_constants(self, c: GammaConstants) -> None:
        self.gamma.copy_(torch.tensor(list(c), dtype=torch.float64))

    def e_rho(self) -> torch.Tensor:
        """⟨ρ⟩ = ã / b̃ (float64)."""
        return rho_moments(self.a_tilde, self.b_tilde)[0]

    @torch.no_grad()
    def set_rho_(self, a_t: torch.Tensor, b_t: torch.Tensor) -> None:
        """Store q(ρ) = Gamma(ã, b̃) and refresh the cached ⟨ρ⟩ the KL uses."""
        self.a_tilde.copy_(a_t)
        self.b_tilde.copy_(b_t)
        self.e_rho_w.copy_(self.e_rho())

    def kl(self) -> torch.Tensor:
        """Σ_n KL_n over the kept weights (differentiable in μ and, if learned, log σ²)."""
        log_s2 = self.log_sigma2 if self.learn_sigma else None
        kl = kl_divergence(self.mu, log_s2, self.e_rho_w)
        return (kl * self.mask).sum()

    @torch.no_grad()
    def prune_(self, mask: torch.Tensor) -> None:
        """Set the mask (True = kept) and zero μ where pruned."""
        if tuple(mask.shape) != tuple(self.mu.shape):
            raise UserError(f"mask of shape {tuple(mask.shape)} does not fit weights of shape {tuple(self.mu.shape)}")
        self.mask.copy_(mask.to(self.mask.device, torch.bool))
        self.mu.mul_(self.mask)

    # --- forward -----------------------------------------------------------------------------
    def _linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The layer's linear map with weights ``w`` (a subclass hook: ``F.linear`` / ``F.conv2d``)."""
        raise NotImplementedError(f"{type(self).__name__} must define _linear_op (see BayesLinear, BayesConv2d)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self._linear_op(x, self.mu * self.mask, self.bias)
        if not self.training or not self.learn_sigma:
            return mean
        var = self._linear_op(x * x, self.sigma2() * self.mask, None)
        return mean + torch.sqrt(var + _VAR_EPS) * torch.randn_like(mean)


class BayesLinear(BayesLayer):
    """Bayesian ``nn.Linear`` (same ``(in_features, out_features, bias)`` signature).

    Args:
        in_features: input features.
        out_features: output features (neurons).
        bias: learn a bias.
        learn_sigma: learn log σ² (True; reconstructed default); False freezes σ ≈ 1e-13 and the
            layer trains like MAP with the penalty ½⟨ρ⟩μ².
        log_sigma2_init: initial log σ² (reconstructed default -10).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, learn_sigma: bool = True,
                 log_sigma2_init: float = -10.0) -> None:
        super().__init__()
        ref = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self._init_bayes(ref.weight, ref.bias, learn_sigma=learn_sigma, log_sigma2_init=log_sigma2_init)

    @classmethod
    def from_linear(cls, layer: nn.Linear, *, learn_sigma: bool = True, log_sigma2_init: float = -10.0) -> BayesLinear:
        """A BayesLinear with μ = the layer's weight and its bias."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new._init_bayes(layer.weight, layer.bias, learn_sigma=learn_sigma, log_sigma2_init=log_sigma2_init)
        return new

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    @torch.no_grad()
    def to_plain(self) -> nn.Linear:
        """An ``nn.Linear`` with weight μ ⊙ mask and the bias."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.mu.device, dtype=self.mu.dtype)
        out.weight.copy_(self.mu * self.mask)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class BayesConv2d(BayesLayer):
    """Bayesian ``nn.Conv2d`` (zero padding only), built from a Conv2d by :meth:`from_conv`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as ``nn.Conv2d``.
        learn_sigma, log_sigma2_init: as :class:`BayesLinear`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
                 bias: bool = True, *, learn_sigma: bool = True, log_sigma2_init: float = -10.0) -> None:
        super().__init__()
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._copy_geometry(ref)
        self._init_bayes(ref.weight, ref.bias, learn_sigma=learn_sigma, log_sigma2_init=log_sigma2_init)

    def _copy_geometry(self, conv: nn.Conv2d) -> None:
        if conv.padding_mode != "zeros":
            raise UserError(f"BayesConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}; "
                            "leave this layer out of targets")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, learn_sigma: bool = True, log_sigma2_init: float = -10.0) -> BayesConv2d:
        """A BayesConv2d with μ = the conv's weight, its bias and geometry."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new._copy_geometry(conv)
        new._init_bayes(conv.weight, conv.bias, learn_sigma=learn_sigma, log_sigma2_init=log_sigma2_init)
        return new

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with weight μ ⊙ mask, the bias and the same geometry."""
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                        self.dilation, self.groups, bias=self.bias is not None,
                        device=self.mu.device, dtype=self.mu.dtype)
        out.weight.copy_(self.mu * self.mask)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")
