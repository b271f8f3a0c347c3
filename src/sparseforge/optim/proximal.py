"""Proximal training: wrap any torch optimizer and apply prox operators after its step.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921 (spec ``shared/methods/wgsef.md`` §2.7).

One step of proximal (stochastic) gradient descent for min_θ L(θ) + Σ_l λ_l R_l(θ_l):

    θ ← O.step(θ, ∇L)                       # base step (SGD, momentum, Adam, AdamW, ...)
    θ_l ← prox_{γ_l R_l}(θ_l),  γ_l = η_t · λ_l · ρ_t   # η_t: the param group's lr, ρ_t: λ schedule

Applying the prox after a momentum/Adam step is the usual heuristic (reconstructed default,
spec §2.7); with Adam the prox step is γ = η_t λ_l, *not* preconditioned (option
``prox_with_adam`` of the spec is this behaviour). After the prox, the first-moment buffers
(``momentum_buffer``, ``exp_avg``) of entries that are exactly zero are reset
(``reset_momentum_on_prune=True``, reconstructed default) so that momentum does not regrow
pruned groups. With every λ = 0 the wrapper is exactly the base optimizer, step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..prox.base import ProxOperator

MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


class ProximalOptimizer(torch.optim.Optimizer):
    """``base_optimizer.step()`` followed by ``prox_(param, step=lr × ρ_t)`` for each mapped parameter.

    Shares ``param_groups`` and ``state`` with the base optimizer, so LR schedulers, gradient
    clipping and :mod:`sparseforge.masks` hooks see one optimizer.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` holding the parameters.
        prox: ``{parameter: ProxOperator}``. Parameters mapped to the *same* operator object
            with ``op.joint`` (``grouping="layer"``) are proxed together.
        weight_schedule: ρ(t) in [0, 1] as a function of the prox step count t (0-based);
            default constant 1.
        reset_momentum_on_prune: zero the first-moment state of entries that are zero after the prox.
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        prox: Mapping[torch.Tensor, ProxOperator],
        *,
        weight_schedule: Callable[[int], float] | None = None,
        reset_momentum_on_prune: bool = True,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise UserError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        self.base = base_optimizer
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self._share()
        known = {id(p) for g in self.param_groups for p in g["params"]}
        self.prox: dict[torch.Tensor, ProxOperator] = {}
        for p, op in dict(prox).items():
            if not isinstance(op, ProxOperator):
                raise UserError(f"prox values must be ProxOperator instances, got {type(op).__name__}")
            if id(p) not in known:
                raise UserError(f"a regularized parameter of shape {tuple(p.shape)} is not in the base optimizer")
            self.prox[p] = op
        self.weight_schedule = weight_schedule
        self.reset_momentum_on_prune = bool(reset_momentum_on_prune)
        self.prox_steps = 0

    def _share(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    # -- the step ---------------------------------------------------------------------------
    def rho(self) -> float:
        """Current λ-schedule factor ρ_t."""
        return 1.0 if self.weight_schedule is None else float(self.weight_schedule(self.prox_steps))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is not None:
            with torch.enable_grad():
                loss = self.base.step(closure)
        else:
            loss = self.base.step()
        self.prox_step_()
        return loss

    @torch.no_grad()
    def prox_step_(self) -> None:
        """Apply every prox once with the current lr and ρ_t (called by :meth:`step`)."""
        rho = self.rho()
        self.prox_steps += 1
        if rho == 0.0 or not self.prox:
            return
        lr_of = {id(p): float(g["lr"]) for g in self.param_groups for p in g["params"]}
        for op, params in _by_operator(self.prox).items():
            lrs = [lr_of[id(p)] for p in params]
            if op.joint:  # one problem over all its tensors: one step size (spec §2.7: gamma = lr * lambda * rho)
                if max(lrs) != min(lrs):
                    raise UserError("a joint prox operator (grouping='layer') spans parameter groups with different lrs")
                if lrs[0] * rho * op.weight != 0.0:
                    op.prox_tensors_(params, lrs[0] * rho)
            else:  # every tensor with its own group's lr
                for p, lr in zip(params, lrs):
                    if lr * rho * op.weight != 0.0:  # weight 0: exactly the base optimizer
                        op.prox_(p, lr * rho)
            if self.reset_momentum_on_prune:
                for p in list(params) + list(getattr(op, "coupled", ())):
                    self._reset_state(p)

    def _reset_state(self, p: torch.Tensor) -> None:
        st = self.state.get(p)
        if not st:
            return
        zero = p == 0
        for key in MOMENTUM_KEYS:
            buf = st.get(key)
            if isinstance(buf, torch.Tensor) and buf.shape == p.shape:
                buf.masked_fill_(zero, 0.0)

    # -- delegation -------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "base") and self.param_groups is self.base.param_groups:
            self.base.add_param_group(param_group)
        else:  # during Optimizer.__init__
            super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"base": self.base.state_dict(), "prox_steps": self.prox_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if "base" in state_dict:
            self.base.load_state_dict(state_dict["base"])
            self.prox_steps = int(state_dict.get("prox_steps", 0))
        else:
            self.base.load_state_dict(state_dict)
        self._share()

    def penalty(self) -> torch.Tensor:
        """Σ_l λ_l R_l(θ_l) over the regularized parameters (for logging)."""
        total = torch.zeros(())
        for op, params in _by_operator(self.prox).items():
            total = total + (op.penalty_tensors(params) if (op.joint or len(params) > 1) else op.penalty(params[0]))
        return total

    def __repr__(self) -> str:
        return f"ProximalOptimizer({type(self.base).__name__}, {len(self.prox)} regularized tensors)"


def _by_operator(prox: Mapping[torch.Tensor, ProxOperator]) -> dict[ProxOperator, list[torch.Tensor]]:
    out: dict[int, tuple[ProxOperator, list[torch.Tensor]]] = {}
    for p, op in prox.items():
        out.setdefault(id(op), (op, []))[1].append(p)
    return {op: ps for op, ps in out.values()}


# ----------------------------------------------------------------------------- model helpers
def regularized_layers(
    model: nn.Module, *, skip_last: bool = True, exclude: Iterable[str] = (), include_depthwise: bool = False
) -> list[tuple[str, nn.Module]]:
    """Conv2d / Linear layers that WGSEF regularizes (spec §2.1, reconstructed default).

    Every Conv2d and Linear except the final classifier (the last such layer, ``skip_last``),
    those named in ``exclude``, and grouped/depthwise convs (unless ``include_depthwise``).
    """
    exclude = set(exclude)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if skip_last and layers:
        layers = layers[:-1]
    out = []
    for n, m in layers:
        if n in exclude:
            continue
        if isinstance(m, nn.Conv2d) and m.groups > 1 and not include_depthwise:
            continue
        out.append((n, m))
    unknown = exclude - {n for n, _ in model.named_modules()}
    if unknown:
        raise UserError(f"exclude names unknown modules: {sorted(unknown)}")
    return out


def coupled_tensors(model: nn.Module, name: str) -> list[torch.Tensor]:
    """Bias of layer ``name`` and the γ, β of a BatchNorm directly following it (spec §2.1).

    "Directly following" is read from module registration order: the next leaf module after the
    layer is a BatchNorm with as many features as the layer has outputs.
    """
    leaves = [(n, m) for n, m in model.named_modules() if len(list(m.children())) == 0]
    idx = [n for n, _ in leaves].index(name)
    layer = leaves[idx][1]
    out: list[torch.Tensor] = []
    if getattr(layer, "bias", None) is not None:
        out.append(layer.bias)
    n_out = layer.weight.shape[0]
    if idx + 1 < len(leaves):
        nxt = leaves[idx + 1][1]
        if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt.num_features == n_out and nxt.affine:
            out.extend([nxt.weight, nxt.bias])
    return out


def build_prox_map(
    model: nn.Module,
    method: str = "wgsef",
    *,
    weight: float,
    k: int | float = 0.5,
    grouping: str = "filter",
    per_layer_weight: Mapping[str, float] | None = None,
    per_layer_k: Mapping[str, int | float] | None = None,
    exclude: Sequence[str] = (),
    skip_last: bool = True,
    include_coupled: bool = True,
    kernel: str | None = None,
    **op_kwargs: Any,
) -> dict[torch.Tensor, ProxOperator]:
    """``{weight parameter: prox operator}`` for the regularized layers of ``model``.

    Args:
        method: ``"wgsef"`` (:class:`GroupEnvelope`), ``"group_lasso"`` or ``"l1"`` (or any
            registered prox name constructible as ``cls(grouping=..., weight=..., ...)``).
        weight: λ for every layer, unless ``per_layer_weight[name]`` overrides it.
        k: groups kept per layer, a count or a fraction (WGSEF only); ``per_layer_k`` overrides.
        grouping: one name for all layers (``filter`` = ``row`` on Linear). ``"layer"`` makes
            one joint operator over all layers (k counts layers).
        include_coupled: put the bias and a following BN's γ/β in filter/row groups.
        kernel: ``"select"`` / ``"sort"`` scalar kernel of :class:`GroupEnvelope`.
        op_kwargs: passed to the operator (e.g. ``exact=False``, ``group_weights=...``).
    """
    from ..prox import L1, GroupEnvelope, GroupLasso
    from ..registry import METHODS

    layers = regularized_layers(model, skip_last=skip_last, exclude=exclude)
    if not layers:
        raise UserError("the model has no Conv2d/Linear layer to regularize (besides the classifier)")
    per_layer_weight = dict(per_layer_weight or {})
    per_layer_k = dict(per_layer_k or {})
    if kernel is not None and method == "wgsef":
        op_kwargs["method"] = kernel
    if method == "wgsef" and grouping == "layer":
        op = GroupEnvelope(k, "layer", weight, **op_kwargs)
        return {m.weight: op for _, m in layers}
    out: dict[torch.Tensor, ProxOperator] = {}
    for name, m in layers:
        lam = float(per_layer_weight.get(name, weight))
        coupled = coupled_tensors(model, name) if include_coupled and grouping in ("filter", "row") else []
        if method == "wgsef":
            op: ProxOperator = GroupEnvelope(per_layer_k.get(name, k), grouping, lam, coupled=coupled, **op_kwargs)
        elif method == "group_lasso":
            op = GroupLasso(grouping, lam, coupled=coupled, **op_kwargs)
        elif method == "l1":
            op = L1(lam)
        else:
            op = METHODS.get(method)(grouping=grouping, weight=lam, **op_kwargs)
        from ..groups import n_groups

        n_groups(m.weight.shape, grouping)  # grouping must fit: one-line error otherwise
        out[m.weight] = op
    return out


@torch.no_grad()
def project_top_k_(prox: Mapping[torch.Tensor, ProxOperator]) -> None:
    """Final k-projection (spec §2.7): every k-level operator keeps its top-k groups by w⊙z."""
    for op, params in _by_operator(prox).items():
        op.project_tensors_(params)


def nonzero_groups(prox: Mapping[torch.Tensor, ProxOperator]) -> list[tuple[int, int, int | None]]:
    """Per regularized tensor: (non-zero groups, groups, k or None), in map order."""
    from ..groups import n_groups
    from ..prox.base import lifted_sq_norms

    out = []
    for op, params in _by_operator(prox).items():
        if getattr(op, "joint", False):
            nz = sum(int(bool((p != 0).any())) for p in params)
            k = op.k if isinstance(op.k, int) else max(1, round(op.k * len(params)))  # type: ignore[attr-defined]
            out.append((nz, len(params), k))
            continue
        for p in params:
            grouping = getattr(op, "grouping", "element")
            sq = lifted_sq_norms(p, grouping, getattr(op, "coupled", ()))
            k = op.k_for(p) if hasattr(op, "k_for") else None
            out.append((int((sq > 0).sum()), n_groups(p.shape, grouping), k))
    return out
