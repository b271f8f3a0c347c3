"""Physical compaction: remove zeroed channels, neurons and attention heads, keeping outputs equal.

``compact(model, example_inputs)`` captures the model with :func:`torch.export.export` (ATen
level, dynamic batch dimension), runs a channel-liveness analysis over the graph with one
registered handler per ATen op (:mod:`sparseforge.compaction.handlers`), and re-emits the graph
with the removed channels sliced out of every parameter and shape argument.

Removal rule (exact). A layer that produces channels (Conv, Linear, Hugging Face ``Conv1D``,
embedding) starts them; element-wise ops join the channels they combine (a residual add joins
channel ``c`` of both branches, a squeeze-excite gate joins the channel it scales), layout ops
move them (permute, view, cat, split, flatten), BatchNorm / depthwise convs / layer scale carry
them. Every element also carries whether it is the same for every input, and its value: a filter
whose weights are all zero outputs its bias, BatchNorm turns that into ``(b - mean) * gamma /
sqrt(var + eps) + beta``, activations map it, zero padding makes it position-dependent. A channel
is removed iff at **every** Conv/Linear that reads it either

1. the reader's weight slice for the channel is all zero, or
2. the channel is one constant ``k`` at every position and the reader is a Linear, or a Conv
   without zero padding (or ``k == 0``): ``W[:, c] * k`` is then folded into the reader's bias,

and nothing else needs it: channels that reach the model's inputs or outputs, are normalised
together by LayerNorm / softmax / a reduction over channels, or meet an op with no handler are
kept. The removed elements of every tensor must be whole slices (so the graph stays dense);
attention heads go as a whole in q, k and v (a head whose V rows are all zero -- its V bias
folded into the output projection -- or whose output-projection columns are all zero), grouped
convolutions lose the same number of channels in every group, and at least one channel of every
tensor stays. The result is checked against the original on ``example_inputs``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils import _pytree as pytree

from ..errors import TraceError, UserError
from .analysis import Analysis, Mirror
from .capture import call_model, capture, module_of, split_inputs, symbolic_batch
from .handlers import HANDLERS, Handler, handler_for, register_handler
from .report import CompactReport, LayerReport
from .slicing import Rebuild

__all__ = [
    "compact",
    "structural_bound",
    "CompactReport",
    "LayerReport",
    "Handler",
    "HANDLERS",
    "register_handler",
    "handler_for",
]


def _targets_predicate(model: nn.Module, targets: Sequence[str] | str | None) -> Callable[[str], bool] | None:
    """Which producing modules may lose channels: ``targets`` resolved like every method's ``targets=``."""
    if targets is None:
        return None
    pats = [targets] if isinstance(targets, str) else list(targets)
    if not all(isinstance(p, str) for p in pats):
        raise UserError("compact: targets must be module names or glob patterns (strings), e.g. from sparseforge.select")
    try:
        from ..targeting import resolve_targets
    except ImportError:  # pragma: no cover - older checkouts without the shared targeting module
        names = {n for n, _ in model.named_modules() if any(n == p or fnmatch.fnmatchcase(n, p) for p in pats)}
    else:
        names = set(resolve_targets(model, pats, family="compact"))
    return names.__contains__


def _analysis_inputs(gm: fx.GraphModule, flat: list[Any], dynamic: bool) -> list[Any]:
    """The example inputs cut to a batch of 2 where the captured batch dimension is symbolic."""
    if not dynamic:
        return flat
    out = []
    holders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for n, x in zip(holders, flat):
        sym = symbolic_batch(n)
        out.append(x[:2] if sym and isinstance(x, torch.Tensor) and x.shape[0] > 2 else x)
    return out


def _prepare(model: nn.Module, example_inputs: Any, targets: Any, strict: bool, structural: bool) -> tuple:
    if not isinstance(model, nn.Module):
        raise UserError(f"compact: model must be a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = split_inputs(example_inputs)
    pred = _targets_predicate(model, targets)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                reference = model(*args, **kwargs)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"compact: the model fails on example_inputs ({type(exc).__name__}: {first})") from None
        gm, dynamic = capture(model, args, kwargs)
    finally:
        model.train(was_training)
    flat = [x for x in pytree.tree_leaves((args, kwargs))]
    if hasattr(gm, "_in_spec"):
        from torch.fx import _pytree as fx_pytree

        flat = list(fx_pytree.tree_flatten_spec((args, kwargs), gm._in_spec))
    a = Analysis(gm, targets=pred, structural=structural, strict=strict)
    a.run(_analysis_inputs(gm, flat, dynamic))
    a.resolve()
    return args, kwargs, reference, gm, dynamic, a


