"""A small training loop with callbacks, logging, progress, checkpoints and DDP.

Methods never own the loop (ARCHITECTURE.md): regularizers are prox operators folded into
the optimizer (:class:`~sparseforge.optim.ProximalOptimizer`) or a ``penalty_fn`` added to
the loss; pruners hand masks to :mod:`sparseforge.masks`; spectral methods hook in through
callbacks. Recipes call :func:`fit`.

Example::

    state = fit(model, loader, opt, loss_fn=F.cross_entropy, epochs=20,
                callbacks=[EvalCallback(lambda m: {"test_acc": accuracy(m, test)}, every=1, unit="epoch"),
                           CheckpointCallback(run, "dense", every=1)],
                run=run, series="dense")
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .progress import progress
from .run import Run


@dataclass
class FitState:
    """What callbacks see. Set ``stop = True`` to end training after the current step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    epoch: int = 0
    loss: float = float("nan")
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def raw_model(self) -> nn.Module:
        return D.unwrap(self.model)


class Callback:
    """Override any hook; all are no-ops by default."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_step_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None: ...


class LambdaCallback(Callback):
    """Call ``fn(state)`` every ``every`` steps (``unit="step"``) or epochs (``"epoch"``)."""

    def __init__(self, fn: Callable[[FitState], None], *, every: int = 1, unit: str = "step") -> None:
        if unit not in ("step", "epoch"):
            raise ValueError("unit must be 'step' or 'epoch'")
        self.fn, self.every, self.unit = fn, max(1, int(every)), unit

    def on_step_end(self, state: FitState) -> None:
        if self.unit == "step" and state.step % self.every == 0:
            self.fn(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.unit == "epoch" and state.epoch % self.every == 0:
            self.fn(state)


class EvalCallback(Callback):
    """Evaluate ``eval_fn(model) -> dict`` periodically, log it and keep it in ``state.history``.

    Args:
        eval_fn: returns a dict of floats (e.g. ``{"test_acc": 0.93}``); runs under no_grad in eval mode.
        every: period in ``unit``s.
        unit: ``"step"`` or ``"epoch"``.
        stop_when: optional predicate on the metrics dict that ends training early.
        at_start: also evaluate before the first step (step 0).
    """

    def __init__(
        self,
        eval_fn: Callable[[nn.Module], dict[str, float]],
        *,
        every: int = 1,
        unit: str = "epoch",
        stop_when: Callable[[dict[str, float]], bool] | None = None,
        at_start: bool = False,
    ) -> None:
        if unit not in ("step", "epoch"):
            raise ValueError("unit must be 'step' or 'epoch'")
        self.eval_fn, self.every, self.unit = eval_fn, max(1, int(every)), unit
        self.stop_when, self.at_start = stop_when, at_start

    def _run(self, state: FitState) -> None:
        model = state.raw_model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.eval_fn(model).items()}
        model.train(was_training)
        row = {"step": state.step, "epoch": state.epoch, "loss": state.loss, **metrics}
        row["step"] = state.step  # an eval_fn may not override the step
        state.history.append(row)
        run: Run | None = state.extra.get("run")
        if run is not None:
            values = {k: v for k, v in row.items() if k not in ("step", "series")}
            run.log(state.step, series=state.extra.get("series"), **values)
        if self.stop_when is not None and self.stop_when(metrics):
            state.stop = True

    def on_fit_start(self, state: FitState) -> None:
        if self.at_start and state.step == 0:
            self._run(state)

    def on_step_end(self, state: FitState) -> None:
        if self.unit == "step" and state.step % self.every == 0:
            self._run(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.unit == "epoch" and state.epoch % self.every == 0:
            self._run(state)


class CheckpointCallback(Callback):
    """Atomically save model, optimizer, step/epoch, history and RNG states.

    Saved as ``run.checkpoint_path(name)`` every ``every`` epochs (or steps) and at the end.
    :func:`fit` with ``resume=True`` restarts from it.
    """

    def __init__(self, run: Run, name: str = "last", *, every: int = 1, unit: str = "epoch") -> None:
        self.run, self.name, self.every, self.unit = run, name, max(1, int(every)), unit

    def save(self, state: FitState) -> None:
        self.run.save_checkpoint(_snapshot(state), self.name)

    def on_step_end(self, state: FitState) -> None:
        if self.unit == "step" and state.step % self.every == 0:
            self.save(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.unit == "epoch" and state.epoch % self.every == 0:
            self.save(state)

    def on_fit_end(self, state: FitState) -> None:
        self.save(state)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _snapshot(state: FitState) -> dict[str, Any]:
    cbs = state.extra.get("callbacks", [])
    return {
        "model": state.raw_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "epoch": state.epoch,
        "history": state.history,
        "rng": _rng_state(),
        "callbacks": [cb.state_dict() for cb in cbs],
        "scheduler": sched.state_dict() if (sched := state.extra.get("scheduler")) is not None else None,
        "stop": state.stop,
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to(batch: Any, device: str | torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def default_step(model: nn.Module, batch: Any, loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``loss_fn(model(x), y)`` for a batch ``(x, y)``."""
    x, y = batch
    return loss_fn(model(x), y)


