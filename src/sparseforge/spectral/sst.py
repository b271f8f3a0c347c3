"""Sparse Spectral Training (SST): linear layers trained in SVD form.

Paper: Jialin Zhao, Yingtao Zhang, Xinghang Li, Huaping Liu, Carlo Vittorio Cannistraci,
"Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural Networks",
arXiv:2405.15481 (ICML 2025).

Equations implemented (k = min(out, in), S the active set, |S| = r, G = dL/dW):

* parametrisation  W = U diag(sigma) Vh,  U in R^{out x k}, Vh in R^{k x in}, from the SVD of the
  layer's own (normal) initialisation;
* forward          y = x W^T + b  ("materialize")  or  y = ((x Vh^T) * sigma) U^T + b  ("factored");
* gradients        grad sigma_i = u_i^T G v_i                      (all i, every step)
                   grad~ u_i    = G v_i,   grad~ v_i = G^T u_i      (i in S, "enhanced": sigma_i removed)
* after each step  sigma <- max(sigma, 0);  u_i <- u_i/||u_i||,  v_i <- v_i/||v_i||  (i in S);
* sampling         p_i = sigma_i / sum_j sigma_j   ("sigma", default, v1)
                   p_i = (1/k + sigma_i / sum_j sigma_j) / 2   ("sigma_uniform_mix", ICML version);
                   r distinct indices without replacement (reconstructed default);
* schedule         new S every T3 steps (per-iteration LR warm-up min(1, (t+1)/warmup_iter));
                   re-SVD  [U, sigma, Vh] <- SVD(U diag(sigma) Vh)  after every T2 = d/r iterations.

Memory ("time sharing" of the singular vectors): the active slices ``U_act`` (out x r), ``Vh_act`` (r x in) and
``sigma`` (k) are ``nn.Parameter`` s, the other k - r pairs frozen buffers ``U_rest`` / ``Vh_rest``, so every
vector is stored once (k(out+in) + k numbers), and gradients and optimizer state exist for r(out+in)+k numbers
per layer. The autograd function saves only the input and these tensors (no assembled copy of U or Vh). A
resample draws a new S and copies the new slices into the *same* Parameter objects (the old ones join the
rest), so the optimizer is never rebuilt; their optimizer state is zeroed (moments and step counter).

The parametrisation is a self-contained module (:class:`SpectralLinear`, computing W x + b); a
Lorentz linear layer (hyperbolic issue) reuses it by holding a ``SpectralLinear`` for its z = W x + b
and applying its own time/space map afterwards. :class:`SSTController` finds every SpectralLinear in
a model, whatever module contains it.

Reconstructed defaults (details the paper does not pin down), each a named option:
``absorb_norm=False``, ``sigma_weight_decay=False``, sampling without replacement with the
zero-probability fill rule, global T2 for layers with k != d, warm-up factor on all parameter groups,
sigma's optimizer state reset at each re-SVD (``reset_sigma_state_at_resvd=True``) and kept across
iterations (``reset_sigma_state_each_iteration=False``), ``forward_mode="auto"`` (see below).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from ..errors import UserError

ForwardMode = Literal["auto", "materialize", "factored"]
Sampling = Literal["sigma", "sigma_uniform_mix", "uniform", "sequential", "top_r"]
SAMPLINGS = ("sigma", "sigma_uniform_mix", "uniform", "sequential", "top_r")


def check_rank(rank: int, in_features: int, out_features: int, name: str = "layer") -> None:
    """Raise a one-line :class:`UserError` unless 1 <= rank < min(in, out)."""
    k = min(in_features, out_features)
    if not isinstance(rank, int) or rank < 1 or rank >= k:
        raise UserError(
            f"rank must satisfy 1 <= rank < min(in, out) = {k} for {name} ({in_features} -> {out_features}); "
            f"got {rank!r}: pick a smaller rank or leave this layer out with targets/exclude"
        )


# ----------------------------------------------------------------------------------------------
# pure math
# ----------------------------------------------------------------------------------------------
def sampling_probs(sigma: torch.Tensor, sampling: str) -> torch.Tensor:
    """Sampling weights p (sum 1) over the k singular triplets."""
    k = sigma.numel()
    s = sigma.detach().double().clamp_min(0)
    tot = s.sum()
    sp = s / tot if tot > 0 else torch.full_like(s, 1.0 / k)
    if sampling == "sigma":
        return sp
    if sampling == "sigma_uniform_mix":
        return 0.5 * (sp + 1.0 / k)
    if sampling == "uniform":
        return torch.full_like(s, 1.0 / k)
    raise ValueError(f"no probabilities for sampling {sampling!r}")


def sample_indices(
    sigma: torch.Tensor,
    r: int,
    *,
    sampling: str = "sigma",
    generator: torch.Generator | None = None,
    iteration: int = 0,
) -> torch.Tensor:
    """Draw the active set S: r distinct indices in [0, k) (sorted, long).

    ``sigma``/``sigma_uniform_mix``/``uniform`` draw without replacement with probabilities
    :func:`sampling_probs`; when fewer than r entries have p > 0 the rest is filled uniformly
    from the zero-probability entries. ``sequential`` takes the ``iteration``-th
    block of r indices cyclically; ``top_r`` the r largest sigma.
    """
    k = sigma.numel()
    if sampling == "top_r":
        idx = torch.topk(sigma.detach(), r).indices
    elif sampling == "sequential":
        idx = (torch.arange(r) + iteration * r) % k
    else:
        p = sampling_probs(sigma, sampling).cpu()
        pos = int((p > 0).sum())
        if pos >= r:
            idx = torch.multinomial(p, r, replacement=False, generator=generator)
        else:
            first = torch.nonzero(p > 0).flatten()
            zeros = torch.nonzero(p <= 0).flatten()
            fill = zeros[torch.randperm(zeros.numel(), generator=generator)[: r - pos]]
            idx = torch.cat([first, fill])
    return torch.sort(idx.to(torch.long)).values


def assemble(U_rest: torch.Tensor, Vh_rest: torch.Tensor, rest_idx: torch.Tensor, U_act: torch.Tensor,
             Vh_act: torch.Tensor, idx: torch.Tensor):
    """Full factors U (out, k), Vh (k, in) from the active slices and the rest (a transient copy)."""
    k = idx.numel() + rest_idx.numel()
    U = U_act.new_empty(U_act.shape[0], k)
    U[:, idx] = U_act
    U[:, rest_idx] = U_rest
    Vh = Vh_act.new_empty(k, Vh_act.shape[1])
    Vh[idx] = Vh_act
    Vh[rest_idx] = Vh_rest
    return U, Vh


def _weight(sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx) -> torch.Tensor:
    """W = U_S diag(sigma_S) Vh_S + U_R diag(sigma_R) Vh_R (out, in), never assembling U or Vh."""
    return (U_act * sigma[idx]) @ Vh_act + (U_rest * sigma[rest_idx]) @ Vh_rest


class _SpectralLinearFn(torch.autograd.Function):
    """y = x (U diag(sigma) Vh)^T with the SST gradients (enhanced by default).

    U and Vh are split into the active slices (``U_act`` (out, r), ``Vh_act`` (r, in), trained) and the rest
    (``U_rest`` (out, k - r), ``Vh_rest`` (k - r, in), frozen buffers); ``idx`` / ``rest_idx`` say where each
    column sits. Forward and backward work on the two parts and save only tensors that exist anyway (x and the
    layer's own factors): no assembled copy of U or Vh lives from forward to backward. Inputs with gradients:
    x, sigma (k), U_act, Vh_act. With ``enhanced=False`` the gradients are the exact ones (checked by gradcheck);
    with ``enhanced=True`` the factor gradients are divided by sigma_S.
    """

    @staticmethod
    def forward(ctx, x, sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx, factored: bool, enhanced: bool):  # type: ignore[override]
        if factored:
            y = ((x @ Vh_act.T) * sigma[idx]) @ U_act.T + ((x @ Vh_rest.T) * sigma[rest_idx]) @ U_rest.T  # (..., out)
        else:
            y = x @ _weight(sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx).T
        ctx.save_for_backward(x, sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx)
        ctx.factored, ctx.enhanced = factored, enhanced
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx = ctx.saved_tensors
        out_f, in_f = U_act.shape[0], Vh_act.shape[1]
        gy2 = gy.reshape(-1, out_f)  # (N, out)
        x2 = x.reshape(-1, in_f)  # (N, in)
        gx = gU = gV = None
        gs = torch.empty_like(sigma)
        sS, sR = sigma[idx], sigma[rest_idx]
        if ctx.factored:
            aS, aR = gy2 @ U_act, gy2 @ U_rest  # (N, r), (N, k-r): u_i^T gy_n
            bS, bR = x2 @ Vh_act.T, x2 @ Vh_rest.T  # v_i^T x_n
            if ctx.needs_input_grad[0]:
                gx = ((aS * sS) @ Vh_act + (aR * sR) @ Vh_rest).reshape(x.shape)
            gs[idx], gs[rest_idx] = (aS * bS).sum(0), (aR * bR).sum(0)  # u_i^T G v_i
            gU = gy2.T @ bS  # G v_S   (out, r)
            gV = aS.T @ x2  # u_S^T G (r, in)
        else:
            G = gy2.T @ x2  # (out, in)
            if ctx.needs_input_grad[0]:
                gx = (gy2 @ _weight(sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx)).reshape(x.shape)
            gs[idx] = ((U_act.T @ G) * Vh_act).sum(1)
            gs[rest_idx] = ((U_rest.T @ G) * Vh_rest).sum(1)
            gU = G @ Vh_act.T
            gV = U_act.T @ G
        if not ctx.enhanced:
            gU = gU * sS
            gV = gV * sS[:, None]
        return gx, gs, gU, gV, None, None, None, None, None, None


def spectral_linear(
    x: torch.Tensor,
    sigma: torch.Tensor,
    U_act: torch.Tensor,
    Vh_act: torch.Tensor,
    U_rest: torch.Tensor,
    Vh_rest: torch.Tensor,
    idx: torch.Tensor,
    rest_idx: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    factored: bool = False,
    enhanced: bool = True,
) -> torch.Tensor:
    """Functional SST linear map (see :class:`_SpectralLinearFn`)."""
    y = _SpectralLinearFn.apply(x, sigma, U_act, Vh_act, U_rest, Vh_rest, idx, rest_idx, factored, enhanced)
    return y if bias is None else y + bias


def resvd(U: torch.Tensor, sigma: torch.Tensor, Vh: torch.Tensor):
    """[U', sigma', Vh'] = SVD(U diag(sigma) Vh), computed in float64; sigma' non-increasing."""
    W = (U.double() * sigma.double()) @ Vh.double()
    U2, s2, Vh2 = torch.linalg.svd(W, full_matrices=False)
    return U2.to(U.dtype), s2.to(sigma.dtype), Vh2.to(Vh.dtype)


# ----------------------------------------------------------------------------------------------
# the layer
# ----------------------------------------------------------------------------------------------
class SpectralLinear(nn.Module):
    """A linear layer held as U diag(sigma) Vh with r active singular-vector pairs.

    Args:
        in_features / out_features: as in ``nn.Linear``.
        rank: r, the number of active singular-vector pairs (1 <= r < min(in, out)).
        bias: keep an ordinary bias parameter.
        forward_mode: ``"materialize"`` (W built once per forward), ``"factored"`` (never builds W) or
            ``"auto"`` (the default, a reconstruction: whichever costs fewer multiply-adds for the batch at
            hand; both give the same output).
        enhanced_grad: drop sigma_i from the factor gradients (the paper's enhanced gradient).
        weight: the initial W (out, in); default: ``nn.Linear``'s own init.
        bias_init: the initial bias; default ``nn.Linear``'s (or zeros when ``weight`` is given).
        device / dtype: as in ``nn.Linear``.

    The active set starts as the top-r singular pairs of W; :class:`SSTController` draws the sets it trains.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        bias: bool = True,
        forward_mode: ForwardMode = "auto",
        enhanced_grad: bool = True,
        weight: torch.Tensor | None = None,
        bias_init: torch.Tensor | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_rank(rank, in_features, out_features)
        if forward_mode not in ("auto", "materialize", "factored"):
            raise UserError(f"forward_mode must be auto, materialize or factored, got {forward_mode!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.k = min(in_features, out_features)
        self.forward_mode, self.enhanced_grad = forward_mode, enhanced_grad
        fk = {"device": device, "dtype": dtype}
        if weight is None:
            ref = nn.Linear(in_features, out_features, bias=bias, **fk)
            weight = ref.weight.detach()
            if bias and bias_init is None:
                bias_init = ref.bias.detach()
        weight = weight.detach().to(**{k: v for k, v in fk.items() if v is not None})
        U, s, Vh = torch.linalg.svd(weight.double(), full_matrices=False)
        U, s, Vh = U.to(weight.dtype), s.to(weight.dtype), Vh.to(weight.dtype)
        idx = torch.arange(rank, device=weight.device)  # replaced by the controller's first draw
        rest = torch.arange(rank, self.k, device=weight.device)
        self.register_buffer("active_idx", idx)  # (r,) long, sorted
        self.register_buffer("rest_idx", rest)  # (k - r,) long, sorted: every other triplet
        self.register_buffer("U_rest", U[:, rest].clone())  # (out, k - r) frozen store of the inactive vectors
        self.register_buffer("Vh_rest", Vh[rest].clone())  # (k - r, in)
        self.sigma = nn.Parameter(s.clone())  # (k,)
        self.U_act = nn.Parameter(U[:, idx].clone())  # (out, r)
        self.Vh_act = nn.Parameter(Vh[idx].clone())  # (r, in)
        if bias:
            b = torch.zeros(out_features, dtype=weight.dtype, device=weight.device) if bias_init is None else bias_init
            self.bias = nn.Parameter(b.detach().clone().to(weight))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, **opts: Any) -> SpectralLinear:
        """Zero-distortion conversion of an ``nn.Linear`` (same outputs to float precision)."""
        return cls(
            linear.in_features,
            linear.out_features,
            rank,
            bias=linear.bias is not None,
            weight=linear.weight.detach(),
            bias_init=None if linear.bias is None else linear.bias.detach(),
            **opts,
        )

    # --- views --------------------------------------------------------------------------------
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (U, Vh): the active slices and the rest assembled (a detached copy)."""
        with torch.no_grad():
            return assemble(self.U_rest, self.Vh_rest, self.rest_idx, self.U_act, self.Vh_act, self.active_idx)

    @property
    def U_all(self) -> torch.Tensor:
        """U (out, k) assembled (a detached copy; the layer stores only U_act and U_rest)."""
        return self.factors()[0]

    @property
    def Vh_all(self) -> torch.Tensor:
        """Vh (k, in) assembled (a detached copy)."""
        return self.factors()[1]

    @property
    def weight(self) -> torch.Tensor:
        """The materialised W = U diag(sigma) Vh (out, in), detached."""
        with torch.no_grad():
            return _weight(self.sigma, self.U_act, self.Vh_act, self.U_rest, self.Vh_rest, self.active_idx, self.rest_idx)

    def _factored(self, n_tokens: int) -> bool:
        if self.forward_mode != "auto":
            return self.forward_mode == "factored"
        m, n, k = self.out_features, self.in_features, self.k
        return n_tokens * k * (m + n) < m * k * n + n_tokens * m * n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tokens = x.numel() // max(1, x.shape[-1])
        return spectral_linear(
            x, self.sigma, self.U_act, self.Vh_act, self.U_rest, self.Vh_rest, self.active_idx, self.rest_idx,
            self.bias, factored=self._factored(n_tokens), enhanced=self.enhanced_grad,
        )

    # --- state changes (all under no_grad, in place: the Parameter objects never change) ---------
    @torch.no_grad()
    def _split_(self, U: torch.Tensor, Vh: torch.Tensor, idx: torch.Tensor) -> None:
        """Store full factors as active slices ``idx`` (into the same Parameters) and the rest (buffers)."""
        idx = torch.sort(idx.to(self.active_idx.device, torch.long)).values
        keep = torch.ones(self.k, dtype=torch.bool, device=idx.device)
        keep[idx] = False
        rest = torch.nonzero(keep).flatten()
        self.active_idx.copy_(idx)
        self.rest_idx.copy_(rest)
        self.U_act.data.copy_(U[:, idx])
        self.Vh_act.data.copy_(Vh[idx])
        self.U_rest.copy_(U[:, rest])
        self.Vh_rest.copy_(Vh[rest])

    def commit_(self) -> None:
        """Nothing to write back: the active slices live only in ``U_act`` / ``Vh_act``."""

    @torch.no_grad()
    def activate_(self, idx: torch.Tensor) -> None:
        """Make ``idx`` the active set (copied into the same Parameters); the old active slices join the rest."""
        U, Vh = self.factors()
        self._split_(U, Vh, idx)

    @torch.no_grad()
    def clamp_normalize_(self, *, normalize: bool = True, absorb_norm: bool = False) -> None:
        """sigma <- max(sigma, 0); active u_i, v_i to unit norm (optionally absorbing the norms)."""
        if normalize:
            nu = self.U_act.norm(dim=0).clamp_min(1e-12)  # (r,)
            nv = self.Vh_act.norm(dim=1).clamp_min(1e-12)  # (r,)
            if absorb_norm:
                self.sigma[self.active_idx] *= nu * nv
            self.U_act.div_(nu)
            self.Vh_act.div_(nv[:, None])
        self.sigma.clamp_(min=0)

    @torch.no_grad()
    def resvd_(self) -> None:
        """Re-orthonormalise: [U, sigma, Vh] <- SVD(U diag(sigma) Vh); W is unchanged."""
        U0, Vh0 = self.factors()
        U, s, Vh = resvd(U0, self.sigma.data, Vh0)
        self.sigma.data.copy_(s)
        self._split_(U, Vh, self.active_idx.clone())

    @torch.no_grad()
    def prune_singular_(self, ratio: float) -> SpectralLinear:
        """Keep the ceil((1 - ratio) k) largest singular triplets (inference compression, App. G)."""
        if not 0.0 <= ratio <= 1.0:
            raise UserError(f"pruning ratio must be in [0, 1], got {ratio}")
        keep = math.ceil((1.0 - ratio) * self.k)
        order = torch.argsort(self.sigma.data, descending=True)
        self.sigma.data[order[keep:]] = 0
        return self

    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding W = U diag(sigma) Vh (same outputs)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.sigma.device, dtype=self.sigma.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Also load checkpoints of the earlier layout (full ``U_all`` / ``Vh_all`` stores; the same parameters)."""
        if prefix + "U_all" in state_dict and prefix + "U_rest" not in state_dict:
            U_all, Vh_all = state_dict.pop(prefix + "U_all"), state_dict.pop(prefix + "Vh_all")
            idx = state_dict[prefix + "active_idx"].long()
            keep = torch.ones(U_all.shape[1], dtype=torch.bool, device=idx.device)
            keep[idx] = False
            rest = torch.nonzero(keep).flatten()
            state_dict[prefix + "rest_idx"] = rest
            state_dict[prefix + "U_rest"] = U_all[:, rest].clone()
            state_dict[prefix + "Vh_rest"] = Vh_all[rest].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.bias is not None}, forward_mode={self.forward_mode}")


# ----------------------------------------------------------------------------------------------
# optimizer-state helpers (shared with ReLoRA)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def reset_state_(optimizer: torch.optim.Optimizer, params: Iterator[nn.Parameter] | list[nn.Parameter]) -> None:
    """Zero every optimizer-state entry (moments, step counters) of ``params`` in place."""
    for p in params:
        st = optimizer.state.get(p)
        if not st:
            continue
        for key, v in list(st.items()):
            if isinstance(v, torch.Tensor):
                v.zero_()
            elif isinstance(v, (int, float)):
                st[key] = type(v)(0)


class _LRScale:
    """Multiply every group's lr by a factor for the duration of one optimizer step."""

    def __init__(self) -> None:
        self._saved: list[float] | None = None

    def apply(self, optimizer: torch.optim.Optimizer, factor: float) -> None:
        self._saved = [g["lr"] for g in optimizer.param_groups]
        if factor != 1.0:
            for g in optimizer.param_groups:
                g["lr"] = g["lr"] * factor

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        if self._saved is not None:
            for g, lr in zip(optimizer.param_groups, self._saved):
                g["lr"] = lr
        self._saved = None


def spectral_layers(model: nn.Module) -> list[tuple[str, SpectralLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpectralLinear)]


class SSTController:
    """Drives SST's schedule through optimizer step hooks (the library never owns the loop).

    Attaching registers a pre-step hook (per-iteration LR warm-up) and a post-step hook (clamp and
    renormalise, then resample every ``T3`` steps and re-SVD every ``T2`` iterations). The first
    active set is drawn at construction.

    Args:
        model: contains the :class:`SpectralLinear` layers (any nesting; DDP-wrapped is fine).
        optimizer: the optimizer holding ``sigma``, ``U_act``, ``Vh_act`` (and anything else).
        T3: steps per iteration (resample period), >= 1. Paper: 200.
        T2: iterations per round (re-SVD period); default d/r with d the model dimension, or
            the largest layer's k / r when ``d`` is not given. ``0``/``None`` with
            ``resvd=False`` disables re-SVD.
        warmup_iter: per-iteration LR warm-up length in steps (0 disables). Paper: 20.
        sampling: one of ``SAMPLINGS``.
        seed: seeds the sampling generator; identical on every rank (never offset by rank).
        d: the model dimension used for T2 = d / r.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        T3: int = 200,
        T2: int | None = None,
        d: int | None = None,
        warmup_iter: int = 20,
        sampling: Sampling = "sigma",
        seed: int = 0,
        normalize_vectors: bool = True,
        absorb_norm: bool = False,
        reset_sigma_state_each_iteration: bool = False,
        reset_sigma_state_at_resvd: bool = True,
        resvd: bool = True,
    ) -> None:
        if int(T3) < 1:
            raise UserError(f"resample period T3 must be >= 1 step, got {T3}")
        if sampling not in SAMPLINGS:
            raise UserError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
        if warmup_iter < 0:
            raise UserError(f"warmup_iter must be >= 0, got {warmup_iter}")
        self.model, self.optimizer = model, optimizer
        self.layers = spectral_layers(model)
        if not self.layers:
            raise UserError("SSTController found no SpectralLinear layer; call spectral.convert(model, 'sst', rank) first")
        self.T3, self.warmup_iter, self.sampling = int(T3), int(warmup_iter), sampling
        r = min(m.rank for _, m in self.layers)
        if T2 is None:
            dd = d if d is not None else max(m.k for _, m in self.layers)
            T2 = max(1, dd // r)
        if int(T2) < 1 and resvd:
            raise UserError(f"re-SVD period T2 must be >= 1 iteration, got {T2}")
        self.T2 = int(T2)
        self.do_resvd = resvd
        self.normalize, self.absorb_norm = normalize_vectors, absorb_norm
        self.reset_sigma_iter, self.reset_sigma_resvd = reset_sigma_state_each_iteration, reset_sigma_state_at_resvd
        self.seed = seed
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = 0  # optimizer steps taken
        self.iteration = 0  # iterations started
        self.n_resvd = 0
        self._lr = _LRScale()
        self._handles: list[Any] = []
        self.resample()
        self.attach()

    # hooks ----------------------------------------------------------------------------------
    def attach(self) -> SSTController:
        if not self._handles:
            self._handles = [
                self.optimizer.register_step_pre_hook(lambda opt, a, k: self.before_step()),
                self.optimizer.register_step_post_hook(lambda opt, a, k: self.after_step()),
            ]
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def warmup_factor(self) -> float:
        if self.warmup_iter <= 0:
            return 1.0
        t_in = self.step % self.T3
        return min(1.0, (t_in + 1) / self.warmup_iter)

    def before_step(self) -> None:
        self._lr.apply(self.optimizer, self.warmup_factor())

    def after_step(self) -> None:
        self._lr.restore(self.optimizer)
        for _, m in self.layers:
            m.clamp_normalize_(normalize=self.normalize, absorb_norm=self.absorb_norm)
        self.step += 1
        if self.step % self.T3 == 0:
            if self.do_resvd and self.iteration % self.T2 == 0:
                self.end_of_round()
            self.resample()

    # schedule work --------------------------------------------------------------------------
    def _draw(self, m: SpectralLinear) -> torch.Tensor:
        idx = sample_indices(m.sigma, m.rank, sampling=self.sampling, generator=self.generator,
                             iteration=self.iteration)
        from ..engine import distributed as D

        if D.world_size() > 1:  # belt and braces: rank 0's draw everywhere
            import torch.distributed as dist

            idx = idx.to(m.active_idx.device)
            dist.broadcast(idx, src=0)
        return idx

    def resample(self) -> None:
        """Start an iteration: commit, draw a new S per layer, load slices, reset their state."""
        self.iteration += 1
        for _, m in self.layers:
            m.activate_(self._draw(m))
            reset_state_(self.optimizer, [m.U_act, m.Vh_act])
            if self.reset_sigma_iter:
                reset_state_(self.optimizer, [m.sigma])

    def end_of_round(self) -> None:
        """Re-SVD every layer (W unchanged, U and V orthonormal); reset sigma's state."""
        self.n_resvd += 1
        for _, m in self.layers:
            m.resvd_()
            if self.reset_sigma_resvd:
                reset_state_(self.optimizer, [m.sigma])

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "iteration": self.iteration, "n_resvd": self.n_resvd,
                "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step, self.iteration, self.n_resvd = sd["step"], sd["iteration"], sd["n_resvd"]
        self.generator.set_state(sd["generator"])


__all__ = [
    "SAMPLINGS",
    "SSTController",
    "SpectralLinear",
    "check_rank",
    "reset_state_",
    "resvd",
    "sample_indices",
    "sampling_probs",
    "spectral_layers",
    "spectral_linear",
]
