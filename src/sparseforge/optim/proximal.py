"""Proximal training: wrap any torch optimizer and apply prox operators after its step.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921 (its proximal-gradient training).

One step of proximal (stochastic) gradient descent for min_θ L(θ) + Σ_l λ_l R_l(θ_l):

    θ ← O.step(θ, ∇L)                       # base step (SGD, momentum, Adam, AdamW, ...)
    θ_l ← prox_{γ_l R_l}(θ_l),  γ_l = η_t · λ_l · ρ_t   # η_t: the param group's lr, ρ_t: λ schedule

Applying the prox after a momentum/Adam step is the usual heuristic (reconstructed default); with
Adam the prox step is γ = η_t λ_l, *not* preconditioned. After the prox, the first-moment buffers
(``momentum_buffer``, ``exp_avg``) of entries that are exactly zero are reset
(``reset_momentum_on_prune=True``, reconstructed default) so that momentum does not regrow
pruned groups. With every λ = 0 the wrapper is exactly the base optimizer, step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..prox.base import ProxOperator
from ..targeting import Targets, distinct_weights, resolve_targets

MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


class ProximalOptimizer(torch.optim.Optimizer):
    """``base_optimizer.step()`` followed by ``prox_(param, step=lr × ρ_t)`` for each mapped parameter.

    Shares ``param_groups`` and ``state`` with the base optimizer, so LR schedulers, gradient
    clipping and :mod:`sparseforge.masks` hooks see one optimizer.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` holding the parameters.
        prox: ``{param_name: ProxOperator}`` (with ``model=``, or a :class:`ProxMap` from
            :func:`build_prox_map`, which knows its model), or ``{parameter: ProxOperator}``.
            Parameters mapped to the *same* operator object with ``op.joint`` (``grouping="layer"``)
            are proxed together.
        weight_schedule: ρ(t) in [0, 1] as a function of the prox step count t (0-based);
            default constant 1.
        reset_momentum_on_prune: zero the first-moment state of entries that are zero after the prox.
        model: the model whose ``named_parameters()`` the names of ``prox`` refer to.

    With momentum μ the base SGD step moves a parameter by about lr/(1 − μ) per unit gradient in steady
    state, while the prox step here is γ = lr·λ·ρ_t: the regularizer is effectively λ(1 − μ) relative to
    the loss. Pass ``prox_step="momentum"`` to use the consistent step γ = lr·λ·ρ_t/(1 − μ) (μ from each
    parameter group's ``momentum``, 0 for Adam-type optimizers).
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        prox: Mapping[torch.Tensor, ProxOperator] | Mapping[str, ProxOperator],
        *,
        weight_schedule: Callable[[int], float] | None = None,
        reset_momentum_on_prune: bool = True,
        model: nn.Module | None = None,
        prox_step: str = "lr",
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise UserError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        self.base = base_optimizer
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self._share()
        if prox_step not in ("lr", "momentum"):
            raise UserError(f"prox_step must be 'lr' or 'momentum', got {prox_step!r}")
        self.prox_step = prox_step
        known = {id(p) for g in self.param_groups for p in g["params"]}
        self.prox: dict[torch.Tensor, ProxOperator] = {}
        for p, op in _by_parameter(prox, model).items():
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
        lr_of = {id(p): float(g["lr"]) / (1.0 - float(g.get("momentum", 0.0) or 0.0) if self.prox_step == "momentum" else 1.0)
                 for g in self.param_groups for p in g["params"]}
        for op, params in _by_operator(self.prox).items():
            lrs = [lr_of[id(p)] for p in params]
            if op.joint:  # one problem over all its tensors: one step size (gamma = lr * lambda * rho)
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


def _by_parameter(prox: Mapping[Any, ProxOperator], model: nn.Module | None) -> dict[torch.Tensor, ProxOperator]:
    """``{parameter: op}`` from a map keyed by parameters or by parameter names (resolved on ``model``)."""
    items = list(dict(prox).items())
    if not items or not isinstance(items[0][0], str):
        return dict(items)
    model = model if model is not None else getattr(prox, "model", None)
    if model is None:
        raise UserError("a prox map keyed by parameter names needs model=... (or use build_prox_map's ProxMap)")
    named = dict(model.named_parameters())
    out = {}
    for name, op in items:
        if name not in named:
            raise UserError(f"prox map names {name!r}, which is not a parameter of {type(model).__name__}")
        out[named[name]] = op
    return out


class ProxMap(dict):
    """``{param_name: ProxOperator}`` that remembers its model (what :func:`build_prox_map` returns).

    Keys are ``named_parameters()`` names, as in every method family; :meth:`params` gives the tensors.
    """

    def __init__(self, model: nn.Module, items: Mapping[str, ProxOperator] | None = None) -> None:
        super().__init__(items or {})
        self.model = model

    def params(self) -> dict[torch.Tensor, ProxOperator]:
        """``{parameter: op}`` in map order."""
        return _by_parameter(self, self.model)

    def layer_names(self) -> list[str]:
        """Module name of every regularized weight, in map order."""
        return [n.rpartition(".")[0] for n in self]

    def masks(self) -> dict[str, torch.Tensor]:
        """``{param_name: bool}`` of the current non-zeros of every regularized weight and its coupled tensors
        (bias, BN γ/β), so a masked fine-tune keeps pruned groups, and what couples to them, at zero."""
        name_of = {id(p): n for n, p in self.model.named_parameters()}
        out: dict[str, torch.Tensor] = {}
        for p, op in self.params().items():
            for t in (p, *getattr(op, "coupled", ())):
                if id(t) in name_of:
                    out[name_of[id(t)]] = t.detach() != 0
        return out


# ----------------------------------------------------------------------------- model helpers
PROX_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def coupled_tensors(model: nn.Module, name: str) -> list[torch.Tensor]:
    """Bias of layer ``name`` and the γ, β of a BatchNorm directly following it.

    The paper's filter groups include everything a removed filter takes with it: the bias entry and,
    for a Conv-BN pair, the BN scale and shift of that channel. "Directly following" is read from
    module registration order: the next leaf module after the layer is a BatchNorm with as many
    features as the layer has outputs.
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
    targets: Targets = None,
    k: int | float = 0.5,
    grouping: str = "filter",
    per_layer_weight: Mapping[str, float] | None = None,
    per_layer_k: Mapping[str, int | float] | None = None,
    include_coupled: bool = True,
    kernel: str | None = None,
    example_inputs: Any = None,
    **op_kwargs: Any,
) -> ProxMap:
    """``{weight name: prox operator}`` for the target layers of ``model`` (a :class:`ProxMap`).

    Args:
        method: a registered prox operator (``"wgsef"`` = :class:`GroupEnvelope`, ``"group_lasso"``,
            ``"l1"``, or a plugin's), looked up in the ``prox`` family and built per layer with its
            :meth:`~sparseforge.prox.ProxOperator.from_layer`.
        weight: λ for every layer, unless ``per_layer_weight[layer name]`` overrides it.
        targets: module names or patterns (:func:`sparseforge.select`); default every Conv2d and Linear,
            the classifier included.
        k: groups kept per layer, a count or a fraction (k-level operators); ``per_layer_k`` overrides.
        grouping: one name for all layers (``filter`` = ``row`` on Linear). ``"layer"`` makes one joint
            WGSEF operator over all target layers (k counts layers).
        include_coupled: put the bias and a following BN's γ/β in filter/row groups.
        kernel: ``"select"`` / ``"sort"`` scalar kernel of :class:`GroupEnvelope`.
        example_inputs: inputs of one forward pass (for ``group_weights="flops"``).
        op_kwargs: more operator options (e.g. ``exact=False``); each operator takes the ones it defines.
            ``group_weights="sqrt_size"`` / ``"flops"`` weigh each layer by the cost of one of its groups
            (√(group size), or the multiply-adds one group costs), relative to the costliest layer: the
            multiplier w of every group of layer l is that ratio, i.e. λ_l = λ·w_l. (Inside one tensor all
            groups of a filter or channel grouping have the same size, so a per-group √|g| would be a
            constant; across layers it is what makes the weights mean something.)
    """
    from ..groups import n_groups
    from ..registry import METHODS

    cls = METHODS.get(method, family="prox")
    names = distinct_weights(model, resolve_targets(model, targets, types=PROX_LAYER_TYPES,
                                                    family=f"prox operator {method!r}"))
    layers = [model.get_submodule(n) for n in names]
    per_layer_weight = dict(per_layer_weight or {})
    per_layer_k = dict(per_layer_k or {})
    if kernel is not None:
        op_kwargs["method"] = kernel
    if op_kwargs.get("group_weights") in LAYER_COSTS and grouping != "layer":
        cost = layer_costs(model, names, grouping, op_kwargs.pop("group_weights"), example_inputs=example_inputs)
        top = max(cost.values())
        for n in names:
            per_layer_weight.setdefault(n, float(weight) * cost[n] / top)
    for m in layers:
        n_groups(m.weight.shape, grouping)  # the grouping must fit every layer: one-line error otherwise
    coupled = [coupled_tensors(model, n) if include_coupled and grouping in ("filter", "row") else [] for n in names]
    out = ProxMap(model)
    if grouping == "layer" or (not per_layer_weight and not per_layer_k):
        ops = cls.from_layers(layers, weight=weight, grouping=grouping, coupled=coupled, k=k, **op_kwargs)
    else:
        ops = [cls.from_layer(m, weight=float(per_layer_weight.get(n, weight)), grouping=grouping, coupled=c,
                              k=per_layer_k.get(n, k), **op_kwargs) for n, m, c in zip(names, layers, coupled)]
    for n, op in zip(names, ops):
        out[f"{n}.weight" if n else "weight"] = op
    return out


LAYER_COSTS = ("sqrt_size", "flops")


def layer_costs(model: nn.Module, names: Sequence[str], grouping: str, kind: str, *,
                example_inputs: Any = None) -> dict[str, float]:
    """Cost of one group of each layer: √(group size), or multiply-adds per group on ``example_inputs``.

    FLOPs per group = the layer's multiply-adds (per sample) / its number of groups: for a conv filter,
    in·kh·kw/groups · H_out·W_out; for a Linear row, in_features (times the tokens per sample).
    """
    from ..groups import group_size
    from ..groups import n_groups as count_groups
    from ..metrics import _Eval
    from ..targeting import _call

    mods = {n: model.get_submodule(n) for n in names}
    if kind == "sqrt_size":
        return {n: float(group_size(m.weight.shape, grouping)) ** 0.5 for n, m in mods.items()}
    if kind != "flops":
        raise UserError(f"layer cost must be one of {LAYER_COSTS}, got {kind!r}")
    if example_inputs is None:
        raise UserError("group_weights='flops' needs example_inputs=... (one forward pass measures each layer)")
    outs: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o[:1].numel()))  # one sample
             for n, m in mods.items()]
    try:
        with _Eval(model):  # eval mode: no dropout, BN statistics untouched
            _call(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    cost = {}
    for n, m in mods.items():
        w = m.weight
        fan_in = w[0].numel()  # in·kh·kw / groups, or in_features
        positions = outs[n] // w.shape[0]  # output positions per sample (H·W, or tokens)
        cost[n] = float(fan_in * positions * w.shape[0]) / count_groups(w.shape, grouping)
    return cost


def _params_of(prox: Mapping[Any, ProxOperator], model: nn.Module | None = None) -> dict[torch.Tensor, ProxOperator]:
    return _by_parameter(prox, model)


@torch.no_grad()
def project_top_k_(prox: Mapping[Any, ProxOperator], *, model: nn.Module | None = None) -> None:
    """Final k-projection: every k-level operator keeps its top-k groups by w⊙z (exactly k per layer)."""
    for op, params in _by_operator(_params_of(prox, model)).items():
        op.project_tensors_(params)


@torch.no_grad()
def project_to_counts_(prox: Mapping[Any, ProxOperator], counts: Sequence[int], *, model: nn.Module | None = None) -> None:
    """Keep the ``counts[i]`` largest (lifted) groups of the i-th regularized tensor; zero the rest.

    The projection that gives a baseline regularizer (group lasso) exactly the per-layer group counts of
    another run, by the baseline's *own* group norms (ties: lowest index). With ``grouping="layer"`` the
    first count is the number of whole tensors kept.
    """
    from ..prox.base import lifted_sq_norms, scale_groups_
    from ..prox.envelope import top_k_groups

    pm = _params_of(prox, model)
    params = list(pm)
    if params and getattr(pm[params[0]], "grouping", None) == "layer":
        norms = torch.stack([p.detach().double().norm() for p in params])
        keep = top_k_groups(norms, max(1, counts[0]))
        for p, kp in zip(params, keep.tolist()):
            if not kp:
                p.zero_()
        return
    if len(counts) != len(params):
        raise UserError(f"project_to_counts_ needs one count per regularized tensor ({len(params)}), got {len(counts)}")
    for p, c in zip(params, counts):
        op = pm[p]
        coupled = getattr(op, "coupled", ())
        sq = lifted_sq_norms(p, getattr(op, "grouping", "element"), coupled).double()
        keep = top_k_groups(sq, max(1, min(int(c), sq.numel())))
        scale_groups_(p, keep.double(), getattr(op, "grouping", "element"), coupled)


def nonzero_groups(prox: Mapping[Any, ProxOperator], *, model: nn.Module | None = None) -> list[tuple[int, int, int | None]]:
    """Per regularized tensor: (non-zero groups, groups, k or None), in map order."""
    from ..groups import n_groups
    from ..prox.base import lifted_sq_norms

    out = []
    for op, params in _by_operator(_params_of(prox, model)).items():
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


def weight_decay_groups(model: nn.Module, prox: Mapping[Any, ProxOperator], weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``weight_decay`` on every parameter the prox map does not regularize, 0 on
    the regularized weights and their coupled tensors (the regularizer replaces decay there)."""
    pm = _params_of(prox, model)
    regularized = {id(p) for p in pm}
    for op in pm.values():
        regularized |= {id(c) for c in getattr(op, "coupled", ())}
    decay = [p for p in model.parameters() if id(p) not in regularized]
    nodecay = [p for p in model.parameters() if id(p) in regularized]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": nodecay, "weight_decay": 0.0}]


def layer_group_stats(prox: ProxMap) -> list[dict[str, Any]]:
    """One row per regularized layer: groups, k, non-zero groups and group sparsity (one row for a joint map)."""
    counts = nonzero_groups(prox)
    names = prox.layer_names()
    if len(counts) != len(names):  # joint ("layer") operator
        nz, m, k = counts[0]
        return [{"layer": "all (layer grouping)", "groups": m, "k": k, "nonzero_groups": nz, "group_sparsity": 1 - nz / m}]
    return [{"layer": n, "groups": m, "k": k, "nonzero_groups": nz, "group_sparsity": 1 - nz / m}
            for n, (nz, m, k) in zip(names, counts)]


def overall_group_sparsity(rows: Sequence[Mapping[str, Any]]) -> float:
    """Fraction of all groups that are zero, over :func:`layer_group_stats` rows."""
    total = sum(r["groups"] for r in rows)
    return 1.0 - sum(r["nonzero_groups"] for r in rows) / max(total, 1)
