"""Family contract checks: what every registered model, prox operator, scorer, spectral method and compressor
must satisfy (the timm pattern: one suite over every registry entry).

Plugin authors run them on their own methods::

    from sparseforge.testing import check_scorer
    check_scorer("my_scorer")        # raises AssertionError naming what failed

Each check builds tiny instances, so the whole suite over every registered entry takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import METHODS, MODELS

__all__ = [
    "check_all",
    "check_compressor",
    "check_model",
    "check_prox",
    "check_scorer",
    "check_spectral",
    "example_input",
    "tiny_classifier",
]


def tiny_classifier(seed: int = 0, *, bn: bool = True) -> nn.Module:
    """A small conv + MLP classifier on (1, 6, 6) inputs with 5 classes (a BN after the conv unless ``bn=False``;
    the layers keep their indices ``0`` (conv), ``4`` and ``6`` (linears) either way)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6) if bn else nn.Identity(), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 36, 12), nn.ReLU(), nn.Linear(12, 5))


def _tiny_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    """An input batch for registered model ``name`` from its registry metadata (``input_shape``, dtype, vocab)."""
    meta = MODELS.entry(name).meta
    shape = tuple(meta.get("input_shape", (3, 32, 32)))
    g = torch.Generator().manual_seed(0)
    if meta.get("input_dtype") == "long":
        return torch.randint(0, int(meta.get("vocab_size", 2)), (batch, *shape), generator=g)
    return torch.randn(batch, *shape, generator=g)


def _loss(out: Any) -> torch.Tensor:
    out = getattr(out, "logits", out)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().pow(2).mean()


# ----------------------------------------------------------------------------- models
def check_model(name: str) -> None:
    """A registered model builds with no arguments, runs forward and backward, and every parameter gets a gradient."""
    from .models import create_model

    model = create_model(name)
    model.train()
    x = example_input(name)
    out = model(x)
    assert torch.isfinite(getattr(out, "logits", out)).all(), f"model {name!r}: non-finite output"
    _loss(out).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"model {name!r}: parameters without a gradient: {missing[:5]}"


# ----------------------------------------------------------------------------- prox
def _brute_prox(op: Any, x: torch.Tensor, step: float) -> torch.Tensor:
    """argmin_z ½‖z − x‖² + step·λR(z) by a derivative-free minimiser (tiny inputs only)."""
    import numpy as np
    from scipy.optimize import minimize

    shape = x.shape

    def f(z: np.ndarray) -> float:
        t = torch.as_tensor(z, dtype=torch.float64).reshape(shape)
        return float(0.5 * (t - x).pow(2).sum() + step * op.penalty(t))

    best = None
    for start in (x.flatten().numpy(), np.zeros(x.numel()), 0.5 * x.flatten().numpy()):
        r = minimize(f, start, method="Powell", options={"xtol": 1e-10, "ftol": 1e-14, "maxiter": 40000})
        if best is None or r.fun < best.fun:
            best = r
    return torch.as_tensor(best.x, dtype=torch.float64).reshape(shape)


