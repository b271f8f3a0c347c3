"""One compression run through the compressor protocol: train with the method's hooks, reach the level exactly,
fine-tune with the masks fixed — the same budget and the same steps for every method (the ``compare`` loop).

:func:`compress_and_finetune` takes a compressor name, a freshly initialised model and a :class:`Budget`;
:func:`calibrate` searches a regularized method's strength so that its natural sparsity (before the final
projection) comes closest to the level, with :func:`sparseforge.optim.calibrate_strength`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import masks as M
from ..engine import EvalCallback, evaluate_accuracy, fit, make_loader
from ..errors import UserError
from .base import Compressed, get_compressor, make_compressor, removed_fraction


@dataclass(frozen=True)
class Budget:
    """The training every method gets: ``epochs`` with its hooks, then ``finetune_epochs`` with its masks fixed."""

    epochs: int = 20
    finetune_epochs: int = 5
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9

    def make_optimizer(self, groups: Any, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)
        raise UserError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


@dataclass
class Outcome:
    """A compressed, fine-tuned model and how it got there."""

    name: str
    level: float
    structure: str
    model: nn.Module
    masks: dict[str, torch.Tensor]
    removed: float
    natural_sparsity: float
    acc_before_finetune: float
    acc: float
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _train(model: nn.Module, data: Any, opt: torch.optim.Optimizer, epochs: int, budget: Budget, *, seed: int,
           penalty_fn: Callable[[nn.Module], torch.Tensor] | None = None, callbacks: list[Any] = (),
           run: Any = None, series: str | None = None, device: str = "cpu") -> None:
    if epochs <= 0:
        return
    loader = make_loader(data.train, budget.batch_size, shuffle=True, seed=seed)
    test = make_loader(data.test, 512, shuffle=False)
    ev = EvalCallback(lambda m: {"test_acc": evaluate_accuracy(m, test, device)}, every=max(1, epochs // 4))
    fit(model, loader, opt, loss_fn=F.cross_entropy, epochs=epochs, penalty_fn=penalty_fn,
        callbacks=[*callbacks, ev], run=run, series=series, device=device, desc=series or "train", stateful=())


def compress_and_finetune(
    name: str,
    model: nn.Module,
    data: Any,
    *,
    level: float,
    targets: Any,
    budget: Budget,
    options: dict[str, Any] | None = None,
    dense_state: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    run: Any = None,
    device: str = "cpu",
    series: str | None = None,
) -> Outcome:
    """Compress a freshly initialised ``model`` with compressor ``name`` at ``level``, in ``budget``.

    A method without training hooks (``dense_training``) starts from ``dense_state`` (the dense model after
    ``budget.epochs``) when given, instead of training the same dense model again. ``options`` are offered to
    the compressor (it takes the ones it defines); ``n_data``, ``epochs`` and ``total_steps`` are filled in.
    """
    n = int(data.x_train.shape[0])
    steps = budget.epochs * math.ceil(n / budget.batch_size)
    opts = {"n_data": n, "epochs": budget.epochs, "total_steps": steps, "lr": budget.lr, "seed": seed, **(options or {})}
    c = make_compressor(name, level=level, targets=targets, **opts)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:256]
    batch = (data.x_train[idx].to(device), data.y_train[idx].to(device))
    series = series or f"{name}/{level:g}"
    if c.dense_training and dense_state is not None:
        model.load_state_dict(dense_state)
        c.prepare(model, batch=batch)
    else:
        model = c.prepare(model, batch=batch)
        opt = c.wrap_optimizer(budget.make_optimizer(c.param_groups(model, budget.weight_decay), budget.lr), model)
        tm = c.training_masks(model)
        ms = M.attach(model, tm, opt) if tm else None
        _train(model, data, opt, budget.epochs, budget, seed=seed, penalty_fn=c.penalty_fn(), callbacks=c.callbacks(model),
               run=run, series=series, device=device)
        if ms is not None:
            ms.detach()
    out: Compressed = c.finish(model, batch=batch)
    test = make_loader(data.test, 512, shuffle=False)
    model = out.model
    if out.masks:
        M.attach(model, out.masks).bake()
    acc0 = evaluate_accuracy(model, test, device)
    opt = budget.make_optimizer(model.parameters(), budget.finetune_lr)
    ms = M.attach(model, out.masks, opt) if out.masks else None
    _train(model, data, opt, budget.finetune_epochs, budget, seed=seed + 1, run=run, series=f"{series}/finetune",
           device=device)
    if ms is not None:
        ms.bake()
    weights = [k for k in out.masks if dict(model.named_parameters())[k].dim() >= 2]
    removed = out.extra.get("removed_fraction", removed_fraction(out.masks, model, out.structure, weights) if weights else 0.0)
    return Outcome(name, level, out.structure, model, out.masks, removed, out.natural_sparsity, acc0,
                   evaluate_accuracy(model, test, device), {k: v for k, v in opts.items() if k not in ("n_data",)},
                   out.extra)


def natural_sparsity_after_training(name: str, model_fn: Callable[[], nn.Module], data: Any, *, level: float,
                                    targets: Any, budget: Budget, options: dict[str, Any], seed: int = 0,
                                    device: str = "cpu") -> float:
    """How sparse a method gets on its own (before the projection) after ``budget.epochs``: the calibration signal."""
    n = int(data.x_train.shape[0])
    steps = budget.epochs * math.ceil(n / budget.batch_size)
    c = make_compressor(name, level=level, targets=targets, n_data=n, epochs=budget.epochs, total_steps=steps,
                        lr=budget.lr, seed=seed, **options)
    model = model_fn()
    batch = (data.x_train[:256].to(device), data.y_train[:256].to(device))
    model = c.prepare(model, batch=batch)
    opt = c.wrap_optimizer(budget.make_optimizer(c.param_groups(model, budget.weight_decay), budget.lr), model)
    _train(model, data, opt, budget.epochs, budget, seed=seed, penalty_fn=c.penalty_fn(), callbacks=c.callbacks(model),
           device=device)
    return c.finish(model, batch=batch).natural_sparsity


def calibrate(name: str, model_fn: Callable[[], nn.Module], data: Any, *, level: float, targets: Any, budget: Budget,
              steps: int, start: float | None = None, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The strength (the compressor's ``strength_option``) whose natural sparsity comes closest to ``level``.

    Returns ``{"option": name or None, "value": best, "natural": its sparsity, "trials": [...]}``; a method
    without a strength option (or ``steps`` < 1) returns its default.
    """
    from ..optim import calibrate_strength

    cls = get_compressor(name)
    key = cls.strength_option
    if key is None or steps < 1:
        return {"option": key, "value": None, "natural": None, "trials": []}
    import dataclasses

    default = next(f.default for f in dataclasses.fields(cls.Options) if f.name == key) or 1.0
    cal = calibrate_strength(
        lambda value, i: (natural_sparsity_after_training(name, model_fn, data, level=level, targets=targets,
                                                         budget=budget, options={key: value}, seed=seed,
                                                         device=device), None),
        level, start=start or default, steps=steps)
    return {"option": key, "value": cal.weight, "natural": cal.natural, "trials": cal.trials}


def copy_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


__all__ = ["Budget", "Outcome", "calibrate", "compress_and_finetune", "natural_sparsity_after_training"]
