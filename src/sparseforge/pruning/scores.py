"""Pruning scores: magnitude, random, SNIP, GraSP and SynFlow.

Papers:
- Magnitude / lottery tickets: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse,
  Trainable Neural Networks" (arXiv 1803.03635); used on grokking by Minegishi, Iwasawa & Matsuo,
  "Grokking Tickets: Lottery Tickets Accelerate Grokking" (arXiv 2310.19470).
- SNIP: Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"
  (arXiv 1810.02340).
- GraSP: Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow"
  (arXiv 2002.07376).
- SynFlow: Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
  iteratively conserving synaptic flow" (arXiv 2006.05467).

Equations (``theta`` the scored weights, ``L`` the loss on one batch):

- magnitude:  S = |theta|
- random:     S ~ U(0, 1) i.i.d. (seeded)
- SNIP:       S_j = |g_j theta_j| / sum_i |g_i theta_i|,  g = dL/dtheta
- GraSP:      g = dL_T/dtheta with L_T the loss of logits / T (T = 200), Hg by double back-prop
              (the gradient of g_detached . g), and the paper's score S_GraSP = -theta * Hg, pruning
              the weights with the LARGEST S_GraSP.
- SynFlow:    with every parameter replaced by its absolute value and an all-ones input,
              R = 1^T f(1; |theta|) and S = (dR/d|theta|) * |theta|, in float64; applied
              iteratively (``rounds`` = 100, exponential schedule) by :func:`sparseforge.pruning.prune`.

**Convention.** Every scorer returns an *importance*: higher means kept. For GraSP this is
``theta * Hg = -S_GraSP`` (so "keep the largest importance" = "remove the largest S_GraSP", the
paper's rule). SNIP and GraSP are normalised (by ``sum |g theta|`` and ``|sum S| + 1e-10``); this
does not change any ranking.

**The scorer family.** A scorer is registered with ``register_method(name, family="scorer")``: either a
:class:`Scorer` record (its function, an options dataclass, the default number of prune rounds, whether it
needs a batch) or just a plain function ``fn(model, params, *, batch=None, **options) -> {param_name: score}``
(``params``: ``{name: Parameter}``), which the family wraps in a :class:`Scorer`. The public entry point is
:func:`scores`; pruning with a scorer's iterative schedule is :func:`sparseforge.pruning.prune`. Which weights
are scored is said with ``targets=`` (module names or patterns, :func:`sparseforge.select`); the default is
every weight matrix and kernel (parameters with >= 2 dimensions) of the model, embeddings and classifier included.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..registry import METHODS, register_family, register_method
from ..targeting import Targets, resolve_targets, target_parameters

__all__ = [
    "GraspOptions",
    "RandomOptions",
    "Scorer",
    "SynflowOptions",
    "get_scorer",
    "grasp",
    "hessian_gradient_product",
    "magnitude",
    "prunable_params",
    "random_scores",
    "scores",
    "snip",
    "synflow",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _default_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in float64; (B, T, V) sequence logits with (B, T) targets are flattened."""
    if logits.dim() == 3 and logits.shape[1] == 1 and target.dim() == 1:  # (b, 1, C) token-model logits
        logits = logits[:, 0]
    if logits.dim() == 3 and target.dim() == 2:
        logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    return F.cross_entropy(logits.double(), target)


def prunable_params(model: nn.Module, targets: Targets = None, *, min_dim: int = 2) -> dict[str, nn.Parameter]:
    """The weights to score and prune: ``{param_name: parameter}``.

    Args:
        model: the network.
        targets: module names or fnmatch patterns (:func:`sparseforge.select`); None = every module. Their own
            parameters with at least ``min_dim`` dimensions are the weights (weight matrices and kernels, no
            biases); a model holding raw parameters on its root module has the module name ``""``.
        min_dim: smallest number of dimensions of a scored parameter.

    Raises:
        UserError: a target matches nothing, or the targets hold no such parameter.
    """
    out = target_parameters(model, resolve_targets(model, targets, family="pruning"), min_dim=min_dim)
    if not out:
        raise UserError(f"the targets {targets!r} hold no parameter with >= {min_dim} dimensions to prune")
    return out


def _names(model: nn.Module, targets: Targets, params: dict[str, nn.Parameter] | None) -> dict[str, nn.Parameter]:
    if params is not None:
        if not isinstance(params, dict):
            raise UserError("params must be a {name: Parameter} dict; say which layers with targets=[module names]")
        return params
    return prunable_params(model, targets)


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    if batch is None:
        raise UserError("this scorer needs a batch: pass batch=(x, y)")
    x, y = batch
    return x, y