def check_prox(name_or_cls: Any) -> None:
    """A prox operator: the identity at weight 0 (and step 0); non-expansive and equal to a brute-force
    minimiser on tiny inputs when it is convex (``convex = True``); finite non-negative penalty; its
    ``from_layer`` constructor builds it for a Linear layer."""
    from .prox.base import ProxOperator

    cls = METHODS.get(name_or_cls, family="prox") if isinstance(name_or_cls, str) else name_or_cls
    assert isinstance(cls, type) and issubclass(cls, ProxOperator), f"{cls!r} is not a ProxOperator subclass"
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g)
    ref = w.clone()
    cls(weight=0.0).prox_(w, 0.7)
    assert torch.equal(w, ref), f"{cls.__name__}: weight 0 is not the identity"
    op = cls(weight=1.0)
    op.prox_(w, 0.0)
    assert torch.equal(w, ref), f"{cls.__name__}: step 0 is not the identity"
    op.prox_(w, 0.5)
    assert float(w.norm()) <= float(ref.norm()) + 1e-6, f"{cls.__name__}: the prox grew the weight"
    pen = op.penalty(ref)
    assert torch.isfinite(pen) and float(pen) >= 0, f"{cls.__name__}: penalty must be finite and >= 0"
    layer_op = cls.from_layer(nn.Linear(4, 6), weight=0.5, grouping="row")
    assert isinstance(layer_op, ProxOperator)
    if getattr(cls, "convex", True) and not getattr(op, "exact", False):
        for _ in range(5):
            u = torch.randn(8, 4, 3, 3, dtype=torch.float64, generator=g)
            v = torch.randn(8, 4, 3, 3, dtype=torch.float64, generator=g)
            pu, pv = op.prox_(u.clone(), 0.3), op.prox_(v.clone(), 0.3)
            assert float((pu - pv).norm()) <= float((u - v).norm()) + 1e-10, f"{cls.__name__}: not non-expansive"
        x = torch.randn(3, 2, dtype=torch.float64, generator=g)
        tiny = cls.from_layer(nn.Linear(2, 3), weight=0.4, grouping="row")
        got = tiny.prox_(x.clone(), 1.0)
        want = _brute_prox(tiny, x, 1.0)
        obj = lambda z: float(0.5 * (z - x).pow(2).sum() + tiny.penalty(z))  # noqa: E731
        assert obj(got) <= obj(want) + 1e-6, f"{cls.__name__}: the prox is not the minimiser ({obj(got)} > {obj(want)})"


# ----------------------------------------------------------------------------- scorers
def check_scorer(name_or_fn: Any) -> None:
    """A scorer: finite scores shaped like the weights, only for the targets' weights, the model unchanged."""
    from .pruning import prune_global, scores
    from .pruning.prune import n_keep_for

    model = tiny_classifier()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    batch = _tiny_batch()
    targets = ["0", "4"]
    s = scores(model, name_or_fn, batch=batch, targets=targets)
    assert set(s) == {"0.weight", "4.weight"}, f"scorer {name_or_fn!r}: scored {sorted(s)}, targets were {targets}"
    params = dict(model.named_parameters())
    for n, v in s.items():
        assert v.shape == params[n].shape, f"scorer {name_or_fn!r}: scores of {n} have shape {tuple(v.shape)}"
        assert torch.isfinite(v).all(), f"scorer {name_or_fn!r}: non-finite scores for {n}"
    for n, v in model.state_dict().items():
        assert torch.equal(v, before[n]), f"scorer {name_or_fn!r} changed the model ({n})"
    m = prune_global(model, name_or_fn, 0.5, batch=batch, targets=targets, rounds=2)
    kept = sum(int(v.sum()) for v in m.values())
    total = sum(v.numel() for v in m.values())
    assert kept == n_keep_for(total, 0.5), f"scorer {name_or_fn!r}: pruning to 50% kept {kept} of {total}"


# ----------------------------------------------------------------------------- spectral
def check_spectral(name: str, *, rank: int = 2) -> None:
    """A spectral method: conversion keeps outputs, one training step runs (and changes the model),
    ``merge`` gives plain ``nn.Linear`` layers with the same outputs."""
    from . import spectral

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5))
    x = torch.randn(4, 8)
    with torch.no_grad():
        ref = model(x)
    spectral.convert(model, name, rank=rank)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0, msg=f"spectral {name!r}: conversion changed outputs")
    opt = spectral.build_optimizer(model, lr=1e-2)
    ctl = spectral.attach(name, model, opt)
    F.mse_loss(model(x), torch.zeros_like(ref)).backward()
    opt.step()
    with torch.no_grad():
        after = model(x)
    assert not torch.allclose(after, ref), f"spectral {name!r}: one training step changed nothing"
    if ctl is not None and hasattr(ctl, "detach"):
        ctl.detach()
    merged = spectral.merge(model)
    kinds = {type(m) for m in merged.modules() if not isinstance(m, (nn.Sequential, nn.ReLU))}
    assert kinds == {nn.Linear}, f"spectral {name!r}: merge left {kinds}"
    with torch.no_grad():
        torch.testing.assert_close(merged(x), after, atol=1e-5, rtol=0, msg=f"spectral {name!r}: merge changed outputs")


