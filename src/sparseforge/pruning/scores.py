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

Scorers are registered with ``register_method(name, family="scorer")`` and carry an ``iterative``
default number of rounds (1 for one-shot scorers, 100 for SynFlow). The public entry point is
:func:`scores`; pruning with the iterative schedule is :func:`sparseforge.pruning.prune`.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..registry import METHODS, register_method

__all__ = [
    "SCORERS",
    "Scorer",
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
    if logits.dim() == 3 and logits.shape[1] == 1:  # (b, 1, C) token-model logits: squeeze the position
        logits = logits[:, 0]
    return F.cross_entropy(logits.double(), target)


def prunable_params(
    model: nn.Module,
    params: Iterable[str] | str | None = None,
    *,
    exclude: Iterable[str] | str = (),
    embeddings: bool = True,
    min_dim: int = 2,
) -> dict[str, nn.Parameter]:
    """The parameters to score and prune, by name.

    Args:
        model: the network.
        params: names or fnmatch patterns of the parameters to include (default: every parameter
            with at least ``min_dim`` dimensions, i.e. weight matrices and kernels, no biases).
        exclude: names or patterns to leave out.
        embeddings: include ``nn.Embedding`` weights and parameters whose name contains ``embed``
            (``unembed`` included). The grokking paper prunes them; set False to keep them dense.
        min_dim: smallest number of dimensions of a default-selected parameter.
    """
    pats = [params] if isinstance(params, str) else (list(params) if params is not None else None)
    excl = [exclude] if isinstance(exclude, str) else list(exclude)
    emb_names = {f"{m}.weight" if m else "weight" for m, mod in model.named_modules() if isinstance(mod, nn.Embedding)}
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        if pats is None:
            if p.dim() < min_dim:
                continue
        elif not any(fnmatch.fnmatchcase(name, pat) for pat in pats):
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in excl):
            continue
        if not embeddings and (name in emb_names or "embed" in name.rsplit(".", 1)[-1]):
            continue
        out[name] = p
    if not out:
        raise UserError(f"no parameter of the model matches params={params!r} (exclude={exclude!r}); "
                        "pass names or patterns from model.named_parameters()")
    return out


def _names(model: nn.Module, params: Any) -> dict[str, nn.Parameter]:
    if isinstance(params, dict):
        return params
    return prunable_params(model, params)


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    if batch is None:
        raise UserError("this scorer needs a batch: pass batch=(x, y)")
    x, y = batch
    return x, y


def _logits(model: nn.Module, x: Any) -> torch.Tensor:
    out = model(x)
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
    """GraSP importance ``theta * Hg`` (= -S_GraSP of the paper; keeping the largest importance removes the
    weights whose removal most reduces gradient flow, i.e. the largest S_GraSP)."""
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
        # token model: the embedding applied to an all-ones vocabulary vector at each position [recon]
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
            input_shape: tuple[int, ...] | None = None, **_: Any) -> dict[str, torch.Tensor]:
    """One round of SynFlow: S = (dR/d|theta|) * |theta|, R = sum f(1; |theta|), in float64.

    Data-free: ``batch`` (if given) only supplies the input shape. The scores are computed on a
    float64 copy whose every parameter (biases and BatchNorm affine included) is replaced by its
    absolute value, in eval mode (BatchNorm uses running statistics). The model is not modified.
    Pruned (zeroed) weights score 0, so masks applied to the model propagate to the scores.
    """
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
class Scorer:
    """A registered scoring rule.

    Attributes:
        fn: ``fn(model, params, **kw) -> {name: score}`` (higher = kept).
        rounds: default number of prune rounds (1 one-shot; SynFlow 100, exponential schedule).
        needs_batch: whether the scorer needs labelled data.
    """

    fn: Callable[..., dict[str, torch.Tensor]]
    rounds: int = 1
    needs_batch: bool = False

    def __call__(self, model: nn.Module, params: dict[str, nn.Parameter], **kw: Any) -> dict[str, torch.Tensor]:
        return self.fn(model, params, **kw)


# the built-in scorers (also looked up here directly, so scoring never needs the full registry)
SCORERS: dict[str, Scorer] = {
    "magnitude": Scorer(magnitude),
    "random": Scorer(random_scores),
    "snip": Scorer(snip, needs_batch=True),
    "grasp": Scorer(grasp, needs_batch=True),
    "synflow": Scorer(synflow, rounds=100),
}
for _name, _sc in SCORERS.items():
    register_method(_name, family="scorer")(_sc)


def get_scorer(method: str | Scorer | Callable[..., Any]) -> Scorer:
    if isinstance(method, Scorer):
        return method
    if callable(method):
        return Scorer(method)
    if method in SCORERS:
        return SCORERS[method]
    obj = METHODS.get(method)
    if not isinstance(obj, Scorer):
        raise UserError(f"method {method!r} is not a pruning scorer; choose one of "
                        f"{', '.join(METHODS.names(family='scorer'))}")
    return obj


def scores(model: nn.Module, method: str | Scorer | Callable[..., Any], *, batch: Any = None,
           loss_fn: LossFn | None = None, params: Iterable[str] | str | dict[str, nn.Parameter] | None = None,
           **kwargs: Any) -> dict[str, torch.Tensor]:
    """Score every prunable weight of ``model`` with ``method`` (one round; higher = kept).

    Args:
        model: the network; it is not modified.
        method: a registered scorer name (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``).
        batch: ``(x, y)``, needed by SNIP and GraSP; SynFlow only reads the input shape from it.
        loss_fn: ``loss_fn(logits, y)``; default cross-entropy in float64.
        params: names / patterns of the parameters to score (default: every weight with >= 2 dims),
            or a ``{name: parameter}`` dict from :func:`prunable_params`.
        **kwargs: scorer options (``seed`` for random, ``temperature`` for GraSP, ``input_shape``).

    Returns:
        ``{param_name: scores}``, each of the parameter's shape, finite.

    SynFlow's paper method is iterative (100 rounds): use :func:`sparseforge.pruning.prune` or
    ``prune_global(model, "synflow", sparsity)`` for that; this returns one round.
    """
    sc = get_scorer(method)
    named = _names(model, params)
    if sc.needs_batch and batch is None:
        raise UserError(f"scorer {method!r} needs a batch: pass batch=(x, y)")
    return sc(model, named, batch=batch, loss_fn=loss_fn, **kwargs)


def scorer_options(method: str, *, seed: int = 0, grasp_temperature: float = 200.0, synflow_rounds: int = 100) -> dict[str, Any]:
    """The keyword options that ``method`` takes, picked from the common ones (recipes pass them all)."""
    if method == "random":
        return {"seed": seed}
    if method == "grasp":
        return {"temperature": grasp_temperature}
    if method == "synflow":
        return {"rounds": synflow_rounds}
    return {}
