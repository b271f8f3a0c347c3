"""Capture a model as an ATen graph with :func:`torch.export.export` (dynamic batch dimension).

Export runs the model's Python once on fake tensors, so Python control flow on shapes
(``int(x.shape[-2])``, ``if h % s == 0:``, ``(*input_shape, -1, d)``) is specialised and
Hugging Face modules capture as they are. The graph is functionalised
(``run_decompositions({})``: in-place ops become out-of-place, dropout in eval mode an identity)
but keeps the high-level ops (``conv2d``, ``linear``, ``layer_norm``,
``scaled_dot_product_attention``) that the handler table reasons about. What export cannot
capture (control flow on tensor *values*) becomes a one-line :class:`TraceError` naming the
module and the line of code.
"""

from __future__ import annotations

import contextlib
import re
import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import TraceError, UserError

__all__ = ["capture", "split_inputs", "module_of", "call_model", "symbolic_batch"]


def split_inputs(example_inputs: Any) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` from a tensor, a tuple/list of positional inputs or a dict of keyword inputs."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        return tuple(example_inputs), {}
    raise UserError(
        f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"got {type(example_inputs).__name__}"
    )


def call_model(model: Any, example_inputs: Any) -> Any:
    """Call ``model`` with ``example_inputs`` as :func:`split_inputs` reads them."""
    args, kwargs = split_inputs(example_inputs)
    return model(*args, **kwargs)


def _batch_dims(args: tuple, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``dynamic_shapes`` marking dim 0 of every tensor input as a free (AUTO) dimension."""
    auto = torch.export.Dim.AUTO

    def spec(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return {0: auto} if x.dim() >= 1 else None
        if isinstance(x, (list, tuple)):
            return type(x)(spec(v) for v in x)
        if isinstance(x, dict):
            return {k: spec(v) for k, v in x.items()}
        return None

    return tuple(spec(a) for a in args), {k: spec(v) for k, v in kwargs.items()}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _user_code(exc: BaseException) -> str:
    """`` at `code` (file:line)`` for the user's line that failed, if the error names one."""
    text = str(exc)
    m = re.search(r'File "([^"]+)", line (\d+), in \w+\n\s*(.+)', text)
    if m and "/torch/" not in m.group(1).replace("\\", "/"):
        return f" at `{m.group(3).strip()}` ({m.group(1).rsplit('/', 1)[-1]}:{m.group(2)})"
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if "/torch/" not in f.filename.replace("\\", "/") and "/sparseforge/compaction/" not in f.filename
    ]  # fmt: skip
    if frames:
        f = frames[-1]
        return f" at `{(f.line or '').strip()}` ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
    return ""


def _failing_module(model: nn.Module, exc: BaseException) -> tuple[str, str]:
    """Name and class of the innermost submodule of ``model`` on the exception's stack."""
    names = {id(m): n for n, m in model.named_modules()}
    found = ("", type(model).__name__)
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in names:
            found = (names[id(obj)], type(obj).__name__)
        tb = tb.tb_next
    return found


@contextlib.contextmanager
def _quiet() -> Any:
    import logging

    loggers = [logging.getLogger(n) for n in ("torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes", "torch.__trace")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def capture(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[fx.GraphModule, bool]:
    """Export ``model`` (in eval mode) to a functional ATen graph with a dynamic batch dimension.

    Returns:
        ``(graph_module, dynamic_batch)``: the unlifted graph module (parameters as ``get_attr``
        nodes at their original names, the call signature of ``model(*args, **kwargs)``), and
        whether dim 0 of the inputs stayed symbolic (export specialises it when the model's code
        depends on the batch size).

    Raises:
        TraceError: export failed; one line naming the module, the line of code and the cause.
    """
    dyn_args, dyn_kwargs = _batch_dims(args, kwargs)
    try:
        with _quiet(), torch.no_grad():
            try:
                ep = torch.export.export(
                    model, args, kwargs or None, dynamic_shapes=_as_dynamic_shapes(model, dyn_args, dyn_kwargs),
                    strict=False,
                )
            except Exception:
                # A batch dimension export cannot keep symbolic (e.g. batch 1): capture it static.
                ep = torch.export.export(model, args, kwargs or None, strict=False)
            ep = ep.run_decompositions({})
            gm = ep.module()
    except Exception as exc:  # export raises many types (UserError, GuardOnDataDependentSymNode, ...)
        name, cls = _failing_module(model, exc)
        raise TraceError(
            f"compact: torch.export cannot capture module '{name or '<root>'}' ({cls}){_user_code(exc)}: "
            f"{_first_line(exc)}; make its forward exportable (no control flow on tensor values) "
            "or compact a capturable sub-module"
        ) from None
    dynamic = any(n.op == "placeholder" and symbolic_batch(n) for n in gm.graph.nodes)
    return gm, dynamic


def symbolic_batch(node: fx.Node) -> bool:
    """Whether placeholder ``node``'s dim 0 stayed a free symbol (not specialised to the example's size)."""
    v = node.meta.get("val")
    if not isinstance(v, torch.Tensor) or v.dim() == 0:
        return False
    s = v.shape[0]
    return isinstance(s, torch.SymInt) and bool(getattr(s.node.expr, "free_symbols", ()))


def _as_dynamic_shapes(model: nn.Module, dyn_args: tuple, dyn_kwargs: dict[str, Any]) -> Any:
    """``dynamic_shapes`` in the form export expects: a dict keyed by ``forward``'s parameter names."""
    import inspect

    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out: dict[str, Any] = {}
    if len(dyn_args) > len(params):
        var = [p for p in sig.parameters.values() if p.kind is p.VAR_POSITIONAL]
        if not var:
            return None
        out.update({p.name: s for p, s in zip(params, dyn_args)})
        out[var[0].name] = tuple(dyn_args[len(params) :])
    else:
        out.update({p.name: s for p, s in zip(params, dyn_args)})
    for k, v in dyn_kwargs.items():
        if k in sig.parameters:
            out[k] = v
        else:
            var_kw = [p for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD]
            if not var_kw:
                return None
            out.setdefault(var_kw[0].name, {})[k] = v
    return out


def module_of(node: fx.Node) -> tuple[str, str]:
    """``(module path, class name)`` of the innermost module that ran ``node`` (export's ``nn_module_stack``)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    if path.startswith("L['self']") or "_empty_nn_module_stack" in str(path):
        return "", ""
    cls_name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return str(path), cls_name