# ----------------------------------------------------------------------------- compressors
def check_compressor(name: str, *, level: float = 0.5, steps: int = 3) -> None:
    """A compressor: on a tiny classifier it trains a few steps through its hooks and returns masks that
    remove exactly ``level`` of its structure (per layer for groupings, at least one group kept)."""
    from . import masks as M
    from .compress import make_compressor, removed_fraction
    from .engine import fit
    from .pruning.prune import n_keep_for

    model = tiny_classifier(bn=False)  # a Bayesian layer must not feed a BatchNorm (Turbo-VBI refuses that)
    batch = _tiny_batch()
    targets = ["0", "4"]
    c = make_compressor(name, level=level, targets=targets, epochs=steps, total_steps=steps, rounds=2,
                        n_data=len(batch[1]), lr=0.05)
    model = c.prepare(model, batch=batch)
    opt = c.wrap_optimizer(torch.optim.SGD(c.param_groups(model, 0.0), lr=0.05, momentum=0.9), model)
    tm = c.training_masks(model)
    ms = M.attach(model, tm, opt) if tm else None
    fit(model, [batch], opt, loss_fn=F.cross_entropy, epochs=steps, callbacks=c.callbacks(model),
        penalty_fn=c.penalty_fn())
    if ms is not None:
        ms.detach()
    widths = {n: model.get_submodule(n).weight.shape[0] for n in targets}
    out = c.finish(model, batch=batch)
    assert 0.0 <= out.natural_sparsity <= 1.0, f"compressor {name!r}: natural sparsity {out.natural_sparsity}"
    if getattr(c, "physically_pruned", False):  # an already smaller model: check the widths it kept
        for n, w in widths.items():
            kept = out.model.get_submodule(n).weight.shape[0]
            assert abs(kept - max(1, n_keep_for(w, level))) <= 1, f"compressor {name!r}: {n} keeps {kept} of {w}"
        return
    weights = [n for n in out.masks if dict(out.model.named_parameters())[n].dim() >= 2]
    assert weights, f"compressor {name!r}: no weight masks"
    assert set(weights) == {f"{n}.weight" for n in targets}, (
        f"compressor {name!r}: masks cover {sorted(weights)}, the targets were {targets}")
    params = dict(out.model.named_parameters())
    if out.structure == "weights":
        total = sum(params[n].numel() for n in weights)
        kept = sum(int(out.masks[n].sum()) for n in weights)
        assert kept == n_keep_for(total, level), f"compressor {name!r}: kept {kept} of {total} at level {level}"
    else:
        from .groups import group_view, n_groups

        for n in weights:
            m = n_groups(params[n].shape, out.structure)
            alive = int((group_view(out.masks[n].float(), out.structure).amax(1) > 0).sum())
            assert alive == max(1, n_keep_for(m, level)), f"compressor {name!r}: {n} keeps {alive} of {m} groups"
    assert removed_fraction(out.masks, out.model, out.structure, weights) <= level + 1e-9


CHECKS: dict[str, Callable[[Any], None]] = {
    "prox": check_prox,
    "scorer": check_scorer,
    "spectral": check_spectral,
    "compressor": check_compressor,
}


def check_all(family: str) -> list[tuple[str, str]]:
    """Run the family's check over every registered entry (plugins included): ``[(name, failure)]``.

    Compressors whose optional dependency is missing here (``available()`` False) are skipped."""
    if family == "model":
        names, check = MODELS.names(), check_model
    else:
        check = CHECKS[family]
        if family == "compressor":
            from .compress import compressor_names, get_compressor

            names = [n for n in compressor_names() if get_compressor(n).available()]
        else:
            names = METHODS.names(family=family)
    failures = []
    for n in names:
        try:
            check(n)
        except Exception as e:  # noqa: BLE001 - report every failing entry at once
            failures.append((n, f"{type(e).__name__}: {e}".splitlines()[0]))
    return failures
