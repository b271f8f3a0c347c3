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

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .checkpoint import save_checkpoint
from .progress import progress
from .run import Run, active_run


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
    resumed_from: int | None = None  # step a mid-stage checkpoint restarted this fit at
    restored: bool = False  # True: a finished fit restored from its final checkpoint (no training ran)

    @property
    def raw_model(self) -> nn.Module:
        return D.unwrap(self.model)


class Callback:
    """Override any hook; all are no-ops by default.

    A callback that keeps state a resumed run needs (counters, histories, snapshots, a random
    generator) implements :meth:`state_dict` / :meth:`load_state_dict`; one that keeps none sets
    the class attribute ``stateless = True``. :func:`fit` with ``stateful=...`` (mid-stage
    checkpoints) refuses a callback that does neither, rather than resume it wrongly.
    """

    stateless: bool = False

    def on_fit_start(self, state: FitState) -> None: ...

    def on_step_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None: ...


class LambdaCallback(Callback):
    """Call ``fn(state)`` every ``every`` steps (``unit="step"``) or epochs (``"epoch"``).

    Stateless: an object ``fn`` updates (a controller) goes into ``fit(stateful=...)``.
    """

    stateless = True

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

    stateless = True  # its results live in FitState.history, which checkpoints hold

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

    stateless = True

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
    s: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


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


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return {"generator": obj.get_state()}
    return obj.state_dict()


def _load_state_into(obj: Any, sd: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(sd["generator"])
    else:
        obj.load_state_dict(sd)


def _check_resumable(callbacks: Sequence[Callback], stateful: Sequence[Any]) -> None:
    for cb in callbacks:
        if not (getattr(cb, "stateless", False) or type(cb).state_dict is not Callback.state_dict):
            raise TypeError(
                f"fit(stateful=...): callback {type(cb).__name__} has no state_dict(); give it "
                "state_dict()/load_state_dict() (or the class attribute stateless = True) so a resume restores it"
            )
    for obj in stateful:
        if isinstance(obj, torch.Generator):
            continue
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"fit(stateful=...): {type(obj).__name__} has no state_dict()/load_state_dict()")


def _signature(model: nn.Module, optimizer: Any, *, series: str | None, steps: int | None, epochs: int | None,
               n_callbacks: int, n_stateful: int) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this fit() call (not to another training)."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)};".encode())
    groups = getattr(optimizer, "param_groups", [])
    return {"series": series, "steps": steps, "epochs": epochs, "callbacks": n_callbacks, "stateful": n_stateful,
            "params": h.hexdigest()[:16], "param_groups": len(groups)}


class _Progress:
    """Mid-stage checkpoints of one fit() call: ``every_steps`` steps or ``every_s`` seconds, whichever first."""

    def __init__(self, run: Run, stage: Any, path: Any, *, every_steps: int | None, every_s: float | None,
                 signature: dict[str, Any]) -> None:
        self.run, self.stage, self.path = run, stage, path
        self.every_steps, self.every_s, self.signature = every_steps, every_s, signature
        self.last_step = 0
        self.last_t = time.monotonic()
        self.saved = 0

    def start(self, step: int) -> None:
        self.last_step, self.last_t = step, time.monotonic()

    def due(self, step: int) -> bool:
        due = bool(self.every_steps and step - self.last_step >= self.every_steps) or bool(
            self.every_s and time.monotonic() - self.last_t >= self.every_s
        )
        return D.rank0_flag(due)  # every rank saves at the same step (time is rank 0's)

    def load(self) -> dict[str, Any] | None:
        from ..errors import CheckpointError
        from .run import _load

        if not self.stage.replay or not self.path.exists():
            return None
        snap = _load(self.path, f"mid-stage checkpoint of stage {self.stage.name!r}")
        if not isinstance(snap, dict) or snap.get("format") != _FORMAT or snap.get("signature") != self.signature:
            raise CheckpointError(
                f"--resume: {self.path} belongs to another training than the one resuming "
                f"(stage {self.stage.name!r}); delete {self.path.parent} to recompute the stage"
            )
        return snap

    def save(self, state: FitState, *, batch_in_epoch: int, final: bool) -> None:
        callbacks = state.extra.get("callbacks", [])
        stateful = state.extra.get("stateful", [])
        rng: Any = _rng_state()
        if D.world_size() > 1:
            rng = D.gather_objects(rng)  # each rank restores its own streams
        if self.run.write:
            sched = state.extra.get("scheduler")
            payload = {
                "format": _FORMAT,
                "signature": self.signature,
                "final": final,
                "step": state.step,
                "epoch": state.epoch,
                "batch_in_epoch": batch_in_epoch,
                "loss": state.loss,
                "stop": state.stop,
                "history": state.history,
                "model": state.raw_model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "callbacks": [cb.state_dict() for cb in callbacks],
                "stateful": [_state_of(o) for o in stateful],
                "rng": rng,
                "rows": self.stage.rows,
            }
            save_checkpoint(payload, self.path)
        self.saved += 1
        self.start(state.step)


