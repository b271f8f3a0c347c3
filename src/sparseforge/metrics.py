"""Size, compute and speed of a model: parameters, non-zeros, dense and effective FLOPs, latency.

* ``flops``: dense FLOPs of one forward pass on ``example_inputs`` (the whole batch), counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2 FLOPs, so a
  Linear layer costs ``2 * in * out * batch``).
* ``effective_flops``: the same count in which the FLOPs of every module that owns a ``weight``
  are scaled by that weight's density (non-zeros / numel); FLOPs outside such modules (attention
  matmuls, functional ops on parameters) are counted in full. This is the usual estimate of what
  a sparse kernel would execute; for structured sparsity after :func:`sparseforge.compact` the
  dense count of the compacted model is the exact figure.
* ``latency_ms``: median wall time of repeated forward passes after warm-up, in eval mode under
  ``torch.no_grad()``, timed with ``time.perf_counter`` (CUDA is synchronised around each run).

Inputs are a tensor, a tuple of positional inputs, or a dict of keyword inputs (as Hugging Face
models take them). A compiled or deployed model (``torch.compile``'s wrapper,
:class:`sparseforge.deploy.Deployed`) is *timed* as it runs, while its parameters and FLOPs are
counted on the eager module it wraps (compiled kernels are invisible to the FLOP counter).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "eager_module",
    "count_params",
    "count_nonzero",
    "flops",
    "effective_flops",
    "latency_ms",
    "summary",
    "per_layer",
    "compare_latency",
]


class _Inputs:
    """Positional and keyword inputs of one forward pass."""

    def __init__(self, example_inputs: Any) -> None:
        if isinstance(example_inputs, _Inputs):
            self.args, self.kwargs = example_inputs.args, example_inputs.kwargs
        elif isinstance(example_inputs, torch.Tensor):
            self.args, self.kwargs = (example_inputs,), {}
        elif isinstance(example_inputs, Mapping):
            self.args, self.kwargs = (), dict(example_inputs)
        else:
            self.args, self.kwargs = tuple(example_inputs), {}

    def __call__(self, model: Any) -> Any:
        return model(*self.args, **self.kwargs)

    def tensors(self) -> list[torch.Tensor]:
        return [x for x in (*self.args, *self.kwargs.values()) if isinstance(x, torch.Tensor)]


def _as_tuple(example_inputs: Any) -> _Inputs:
    return _Inputs(example_inputs)


def eager_module(model: nn.Module) -> nn.Module:
    """The eager module behind a compiled / deployed model (``model`` itself otherwise)."""
    seen = 0
    while seen < 8:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and type(model).__name__ == "Deployed":
            inner = getattr(model, "eager", None)
        if not isinstance(inner, nn.Module):
            return model
        model, seen = inner, seen + 1
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in eager_module(model).parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of non-zero parameter entries."""
    return sum(int(torch.count_nonzero(p.detach())) for p in eager_module(model).parameters())