def _logits(model: nn.Module, x: Any) -> torch.Tensor:
    """The model's logits for input ``x`` (a tensor, or a dict of keyword inputs); Hugging Face outputs' ``.logits``."""
    out = model(**x) if isinstance(x, dict) else model(x)
    out = getattr(out, "logits", out)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 3 and out.shape[1] == 1:
        out = out[:, 0]
    return out


# ---------------------------------------------------------------------------------------------
# scorers: pure (model, params, ...) -> {name: score}
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def magnitude(model: nn.Module, params: dict[str, nn.Parameter], **_: Any) -> dict[str, torch.Tensor]:
    """S = |theta| (Han et al. 2015; lottery tickets)."""
    return {n: p.detach().abs().clone() for n, p in params.items()}


def random_scores(model: nn.Module, params: dict[str, nn.Parameter], *, seed: int = 0,
                  generator: torch.Generator | None = None, **_: Any) -> dict[str, torch.Tensor]:
    """S ~ U(0, 1) i.i.d.; reproducible for a fixed ``seed`` (or ``generator``)."""
    g = generator or torch.Generator().manual_seed(int(seed))
    return {n: torch.rand(p.shape, generator=g, dtype=torch.float64).to(p.device) for n, p in params.items()}


def snip(model: nn.Module, params: dict[str, nn.Parameter], *, batch: Any = None, loss_fn: LossFn | None = None,
         normalize: bool = True, **_: Any) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity: S = |g * theta| / sum |g * theta| with g = dL/dtheta on ``batch``."""
    x, y = _split(batch)
    loss_fn = loss_fn or _default_loss
    names = list(params)
    loss = loss_fn(_logits(model, x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    out = {}
    for n, g in zip(names, grads):
        p = params[n].detach()
        out[n] = (torch.zeros_like(p) if g is None else (g.detach() * p).abs()).double()
    if normalize:
        total = sum(s.sum() for s in out.values())
        out = {n: s / (total + 1e-300) for n, s in out.items()}  # tiny constant: an all-zero gradient stays finite
    return out


def hessian_gradient_product(model: nn.Module, params: dict[str, nn.Parameter], *, batch: Any,
                             loss_fn: LossFn | None = None, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """H g for L_T = loss(logits / T): the gradient of (stopgrad(g) . g) w.r.t. theta (double back-prop)."""
    x, y = _split(batch)
    loss_fn = loss_fn or _default_loss
    names = list(params)
    plist = [params[n] for n in names]
    loss = loss_fn(_logits(model, x) / temperature, y)
    g = torch.autograd.grad(loss, plist, create_graph=True, allow_unused=True)
    pairs = [(gi, p) for gi, p in zip(g, plist) if gi is not None]
    z = sum((gi * gi.detach()).sum() for gi, _ in pairs)
    hg = torch.autograd.grad(z, plist, allow_unused=True)
    return {n: (torch.zeros_like(p) if h is None else h.detach()) for n, p, h in zip(names, plist, hg)}


def grasp(model: nn.Module, params: dict[str, nn.Parameter], *, batch: Any = None, loss_fn: LossFn | None = None,
          temperature: float = 200.0, normalize: bool = True, **_: Any) -> dict[str, torch.Tensor]:
    """GraSP importance theta * Hg (= -S_GraSP: keeping the largest removes the largest S_GraSP, the paper's rule).

    Keeping the largest importance removes the weights whose removal most reduces gradient flow.
    """
    hg = hessian_gradient_product(model, params, batch=batch, loss_fn=loss_fn, temperature=temperature)
    out = {n: (params[n].detach() * hg[n]).double() for n in params}
    if normalize:
        total = sum(s.sum() for s in out.values())
        out = {n: s / (total.abs() + 1e-10) for n, s in out.items()}
    return out


def _synflow_input(model: nn.Module, batch: Any, input_shape: tuple[int, ...] | None) -> tuple[Callable, torch.Tensor]:
    """The all-ones input of SynFlow and the forward to feed it to (float64)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    vocab = getattr(model, "vocab_size", None)
    if hasattr(model, "forward_onehot") and vocab is not None:
        # token model: the embedding applied to an all-ones vocabulary vector at each position (reconstructed default)
        T = x.shape[1] if x is not None else (input_shape or (2,))[0]
        return model.forward_onehot, torch.ones(1, T, int(vocab), dtype=torch.float64)
    if x is not None:
        if not torch.is_floating_point(x):
            raise UserError("SynFlow needs a float input or a model with forward_onehot() for token inputs")
        return model, torch.ones((1, *x.shape[1:]), dtype=torch.float64)
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise UserError("SynFlow needs the input shape: pass batch=(x, y) or input_shape=(...)")
    return model, torch.ones((1, *shape), dtype=torch.float64)


def synflow(model: nn.Module, params: dict[str, nn.Parameter], *, batch: Any = None,
            input_shape: tuple[int, ...] | None = None, input: str = "ones", **_: Any) -> dict[str, torch.Tensor]:
    """One round of SynFlow: S = (dR/d|theta|) * |theta|, R = sum f(1; |theta|), in float64.

    Data-free by default: ``batch`` (if given) only supplies the input shape. ``input="batch"`` scores on the
    real inputs of ``batch`` instead of the all-ones one (what the grokking-tickets repository runs, one round).
    The scores are computed on a float64 copy whose every parameter (biases and BatchNorm affine included) is
    replaced by its absolute value, in eval mode (BatchNorm uses running statistics). The model is not
    modified. Pruned (zeroed) weights score 0, so masks applied to the model propagate to the scores.
    """
    if input not in ("ones", "batch"):
        raise UserError(f"SynFlow input must be 'ones' or 'batch', got {input!r}")
    names = list(params)
    m = copy.deepcopy(model).double().eval()
    mp = dict(m.named_parameters())
    missing = [n for n in names if n not in mp]
    if missing:
        raise UserError(f"SynFlow: {missing[0]!r} is not a parameter of the model")
    with torch.no_grad():
        for p in mp.values():
            p.abs_()  # linearise: |theta| everywhere (signs live on in the original model)
            p.requires_grad_(False)
    cp = {n: mp[n].requires_grad_(True) for n in names}
    if input == "batch":
        x = _split(batch)[0]
        fwd, ones = m, (x.double() if torch.is_floating_point(x) else x)
    else:
        fwd, ones = _synflow_input(m, batch, input_shape)
    out = fwd(ones.to(next(iter(cp.values())).device))
    R = out.sum()
    grads = torch.autograd.grad(R, [cp[n] for n in names], allow_unused=True)
    res = {}
    for n, g in zip(names, grads):
        res[n] = torch.zeros_like(cp[n]) if g is None else (g * cp[n]).detach()
    return res


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomOptions:
    """Options of the ``random`` scorer: ``seed`` of the i.i.d. U(0, 1) scores."""

    seed: int = 0


@dataclass(frozen=True)
class GraspOptions:
    """Options of ``grasp``: the softmax ``temperature`` T of L_T (Wang et al. use T = 200)."""

    temperature: float = 200.0


@dataclass(frozen=True)
class SynflowOptions:
    """Options of ``synflow``: the prune ``rounds`` of its exponential schedule (Tanaka et al.: 100) and the
    ``input`` it scores on (``"ones"``: data-free, the paper's; ``"batch"``: the real inputs)."""

    rounds: int = 100
    input: str = "ones"


_SKIP_ARGS = ("model", "params", "batch", "loss_fn")


@dataclass(frozen=True)
class Scorer:
    """A registered scoring rule (the ``scorer`` family's protocol object).

    Attributes:
        fn: ``fn(model, params, *, batch=None, **options) -> {name: score}`` (higher = kept).
        options: a dataclass of the scorer's own options and their defaults (None: read from ``fn``'s signature).
        rounds: default number of prune rounds (1 one-shot; SynFlow 100, exponential schedule); an option
            named ``rounds`` overrides it.
        needs_batch: whether the scorer needs labelled data.
    """

    fn: Callable[..., dict[str, torch.Tensor]]
    options: type | None = None
    rounds: int = 1
    needs_batch: bool = False

    def __call__(self, model: nn.Module, params: dict[str, nn.Parameter], **kw: Any) -> dict[str, torch.Tensor]:
        return self.fn(model, params, **kw)

    @classmethod
    def coerce(cls, obj: Any) -> Scorer:
        """A :class:`Scorer` for a registered object (a Scorer, or a plain plugin function)."""
        if isinstance(obj, Scorer):
            return obj
        if callable(obj):
            return cls(obj)
        raise UserError(f"a scorer must be a function fn(model, params, *, batch=None, **options), got {type(obj).__name__}")

    def _signature(self) -> tuple[list[str], bool]:
        """(explicit keyword names of ``fn`` besides model/params/batch/loss_fn, whether it takes ``**kwargs``)."""
        try:
            sig = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return [], True
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = [n for n, p in sig.parameters.items() if p.kind in kinds and n not in _SKIP_ARGS]
        return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())

    def option_names(self) -> list[str]:
        """The options this scorer defines (its options dataclass' fields, else ``fn``'s keyword arguments)."""
        if self.options is not None:
            return [f.name for f in dataclasses.fields(self.options)]
        return self._signature()[0]

    def options_for(self, **common: Any) -> dict[str, Any]:
        """This scorer's options picked from ``common`` (the options a caller offers every scorer).

        The options dataclass' fields come back with ``common``'s value or their default; other keywords are
        passed when ``fn`` names them (``input_shape``, ``generator``), or all of them when ``fn`` takes
        ``**options`` and declares no dataclass (a plain plugin function). So a recipe can offer
        ``seed=..., temperature=..., rounds=...`` to every scorer and each takes what it defines.
        """
        names, var_kw = self._signature()
        if self.options is None and var_kw:
            out = dict(common)
        else:
            out = {n: common[n] for n in names if n in common}
        if self.options is not None:
            vals = {f.name: common.get(f.name, f.default) for f in dataclasses.fields(self.options)}
            out.update(dataclasses.asdict(self.options(**vals)))
        return out

    def rounds_for(self, **common: Any) -> int:
        """Prune rounds: the scorer's own ``rounds`` option (SynFlow's), else the record's default."""
        if "rounds" in self.option_names():
            return int(self.options_for(**common).get("rounds", self.rounds))
        return int(self.rounds)