def compact(
    model: nn.Module,
    example_inputs: Any,
    *,
    targets: Sequence[str] | str | None = None,
    strict: bool = False,
    check: bool = True,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, CompactReport]:
    """Physically remove zeroed filters, neurons, channels and attention heads, with their coupled slices.

    See :mod:`sparseforge.compaction` for the exact removal rule. ``model`` is not modified.

    Args:
        model: any ``nn.Module`` that :func:`torch.export.export` can capture (Hugging Face
            models included); it is captured in eval mode.
        example_inputs: one forward pass's inputs: a tensor, a tuple of positional inputs, or a
            dict of keyword inputs (as Hugging Face models take them). The batch dimension (dim 0)
            is exported as dynamic when the model allows it.
        targets: module names or glob patterns (e.g. from :func:`sparseforge.select`) whose
            output channels may be removed; None: every layer.
        strict: raise :class:`TraceError` on an op with no handler instead of keeping its channels.
        check: compare outputs with the original on ``example_inputs`` (raises on a difference).
        return_report: also return the :class:`CompactReport`.

    Returns:
        A rebuilt :class:`torch.fx.GraphModule` (an inference graph: BatchNorm uses its running
        statistics, dropout is off, ``.train()`` does not change that) with the call signature of
        ``model(*example_inputs)`` / ``model(**example_inputs)``, whose outputs equal the
        original's. Conv and Linear layers are real, smaller ``nn.Conv*d`` / ``nn.Linear``
        modules at their original names; other parameters keep their names in holder modules,
        so ``state_dict()`` keys match. ``result.compact_report`` holds the report; with
        ``return_report`` the result is ``(module, report)``.

    Raises:
        TraceError: the model cannot be captured, an op cannot be sliced, or (``check``) the
            compacted outputs differ -- one line naming the op and the module.
        UserError: malformed ``example_inputs`` or ``targets``.
    """
    args, kwargs, reference, gm, dynamic, a = _prepare(model, example_inputs, targets, strict, False)
    r = Rebuild(a, model, gm)
    small = r.run(f"Compact{type(model).__name__}")
    report = r.report(sum(p.numel() for p in model.parameters()), sum(p.numel() for p in small.parameters()), dynamic)
    if check:
        _check(reference, small, args, kwargs, gm, r, a)
    small.compact_report = report  # type: ignore[attr-defined]
    return (small, report) if return_report else small


def structural_bound(model: nn.Module, example_inputs: Any, *, targets: Sequence[str] | str | None = None) -> int:
    """Parameters left if every zeroed channel went with its coupled slices, exact or not.

    Zeroed channels (all-zero weight slices) are removed regardless of the biases, BatchNorm
    shifts and LayerNorms that keep them alive in :func:`compact`; structure (residual partners,
    whole heads, equal groups, model inputs/outputs) is respected. The gap to ``compact``'s count
    is what exactness costs; the report's ``kept_alive`` says why.
    """
    args, kwargs, _, gm, _, a = _prepare(model, example_inputs, targets, False, True)
    small = Rebuild(a, model, gm).run("Structural")
    return sum(p.numel() for p in small.parameters())


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _max_diff(ref: Any, got: Any) -> tuple[float, float]:
    ya, yb = _flat_tensors(ref), _flat_tensors(got)
    if len(ya) != len(yb):
        return float("inf"), 1.0
    err, tol = 0.0, 0.0
    for u, v in zip(ya, yb):
        if u.shape != v.shape:
            return float("inf"), 1.0
        if u.is_floating_point() and u.numel():
            err = max(err, float((u - v).abs().max()))
            tol = max(tol, 1e-4 * (1.0 + float(u.abs().max())))
        elif not torch.equal(u, v):
            return float("inf"), 1.0
    return err, tol


def _check(reference: Any, small: fx.GraphModule, args: tuple, kwargs: dict, gm: fx.GraphModule, r: Rebuild, a: Analysis) -> None:
    with torch.no_grad():
        got = small(*args, **kwargs)
    err, tol = _max_diff(reference, got)
    if err <= tol:
        return
    where = _locate(gm, small, args, kwargs, r, a)
    raise TraceError(
        f"compact: the compacted model's outputs differ by {err:.3g}{where}; this is a bug in that op's "
        "handler: pass targets= to leave that layer out or check=False to skip the check, and please report it"
    )


def _locate(gm: fx.GraphModule, small: fx.GraphModule, args: tuple, kwargs: dict, r: Rebuild, a: Analysis) -> str:
    """`` at aten.op in 'module' (Class)``: the first node whose claimed constants or kept values are wrong."""
    from torch.fx import _pytree as fx_pytree

    for n in gm.graph.nodes:  # a handler that claimed a constant the example contradicts
        m, real = a._mir.get(n), a.real.get(n)
        if n.op != "call_function" or not isinstance(m, Mirror) or not isinstance(real, torch.Tensor):
            continue
        if real.is_floating_point() and bool(m.mask.any()):
            u, v = real.double()[m.mask], m.value.double()[m.mask]
            if float((u - v).abs().max()) > 1e-4 * (1 + float(u.abs().max())):
                return f" first at {a.where(n)} (its handler claims constants the example contradicts)"

    class Rec(fx.Interpreter):
        def __init__(self, m: fx.GraphModule) -> None:
            super().__init__(m)
            self.vals: dict[str, Any] = {}

        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            self.vals[n.name] = out.clone() if isinstance(out, torch.Tensor) else out  # later ops may be in-place
            return out

    try:
        ra, rb = Rec(gm), Rec(small)
        with torch.no_grad():
            ra.run(*fx_pytree.tree_flatten_spec((args, kwargs), gm._in_spec))
            rb.run(*fx_pytree.tree_flatten_spec((args, kwargs), small._in_spec))
        for n in gm.graph.nodes:
            new = r.env.get(n)
            if n.op != "call_function" or not isinstance(new, fx.Node) or new.name not in rb.vals:
                continue
            u, v = ra.vals.get(n.name), rb.vals[new.name]
            if not isinstance(u, torch.Tensor) or not isinstance(v, torch.Tensor) or not u.is_floating_point():
                continue
            for d, k in enumerate(r.keep(n)):
                if k is not None and d < u.dim():
                    u = u.index_select(d, k.to(u.device))
            if u.shape != v.shape or float((u - v).abs().max()) > 1e-4 * (1 + float(u.abs().max())):
                return f" first at {a.where(n)}"
    except Exception:  # the diagnosis is best effort
        return ""
    return ""


# re-exported helpers
_ = (Mirror, module_of, call_model, TraceError)
