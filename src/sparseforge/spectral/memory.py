"""Memory accounting for spectral methods (Zhao et al., arXiv:2405.15481, the memory analysis of its Sec. 3).

Per layer (m = out, n = in, k = min(m, n), r = rank):
    SST      trainable = r(m + n) + k (+ bias), stored = k(m + n) + k (+ bias)
    LoRA     trainable = r(m + n) (+ bias),     stored = mn + r(m + n) (+ bias)
    GaLore   trainable = mn (+ bias),           Adam state = 2 * (m r if m >= n else r n)
    full     trainable = mn (+ bias),           Adam state = 2 * mn
Gradient bytes = trainable elements x element size (gradients exist for trainable tensors only).
Optimizer-state bytes are *measured* from ``optimizer.state`` when an optimizer is given
(every tensor, step counters and GaLore projectors included).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn


def _is_linear_like(m: nn.Module) -> bool:
    from .family import record_of

    return isinstance(m, nn.Linear) or record_of(m) is not None


def _state_bytes(optimizer: torch.optim.Optimizer | None, params: list[nn.Parameter]) -> int:
    if optimizer is None:
        return 0
    total = 0
    for p in params:
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def layer_memory(module: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Trainable params, stored params, gradient bytes and optimizer-state bytes of one module (own params).

    ``exclude`` leaves parameters out by attribute name (``("bias",)``: the weights alone, as in the paper's Γ).
    """
    params = [p for n, p in module.named_parameters(recurse=False) if n not in exclude]
    train = [p for p in params if p.requires_grad]
    buffers = list(module.buffers(recurse=False))
    stored = sum(p.numel() for p in params) + sum(b.numel() for b in buffers if b.is_floating_point())
    return {
        "trainable_params": sum(p.numel() for p in train),
        "stored_params": stored,
        "grad_bytes": sum(p.numel() * p.element_size() for p in train),
        "optimizer_state_bytes": _state_bytes(optimizer, train),
    }


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Per linear-type layer accounting plus model totals (``layers`` and ``total`` keys)."""
    layers = {n: {"type": type(m).__name__, **layer_memory(m, optimizer)}
              for n, m in model.named_modules() if _is_linear_like(m)}
    train = [p for p in model.parameters() if p.requires_grad]
    total = {
        "trainable_params": sum(p.numel() for p in train),
        "params": sum(p.numel() for p in model.parameters()),
        "grad_bytes": sum(p.numel() * p.element_size() for p in train),
        "optimizer_state_bytes": _state_bytes(optimizer, train),
    }
    return {"layers": layers, "total": total}


def analytic_trainable(m: int, n: int, r: int, method: str, *, bias: bool = True) -> int:
    """Trainable element count of one m x n layer under ``method`` (the method's record says how)."""
    from ..registry import METHODS

    return METHODS.resolve(method, "spectral").trainable_params(m, n, r, bias=bias)


def step_peak_memory(model: nn.Module, optimizer: torch.optim.Optimizer, step_fn: Any, batch: Any, *,
                     device: str = "cpu") -> int:
    """Peak bytes of one training step ``step_fn(model, batch).backward(); optimizer.step()``.

    A first step runs untracked so the optimizer state exists; the second is measured with :class:`PeakMemory`
    (weights, optimizer state and the largest transient: activations, gradients, temporaries).
    """
    for i in range(2):
        optimizer.zero_grad(set_to_none=True)
        if i == 1:
            with PeakMemory(baseline_tensors=state_tensors(model, optimizer), device=device) as pm:
                step_fn(model, batch).backward()
                optimizer.step()
        else:
            step_fn(model, batch).backward()
            optimizer.step()
    return pm.peak_bytes


__all__ = ["PeakMemory", "analytic_trainable", "layer_memory", "memory_report", "state_tensors", "step_peak_memory"]


class PeakMemory:
    """Peak bytes of torch tensors during a block of work, on any device.

    On CUDA this is the rise of ``torch.cuda.max_memory_allocated`` over the allocation at entry (peak stats reset
    at entry), plus the bytes of ``baseline_tensors``. Elsewhere (CPU) a
    ``TorchDispatchMode`` records every storage created inside the block and a weakref finaliser
    subtracts it when freed; the peak of that live total is added to the bytes already held at
    entry by ``tensors`` (typically the model's parameters, buffers and optimizer state), so
    ``peak_bytes`` = weights + state + the largest transient (activations, gradients, temporaries).
    tracemalloc cannot see torch's CPU allocations, hence this tracker.
    """

    def __init__(self, *, baseline_tensors: list[torch.Tensor] = (), device: str = "cpu") -> None:  # type: ignore[assignment]
        self.device = str(device)
        seen: dict[int, int] = {}
        for t in baseline_tensors:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        self.baseline = sum(seen.values())
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._cuda0 = torch.cuda.memory_allocated()
            return self
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self
        tracker._live, tracker._peak = 0, 0
        tracker._ids: set[int] = set()

        def _free(key: int, n: int) -> None:
            tracker._ids.discard(key)
            tracker._live -= n

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and not t.is_meta:
                        st = t.untyped_storage()
                        key = id(st)
                        if key not in tracker._ids and st.nbytes() > 0:
                            tracker._ids.add(key)
                            tracker._live += st.nbytes()
                            tracker._peak = max(tracker._peak, tracker._live)
                            weakref.finalize(st, _free, key, st.nbytes())
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            # the growth over what was allocated at entry (other models on the device do not count), plus the
            # bytes of ``baseline_tensors``: the same quantity as on CPU
            self.peak_bytes = int(self.baseline + max(0, torch.cuda.max_memory_allocated() - self._cuda0))
            return
        self._mode.__exit__(*exc)
        self.peak_bytes = int(self.baseline + self._peak)


def state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
    """Parameters, buffers, gradients and optimizer-state tensors (for :class:`PeakMemory`)."""
    out = list(model.parameters()) + list(model.buffers())
    out += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        out += [v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    return out