register_family("scorer", "pruning scores: fn(model, params, *, batch=None, **options) -> {param_name: importance}",
                coerce=Scorer.coerce)
register_method("magnitude", family="scorer")(Scorer(magnitude))
register_method("random", family="scorer")(Scorer(random_scores, options=RandomOptions))
register_method("snip", family="scorer")(Scorer(snip, needs_batch=True))
register_method("grasp", family="scorer")(Scorer(grasp, options=GraspOptions, needs_batch=True))
register_method("synflow", family="scorer")(Scorer(synflow, options=SynflowOptions, rounds=100))


def get_scorer(method: str | Scorer | Callable[..., Any]) -> Scorer:
    """The :class:`Scorer` for a registered name (plugins included), a Scorer, or a plain function."""
    if isinstance(method, str):
        return METHODS.resolve(method, "scorer")
    return Scorer.coerce(method)


def scores(model: nn.Module, method: str | Scorer | Callable[..., Any], *, batch: Any = None,
           loss_fn: LossFn | None = None, targets: Targets = None, params: dict[str, nn.Parameter] | None = None,
           options: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
    """Score every prunable weight of ``model`` with ``method`` (one round; higher = kept).

    Args:
        model: the network; it is not modified.
        method: a registered scorer name (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``, or a
            plugin's), a :class:`Scorer`, or a plain scoring function.
        batch: ``(x, y)``, needed by SNIP and GraSP; SynFlow only reads the input shape from it.
        loss_fn: ``loss_fn(logits, y)``; default cross-entropy in float64.
        targets: module names / patterns whose weights are scored (:func:`sparseforge.select`); default every
            weight (>= 2 dims) of the model.
        params: an explicit ``{name: parameter}`` dict instead of ``targets``.
        options: options offered to the scorer, which takes the ones it defines (:meth:`Scorer.options_for`).
        **kwargs: scorer options passed as they are (``seed`` for random, ``temperature`` for GraSP,
            ``input_shape`` for SynFlow).

    Returns:
        ``{param_name: scores}``, each of the parameter's shape, finite.

    SynFlow's paper method is iterative (100 rounds): use :func:`sparseforge.pruning.prune` or
    ``prune_global(model, "synflow", sparsity)`` for that; this returns one round.
    """
    sc = get_scorer(method)
    named = _names(model, targets, params)
    if sc.needs_batch and batch is None:
        raise UserError(f"scorer {method!r} needs a batch: pass batch=(x, y)")
    opts = {**sc.options_for(**(options or {})), **kwargs}
    opts.pop("rounds", None)  # a schedule option (prune), not a scoring one
    return score_without_side_effects(sc, model, named, batch=batch, loss_fn=loss_fn, **opts)


def score_without_side_effects(sc: Scorer, model: nn.Module, params: dict[str, nn.Parameter], **kw: Any) -> dict[str, torch.Tensor]:
    """Run a scorer and restore the model's buffers (a forward in train mode moves BatchNorm statistics)."""
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        return sc(model, params, **kw)
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved:
                    b.copy_(saved[n])