def fit(
    model: nn.Module,
    data: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    step_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    penalty_fn: Callable[[nn.Module], torch.Tensor] | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    callbacks: Sequence[Callback] = (),
    scheduler: Any | None = None,
    device: str | torch.device = "cpu",
    run: Run | None = None,
    series: str | None = None,
    resume: bool = False,
    checkpoint: str | None = None,
    grad_clip: float | None = None,
    desc: str = "train",
) -> FitState:
    """Train ``model`` on ``data`` for ``epochs`` passes or ``steps`` optimizer steps.

    Args:
        model: the module (wrapped in DDP automatically when a process group is up).
        data: a re-iterable of batches, e.g. a DataLoader (one pass = one epoch). A
            ``DistributedSampler`` in ``data.sampler`` gets ``set_epoch`` each epoch.
        optimizer: any torch optimizer (masks / prox operators ride on it).
        loss_fn: ``loss_fn(output, target)``, used by the default step on ``(x, y)`` batches.
        step_fn: ``step_fn(model, batch) -> loss`` replacing the default step.
        penalty_fn: ``penalty_fn(model) -> scalar`` added to every step's loss.
        epochs / steps: stopping rule; with both, whichever comes first.
        callbacks: :class:`Callback` objects.
        scheduler: an LR scheduler stepped once per optimizer step.
        run: where EvalCallbacks log (``metrics.jsonl``) and checkpoints go.
        series: tag written with every logged row (one recipe, several trainings).
        resume: restart from ``run.checkpoint_path(checkpoint)`` if it exists.
        checkpoint: name of the checkpoint to resume from (default ``series`` or ``"last"``).
        grad_clip: clip the global gradient norm to this value.

    Returns:
        The final :class:`FitState` (``history`` holds every evaluation).
    """
    if epochs is None and steps is None:
        raise ValueError("fit() needs epochs or steps")
    if loss_fn is None and step_fn is None:
        raise ValueError("fit() needs loss_fn or step_fn")
    step_fn = step_fn or (lambda m, b: default_step(m, b, loss_fn))  # type: ignore[arg-type]
    D.setup(str(device))
    model = model.to(device)
    wrapped = D.wrap(model, str(device))
    state = FitState(model=wrapped, optimizer=optimizer)
    state.extra.update(run=run, series=series, callbacks=list(callbacks), scheduler=scheduler)
    ck_name = checkpoint or series or "last"
    if resume and run is not None:
        snap = run.load_checkpoint(ck_name)
        if snap is not None:
            D.unwrap(wrapped).load_state_dict(snap["model"])
            optimizer.load_state_dict(snap["optimizer"])
            state.step, state.epoch, state.history = snap["step"], snap["epoch"], snap["history"]
            _set_rng_state(snap["rng"])
            state.stop = bool(snap.get("stop", False))
            for cb, sd in zip(callbacks, snap.get("callbacks", [])):
                cb.load_state_dict(sd)
            if scheduler is not None:
                if snap.get("scheduler") is not None:
                    scheduler.load_state_dict(snap["scheduler"])
                else:  # an old checkpoint without scheduler state: replay from the start
                    for _ in range(state.step):
                        scheduler.step()
    total = steps if steps is not None else (epochs or 0) * _safe_len(data)
    bar = progress(total=total or None, desc=desc, initial=min(state.step, total or 0))
    for cb in callbacks:
        cb.on_fit_start(state)
    wrapped.train()

    def done() -> bool:
        return state.stop or (steps is not None and state.step >= steps) or (
            epochs is not None and state.epoch >= epochs
        )

    while not done():
        sampler = getattr(data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.epoch)
        step_at_epoch_start = state.step
        for batch in data:
            batch = _to(batch, device)
            loss = step_fn(wrapped, batch)
            if penalty_fn is not None:
                loss = loss + penalty_fn(D.unwrap(wrapped))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(wrapped.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            state.step += 1
            state.loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss:.4f}", refresh=False)
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop or (steps is not None and state.step >= steps):
                break
        else:
            if state.step == step_at_epoch_start:
                raise ValueError("fit(): the data produced no batch in a whole epoch (empty dataset, or drop_last with a batch larger than it)")
            state.epoch += 1
            for cb in callbacks:
                cb.on_epoch_end(state)
            continue
        # inner loop broke early: count a finished epoch only if the data was exhausted
        if steps is not None and state.step >= steps and epochs is None:
            break
        if state.stop:
            break
    bar.close()
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


def _safe_len(data: Any) -> int:
    try:
        return len(data)
    except TypeError:
        return 0


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Iterable[Any], device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` batches (all ranks' shards are averaged)."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for x, y in data:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(-1) == y).sum().double().cpu()
        count += y.numel()
    model.train(was)
    if D.world_size() > 1:  # every rank saw its shard: add them up
        both = torch.stack([correct, count])
        import torch.distributed as dist

        dist.all_reduce(both)
        correct, count = both[0], both[1]
    return float(correct / count.clamp_min(1))