class _Eval:
    """Context: eval mode and no_grad, restoring the training flag afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> nn.Module:
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _flop_counts(model: nn.Module, inputs: _Inputs) -> tuple[int, dict[str, int]]:
    """Total FLOPs and FLOPs per module name (each module's own subtree, root excluded)."""
    model = eager_module(model)
    counter = FlopCounterMode(display=False)
    with _Eval(model), counter:
        inputs(model)
    root = type(model).__name__
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = "" if key == root else key[len(root) + 1 :] if key.startswith(root + ".") else None
        if name is not None:
            per_module[name] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_module


def flops(model: nn.Module, example_inputs: Any) -> int:
    """Dense FLOPs of one forward pass on ``example_inputs`` (whole batch)."""
    return _flop_counts(model, _as_tuple(example_inputs))[0]


def _effective(model: nn.Module, total: int, per_module: dict[str, int]) -> float:
    saved = 0.0
    for name, m in eager_module(model).named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.numel() == 0 or name not in per_module:
            continue
        if any(isinstance(getattr(c, "weight", None), torch.Tensor) for c in m.children()):
            continue  # only leaf weight owners, so nested modules are not counted twice
        density = float(torch.count_nonzero(w.detach())) / w.numel()
        saved += per_module[name] * (1.0 - density)
    return total - saved


def effective_flops(model: nn.Module, example_inputs: Any) -> float:
    """FLOPs with each weight-owning module's FLOPs scaled by its weight density."""
    total, per_module = _flop_counts(model, _as_tuple(example_inputs))
    return _effective(model, total, per_module)


def _sync(inputs: _Inputs) -> None:
    for x in inputs.tensors():
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
            return


def _time_once(model: nn.Module, inputs: _Inputs) -> float:
    _sync(inputs)
    t0 = time.perf_counter()
    inputs(model)
    _sync(inputs)
    return (time.perf_counter() - t0) * 1e3


def latency_ms(model: nn.Module, example_inputs: Any, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median forward time in milliseconds (eval mode, no_grad) over ``repeats`` after ``warmup``."""
    return compare_latency({"m": model}, example_inputs, repeats=repeats, warmup=warmup)["m"]


def compare_latency(
    models: Mapping[str, nn.Module], inputs: Any, *, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median forward latency (ms) of several models, timed in one interleaved loop.

    Each round runs every model once, in a rotating order, so that slow drifts of the machine
    (frequency scaling, other processes) hit all models alike.

    Args:
        models: name -> model (compiled and deployed models are timed as they run).
        inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs, fed to every model.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        name -> median latency in milliseconds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    args = _as_tuple(inputs)
    names = list(models)
    samples: dict[str, list[float]] = {n: [] for n in names}
    states = {n: m.training for n, m in models.items()}
    try:
        for m in models.values():
            m.eval()
        with torch.no_grad():
            for _ in range(warmup):
                for n in names:
                    args(models[n])
            for r in range(repeats):
                k = r % len(names)
                for n in names[k:] + names[:k]:
                    samples[n].append(_time_once(models[n], args))
    finally:
        for n, m in models.items():
            m.train(states[n])
    return {n: float(statistics.median(v)) for n, v in samples.items()}


def summary(
    model: nn.Module, example_inputs: Any, *, latency: bool = True, repeats: int = 20, warmup: int = 3
) -> dict[str, float | int]:
    """Params, non-zero params, dense and effective FLOPs, and (optionally) latency.

    Args:
        model: any module (not modified; its training flag is restored); a compiled or deployed
            model is timed as it runs, its parameters and FLOPs counted on the eager module.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs
            (FLOPs and latency are per this batch).
        latency: measure ``latency_ms`` (set False for a cheap, deterministic summary).
        repeats: timed forward passes for the latency median.
        warmup: untimed forward passes first.

    Returns:
        ``{"params", "nonzero_params", "flops", "effective_flops", "latency_ms"}``
        (``latency_ms`` is ``nan`` when ``latency=False``).
    """
    inputs = _as_tuple(example_inputs)
    total, per_module = _flop_counts(model, inputs)
    return {
        "params": count_params(model),
        "nonzero_params": count_nonzero(model),
        "flops": total,
        "effective_flops": _effective(model, total, per_module),
        "latency_ms": latency_ms(model, inputs, repeats=repeats, warmup=warmup) if latency else float("nan"),
    }


def per_layer(model: nn.Module, *, min_dim: int = 2) -> list[dict[str, Any]]:
    """One row per weight tensor (``dim >= min_dim``) for per-layer sparsity plots and tables.

    Returns:
        Rows ``{"name", "shape", "params", "nonzero", "density"}`` in module order, ``name``
        being the parameter's name (e.g. ``"features.0.weight"``).
    """
    rows = []
    for name, p in model.named_parameters():
        if p.dim() < min_dim:
            continue
        nz = int(torch.count_nonzero(p.detach()))
        rows.append(
            {
                "name": name,
                "shape": tuple(p.shape),
                "params": p.numel(),
                "nonzero": nz,
                "density": nz / p.numel() if p.numel() else 0.0,
            }
        )
    return rows