_FORMAT = "sparseforge.fit/1"


def _restore(state: FitState, snap: dict[str, Any], callbacks: Sequence[Callback], stateful: Sequence[Any]) -> None:
    state.raw_model.load_state_dict(snap["model"])
    state.optimizer.load_state_dict(snap["optimizer"])
    sched = state.extra.get("scheduler")
    if sched is not None and snap.get("scheduler") is not None:
        sched.load_state_dict(snap["scheduler"])
    for cb, sd in zip(callbacks, snap["callbacks"]):
        cb.load_state_dict(sd)
    for obj, sd in zip(stateful, snap["stateful"]):
        _load_state_into(obj, sd)
    state.step, state.epoch, state.history = snap["step"], snap["epoch"], list(snap["history"])
    state.loss, state.stop = snap["loss"], bool(snap["stop"])


def _rng_of_rank(rng: Any) -> dict[str, Any]:
    return rng[D.rank()] if isinstance(rng, list) else rng


def _batches(data: Any, skip: int) -> Iterator[Any]:
    """Iterate ``data`` from its ``skip``-th batch (the order of an epoch is a function of its index)."""
    from torch.utils.data import BatchSampler, DataLoader

    from .data import EpochSampler

    if (skip and isinstance(data, DataLoader) and isinstance(data.sampler, EpochSampler)
            and type(data.batch_sampler) is BatchSampler and data.batch_size):
        data.sampler.skip_once(skip * data.batch_size)  # no need to load the skipped batches
        skip = 0
    it = iter(data)
    for _ in range(skip):
        try:
            next(it)
        except StopIteration:
            break
    return it


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
    stateful: Sequence[Any] | None = None,
    checkpoint_steps: int | None = None,
    checkpoint_seconds: float | None = None,
) -> FitState:
    """Train ``model`` on ``data`` for ``epochs`` passes or ``steps`` optimizer steps.

    Args:
        model: the module (wrapped in DDP automatically when a process group is up).
        data: a re-iterable of batches, e.g. a DataLoader (one pass = one epoch). A
            ``DistributedSampler`` in ``data.sampler`` (or ``data`` itself) gets ``set_epoch``
            each epoch; the batches of an epoch must depend only on the epoch's index (true for
            :func:`~sparseforge.engine.make_loader`), so a resume can skip to the batch it stopped at.
        optimizer: any torch optimizer (masks / prox operators ride on it).
        loss_fn: ``loss_fn(output, target)``, used by the default step on ``(x, y)`` batches.
        step_fn: ``step_fn(model, batch) -> loss`` replacing the default step.
        penalty_fn: ``penalty_fn(model) -> scalar`` added to every step's loss.
        epochs / steps: stopping rule; with both, whichever comes first.
        callbacks: :class:`Callback` objects.
        scheduler: an LR scheduler stepped once per optimizer step.
        run: where EvalCallbacks log (``metrics.jsonl``) and checkpoints go.
        series: tag written with every logged row (one recipe, several trainings).
        resume: restart from ``run.checkpoint_path(checkpoint)`` if it exists (CheckpointCallback).
        checkpoint: name of the checkpoint to resume from (default ``series`` or ``"last"``).
        grad_clip: clip the global gradient norm to this value.
        stateful: declares the loop resumable mid-stage: the objects (besides the model,
            optimizer, scheduler and callbacks) whose state the loop changes, each with
            ``state_dict()`` / ``load_state_dict()`` (or a ``torch.Generator``): controllers,
            trackers, mask schedules, posteriors, an augmentation generator; ``()`` when there are
            none. Inside a :meth:`Run.cached` stage the fit then writes an atomic checkpoint
            (model, optimizer, scheduler, RNG states, callbacks', stateful objects' and the data
            position) every ``checkpoint_steps`` steps or ``checkpoint_seconds`` seconds, whichever
            first, and a final one when it ends; with ``--resume`` a finished fit is restored from
            its final checkpoint (no training) and an interrupted one continues from its last
            checkpoint, bit-identical on CPU. None (default): no mid-stage checkpoints; an
            interrupted stage reruns from its start.
        checkpoint_steps / checkpoint_seconds: override the run's cadence (``Run(checkpoint_steps=,
            checkpoint_seconds=)``, ``--checkpoint-steps`` / ``--checkpoint-seconds``; default 60 s).

    Returns:
        The final :class:`FitState` (``history`` holds every evaluation).
    """
    if epochs is None and steps is None:
        raise ValueError("fit() needs epochs or steps")
    if loss_fn is None and step_fn is None:
        raise ValueError("fit() needs loss_fn or step_fn")
    step_fn = step_fn or (lambda m, b: default_step(m, b, loss_fn))  # type: ignore[arg-type]
    callbacks = list(callbacks)
    D.setup(str(device))
    model = model.to(device)
    wrapped = D.wrap(model, str(device))
    state = FitState(model=wrapped, optimizer=optimizer)
    state.extra.update(run=run, series=series, callbacks=callbacks, scheduler=scheduler,
                       stateful=list(stateful or ()))

    # mid-stage checkpoints: every fit() in a stage takes the next slot, so a replay finds its own
    host = run if (run is not None and run._stages) else active_run()
    slot = host._next_fit_slot() if host is not None else None
    prog: _Progress | None = None
    skip, pending_rng, restored = 0, None, False
    if slot is not None and stateful is not None:
        _check_resumable(callbacks, stateful)
        st, path = slot
        every_steps = checkpoint_steps if checkpoint_steps is not None else host.checkpoint_steps  # type: ignore[union-attr]
        every_s = checkpoint_seconds if checkpoint_seconds is not None else host.checkpoint_seconds  # type: ignore[union-attr]
        sig = _signature(D.unwrap(wrapped), optimizer, series=series, steps=steps, epochs=epochs,
                         n_callbacks=len(callbacks), n_stateful=len(stateful))
        prog = _Progress(host, st, path, every_steps=every_steps, every_s=every_s, signature=sig)  # type: ignore[arg-type]
        snap = prog.load()
        if snap is not None:
            _restore(state, snap, callbacks, stateful)
            restored = True
            if snap["final"]:  # this fit had finished: its results are restored, nothing is retrained
                _set_rng_state(_rng_of_rank(snap["rng"]))
                st.rows = snap["rows"]
                state.restored = True
                return state
            host._go_live(st, snap["rows"])  # type: ignore[union-attr]
            skip, pending_rng = snap["batch_in_epoch"], snap["rng"]
            state.resumed_from = state.step
        else:
            host._go_live(st, st.rows)  # type: ignore[union-attr]
    elif slot is not None:
        host._go_live(slot[0], slot[0].rows)  # type: ignore[union-attr]  # not resumable: retrains from its start

    ck_name = checkpoint or series or "last"
    if resume and run is not None and not restored:
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
    if prog is not None:
        prog.start(state.step)

    def done() -> bool:
        return state.stop or (steps is not None and state.step >= steps) or (
            epochs is not None and state.epoch >= epochs
        )

    batch_in_epoch = 0
    while not done():
        sampler = getattr(data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.epoch)
        elif hasattr(data, "set_epoch"):
            data.set_epoch(state.epoch)  # type: ignore[attr-defined]
        step_at_epoch_start = state.step - skip
        batches = _batches(data, skip)
        batch_in_epoch, skip = skip, 0
        if pending_rng is not None:  # after the data was positioned (iterating may draw random numbers)
            _set_rng_state(_rng_of_rank(pending_rng))
            pending_rng = None
        for batch in batches:
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
            batch_in_epoch += 1
            state.loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss:.4f}", refresh=False)
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop or (steps is not None and state.step >= steps):
                break
            if prog is not None and prog.due(state.step):
                prog.save(state, batch_in_epoch=batch_in_epoch, final=False)
        else:
            if state.step == step_at_epoch_start:
                raise ValueError("fit(): the data produced no batch in a whole epoch (empty dataset, or drop_last with a batch larger than it)")
            state.epoch += 1
            batch_in_epoch = 0
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
    if prog is not None:
        prog.save(state, batch_in_epoch=batch_in_epoch, final=True)
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
