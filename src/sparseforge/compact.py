"""Physical compaction: remove all-zero groups and their coupled slices, keeping outputs equal.

``compact(model, example_inputs)`` traces the model with torch.fx and reasons about *channel
spaces*: sets of tensors in the graph that share one channel indexing. A space starts at the
output of a Conv2d (``groups == 1``) or Linear, or at several of them joined by a residual
addition, and is carried unchanged through channel-wise ops (BatchNorm in eval mode, element-wise
activations, pooling, dropout, depthwise convolutions, additions of same-shaped tensors). Its
members are

* **producers** -- Conv2d/Linear layers whose output channels index the space;
* **per-channel layers** -- BatchNorm entries and depthwise filters (``groups == channels``,
  which couple a channel's input and output);
* **consumers** -- Conv2d/Linear layers reading the space as their input channels/features;
* **flatten children** -- ``Flatten`` of an ``(N, C, H, W)`` member creates a feature space in
  which channel ``c`` owns the columns ``c*H*W ... (c+1)*H*W - 1``.

A space that reaches the model's inputs or outputs, or any op this module does not model
(attention, embeddings, concatenation, reshapes, tensor-tensor products, shape queries, ...), is
*pinned* and never changed, so compaction cannot alter outputs of models it does not understand.

Removal rule (exact, documented). For every channel ``c`` of a space we propagate a *constant*
through the graph: a producer whose weight row is all zero outputs the constant ``bias[c]`` (0
without bias) at every position; BatchNorm maps a constant ``k`` to ``(k - mean) * gamma /
sqrt(var + eps) + beta`` (generally *not* zero); element-wise activations map ``k`` to ``act(k)``;
max/adaptive pooling keep constants; an addition adds the constants of its branches (a channel is
constant after a residual add only if it is constant in every branch); a depthwise filter that is
all zero outputs its bias. Channel ``c`` is removed -- from every producer, BatchNorm, depthwise
conv and consumer of the space -- iff, at **every** consumer, either

1. the consumer's input slice for ``c`` is all zero (the channel's value does not matter), or
2. ``c`` is the constant ``k`` at the consumer's input and the consumer is a Linear, a Conv2d
   without zero padding (or with ``k == 0``): its contribution ``sum(W[:, c]) * k`` is then the
   same at every output position and is folded into the consumer's bias.

A constant channel feeding a zero-padded conv contributes a position-dependent term at the
borders, so with ``k != 0`` it is kept. Flatten children must agree for all ``H*W`` columns of
``c``. At least one channel of each space is always kept. The result is checked against the
original on ``example_inputs``.

The returned model is a :class:`torch.fx.GraphModule` whose Conv2d/Linear/BatchNorm modules are
real, smaller ``nn`` modules; ``result.compact_report`` (a :class:`CompactReport`) records which
groups were removed, in the format of :func:`sparseforge.masks.save_sparsity`'s ``removed``.
"""

from __future__ import annotations

import linecache
import operator
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import TraceError

__all__ = ["CompactReport", "compact"]


@dataclass
class CompactReport:
    """What :func:`compact` removed, in original (uncompacted) indices.

    Attributes:
        removed: output channels / neurons removed per module (Conv2d/Linear filters, BatchNorm
            entries, depthwise filters), e.g. ``{"features.0": [3, 7]}``.
        inputs_removed: input channels / features removed per consumer Conv2d/Linear.
        folded: per consumer, removed input channels whose constant value was folded into its bias.
        params_before: parameter count of the original model.
        params_after: parameter count of the compacted model.
    """

    removed: dict[str, list[int]] = field(default_factory=dict)
    inputs_removed: dict[str, list[int]] = field(default_factory=dict)
    folded: dict[str, list[int]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0


# ----------------------------------------------------------------------------------------------
# Tracing
# ----------------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """fx tracer that remembers which module was being traced when tracing failed.

    Buffers are traced as ``get_attr`` nodes (so ``self.mask[:T]`` with a traced ``T`` works),
    and Python control flow on shapes is specialised to the example inputs' shapes.
    """

    proxy_buffer_attributes = True

    def __init__(self, example_inputs: tuple = ()) -> None:
        super().__init__()
        self._stack: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None
        self.example_inputs = example_inputs
        self.specialized: list[str] = []

    def to_bool(self, obj: fx.Proxy) -> bool:
        """Python control flow on a traced value: allowed when it depends on shapes only.

        The branch is then specialised to the shapes of ``example_inputs`` (recorded in
        ``self.specialized``); control flow on tensor *values* still fails.
        """
        node = obj.node
        if not self.example_inputs or not _depends_on_shapes_only(node):
            return super().to_bool(obj)
        value = bool(self._evaluate(node))
        self.specialized.append(f"{node.format_node()} -> {value}")
        return value

    def _evaluate(self, node: fx.Node) -> Any:
        """Evaluate ``node`` of the partially built graph on ``example_inputs``."""
        need: set[fx.Node] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if n not in need:
                need.add(n)
                stack.extend(n.all_input_nodes)
        env: dict[fx.Node, Any] = {}
        inputs = iter(self.example_inputs)
        with torch.no_grad():
            for n in self.graph.nodes:
                if n.op == "placeholder":
                    env[n] = next(inputs, None)
                if n not in need or n.op == "placeholder":
                    continue
                args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: env[a])
                if n.op == "get_attr":
                    env[n] = _get_attr(self.root, n.target)
                elif n.op == "call_module":
                    env[n] = self.root.get_submodule(n.target)(*args, **kwargs)
                elif n.op == "call_function":
                    env[n] = n.target(*args, **kwargs)
                elif n.op == "call_method":
                    env[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
                if n is node:
                    break
        return env[node]

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            name = self.path_of_module(m)
        except NameError:
            name = "?"
        self._stack.append((name, type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self._stack[-1]
            raise
        finally:
            self._stack.pop()


_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda"}


def _depends_on_shapes_only(node: fx.Node) -> bool:
    """Whether ``node`` reads its tensor ancestors only through their shapes (not values)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_method" and n.target in ("size", "dim"):
            stack.extend(a for a in n.all_input_nodes if a is not n.args[0])
            continue
        if n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS:
            continue
        if n.op in ("placeholder", "get_attr", "call_module"):
            return False
        stack.extend(n.all_input_nodes)
    return True


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _user_frame(exc: BaseException) -> str:
    """``file:line `code``` of the innermost traceback frame outside torch, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename.replace("\\", "/")]
    frames = [f for f in frames if f.filename != __file__]
    if not frames:
        return ""
    f = frames[-1]
    code = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return f" at `{code}` ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"


def _trace(model: nn.Module, example_inputs: tuple = ()) -> fx.GraphModule:
    tracer = _Tracer(example_inputs)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        name, cls = tracer.failed_in or ("", type(model).__name__)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TraceError(
            f"compact: torch.fx cannot trace module '{name or '<root>'}' ({cls}){_user_frame(exc)}: {first}; "
            "make its forward traceable (no data-dependent control flow) or compact a traceable sub-module"
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and stores each tensor node's shape in ``node.meta['sf_shape']``."""

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        n.meta["sf_shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


# ----------------------------------------------------------------------------------------------
# Op tables
# ----------------------------------------------------------------------------------------------

_ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
)  # fmt: skip
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)
_CONST_POOL_MODULES = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
_ACT_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.softplus,
}  # fmt: skip
_ACT_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone"}
_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


def _is_inplace(n: fx.Node, m: nn.Module | None = None) -> bool:
    """Whether node ``n`` overwrites its first input."""
    if m is not None:
        return bool(getattr(m, "inplace", False))
    if n.op == "call_method" and isinstance(n.target, str) and n.target.endswith("_"):
        return True
    return n.target in _INPLACE_OPERATORS or bool(n.kwargs.get("inplace", False))


def _safe_inplace(n: fx.Node, x: fx.Node) -> bool:
    """An in-place op is modelled as out-of-place only if nothing else reads (or aliases) ``x``.

    Otherwise another user of ``x`` would see the overwritten values while the analysis assumes
    the original ones.
    """
    aliased = x.op in ("call_function", "call_method") and x.target in ("view", "reshape", "flatten", torch.flatten)
    return len(x.users) == 1 and not aliased and x.op != "placeholder"


_CONST_POOL_FUNCTIONS = {F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.max_pool2d}
_ADD_TARGETS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_SUB_TARGETS = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
_MUL_TARGETS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV_TARGETS = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}


def _is_tensor_node(a: Any) -> bool:
    return isinstance(a, fx.Node) and a.meta.get("sf_shape") is not None


def _tensor_inputs(n: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((n.args, n.kwargs), lambda a: out.append(a) if _is_tensor_node(a) else None)
    return out


def _has_zero_padding(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` pads with zeros somewhere (a constant input is then not constant after it)."""
    if conv.padding_mode != "zeros":
        return False  # reflect / replicate / circular padding of a constant is the same constant
    if isinstance(conv.padding, str):
        return conv.padding == "same" and any(k > 1 for k in conv.kernel_size)
    return any(p > 0 for p in conv.padding)


# ----------------------------------------------------------------------------------------------
# Channel spaces
# ----------------------------------------------------------------------------------------------


class _Spaces:
    """Union-find over graph nodes; each class is one channel space."""

    def __init__(self) -> None:
        self.parent: dict[fx.Node, fx.Node] = {}
        self.size: dict[fx.Node, int] = {}
        self.axis: dict[fx.Node, int] = {}
        self.pinned: set[fx.Node] = set()

    def add(self, n: fx.Node, axis: int | None) -> None:
        shape = n.meta["sf_shape"]
        self.parent[n] = n
        if axis is None or len(shape) < 2:
            self.axis[n], self.size[n] = -1, 0
            self.pinned.add(n)
        else:
            self.axis[n] = axis % len(shape)
            self.size[n] = int(shape[self.axis[n]])

    def find(self, n: fx.Node) -> fx.Node:
        while self.parent[n] is not n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def union(self, a: fx.Node, b: fx.Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return
        self.parent[rb] = ra
        if self.size[ra] != self.size[rb] or rb in self.pinned:
            self.pinned.add(ra)

    def pin(self, n: fx.Node) -> None:
        self.pinned.add(self.find(n))

    def is_pinned(self, n: fx.Node) -> bool:
        return self.find(n) in self.pinned


@dataclass
class _Const:
    """Per-channel constant of a node: ``mask[c]`` says channel c is the constant ``value[c]``."""

    mask: torch.Tensor  # (C,) bool
    value: torch.Tensor  # (C,) float64

    @staticmethod
    def none(c: int) -> _Const:
        return _Const(torch.zeros(c, dtype=torch.bool), torch.zeros(c, dtype=torch.float64))


@dataclass
class _Plan:
    """Everything attached to one channel space."""

    producers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)  # BatchNorm / depthwise conv
    consumers: list[tuple[str, fx.Node]] = field(default_factory=list)
    flatten_children: list[tuple[fx.Node, int]] = field(default_factory=list)  # (child root, H*W)
    flatten_parents: int = 0


class _Analysis:
    """Builds channel spaces and per-channel constants for a traced, shape-annotated graph."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.mods = dict(gm.named_modules())
        self.sp = _Spaces()
        self.const: dict[fx.Node, _Const] = {}
        self.kind: dict[str, str] = {}  # module name -> "conv" | "linear" | "bn" | "dw"
        calls: dict[str, int] = {}
        for n in gm.graph.nodes:
            if n.op == "call_module":
                calls[n.target] = calls.get(n.target, 0) + 1
        self.shared = {k for k, v in calls.items() if v > 1}
        self.consumer_of: dict[str, fx.Node] = {}  # module -> its input node
        self.producer_out: dict[str, fx.Node] = {}
        self.per_channel_node: dict[str, fx.Node] = {}
        self.flatten_links: list[tuple[fx.Node, fx.Node, int]] = []  # (input, output, hw)
        for n in gm.graph.nodes:
            self._visit(n)

    # -- helpers ---------------------------------------------------------------------------------
    def _c(self, n: fx.Node) -> int:
        return self.sp.size[n]

    def _unknown(self, n: fx.Node) -> None:
        for a in _tensor_inputs(n):
            self.sp.pin(a)
        if _is_tensor_node(n):
            self.sp.add(n, None)
            self.sp.pin(n)
            self.const[n] = _Const.none(0)

    def _new(self, n: fx.Node, axis: int) -> None:
        self.sp.add(n, axis)
        self.const[n] = _Const.none(self._c(n))

    def _same(self, n: fx.Node, src: fx.Node, fn: Callable[[torch.Tensor], torch.Tensor] | None, zero_only=False):
        """``n`` has ``src``'s channels; constants map through ``fn`` (None: identity)."""
        if n.meta["sf_shape"] is None or len(n.meta["sf_shape"]) != len(src.meta["sf_shape"]):
            return self._unknown(n)
        self._new(n, self.sp.axis[src] if self.sp.axis[src] >= 0 else 1)
        self.sp.union(src, n)
        c = self.const[src]
        if c.mask.numel() != self._c(n):
            return
        value = c.value if fn is None else fn(c.value.clone())
        mask = c.mask & torch.isfinite(value)
        if zero_only:
            mask = mask & (value == 0)
        self.const[n] = _Const(mask, torch.where(mask, value, torch.zeros_like(value)))

    def _shape_ok(self, n: fx.Node, ndim: int, axis: int) -> bool:
        s = n.meta["sf_shape"]
        return s is not None and len(s) == ndim and self.sp.axis.get(n, -1) == axis % ndim

    # -- graph walk ------------------------------------------------------------------------------
    def _visit(self, n: fx.Node) -> None:
        if n.op == "placeholder":
            if _is_tensor_node(n):
                self._new(n, 1)
                self.sp.pin(n)
            return
        if n.op == "output":
            for a in _tensor_inputs(n):
                self.sp.pin(a)
            return
        if n.op == "get_attr":
            if _is_tensor_node(n):
                self._unknown(n)
            return
        if not _is_tensor_node(n):
            # Shape queries etc.: conservatively pin inputs unless it is x.size(0) / x.dim().
            safe = n.op == "call_method" and (
                (n.target == "size" and len(n.args) == 2 and n.args[1] == 0) or n.target == "dim"
            )
            if not safe:
                self._unknown(n)
            return
        ins = _tensor_inputs(n)
        if n.op == "call_module":
            return self._visit_module(n, self.mods[n.target], ins)
        if n.op in ("call_function", "call_method"):
            return self._visit_function(n, n.target, ins)
        self._unknown(n)

    def _visit_module(self, n: fx.Node, m: nn.Module, ins: list[fx.Node]) -> None:
        name = n.target
        single = len(ins) == 1 and len(n.args) == 1 and not n.kwargs and n.args[0] is ins[0]
        if not single or name in self.shared:
            return self._unknown(n)
        x = ins[0]
        if _is_inplace(n, m) and not _safe_inplace(n, x):
            return self._unknown(n)
        t = type(m)
        if t is nn.Conv2d and len(x.meta["sf_shape"]) == 4:
            if m.groups == 1:
                self.kind[name] = "conv"
                if self._shape_ok(x, 4, 1):
                    self.consumer_of[name] = x
                else:  # input channels not understood: keep them, still a producer
                    self.sp.pin(x)
                self.producer_out[name] = n
                self._new(n, 1)
                self.const[n] = self._producer_const(m)
                return
            if m.groups == m.in_channels == m.out_channels and self._shape_ok(x, 4, 1):
                self.kind[name] = "dw"
                self.per_channel_node[name] = n
                self._new(n, 1)
                self.sp.union(x, n)
                self.const[n] = self._depthwise_const(m, self.const[x])
                return
            return self._unknown(n)
        if t is nn.Linear:
            s = x.meta["sf_shape"]
            if len(s) < 2:
                return self._unknown(n)
            self.kind[name] = "linear"
            if self._shape_ok(x, len(s), -1):
                self.consumer_of[name] = x
            else:
                self.sp.pin(x)
            self.producer_out[name] = n
            self._new(n, -1)
            self.const[n] = self._producer_const(m)
            return
        if t in (nn.BatchNorm2d, nn.BatchNorm1d):
            ndim = 4 if t is nn.BatchNorm2d else 2
            if self._shape_ok(x, ndim, 1) and m.running_mean is not None and m.running_var is not None:
                self.kind[name] = "bn"
                self.per_channel_node[name] = n
                return self._same(n, x, lambda v, m=m: self._bn_fn(m, v))
            return self._unknown(n)
        if isinstance(m, _ACT_MODULES) and t.__module__.startswith("torch.nn"):
            return self._same(n, x, lambda v, m=m: m(v))
        if isinstance(m, _DROPOUT_MODULES):
            return self._same(n, x, None)
        if isinstance(m, _CONST_POOL_MODULES) and self._shape_ok(x, 4, 1):
            return self._same(n, x, None)
        if isinstance(m, nn.AvgPool2d) and self._shape_ok(x, 4, 1):
            pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
            exact = (
                m.divisor_override is None and not m.ceil_mode and (not m.count_include_pad or all(p == 0 for p in pad))
            )
            return self._same(n, x, None, zero_only=not exact)
        if isinstance(m, nn.Flatten):
            return self._flatten(n, x, m.start_dim, m.end_dim)
        return self._unknown(n)

    def _visit_function(self, n: fx.Node, target: Any, ins: list[fx.Node]) -> None:
        args = list(n.args)
        if not args or not _is_tensor_node(args[0]):
            if target in _ADD_TARGETS | _MUL_TARGETS and len(args) == 2 and _is_tensor_node(args[1]):
                args = [args[1], args[0]]  # scalar + tensor
            else:
                return self._unknown(n)
        x = args[0]
        rest = args[1:]
        if _is_inplace(n) and not (x is n.args[0] and _safe_inplace(n, x)):
            return self._unknown(n)
        if target in _ACT_FUNCTIONS or (isinstance(target, str) and target in _ACT_METHODS):
            if len(ins) != 1 or any(isinstance(a, fx.Node) for a in (*rest, *n.kwargs.values())):
                return self._unknown(n)
            fn = getattr(torch.Tensor, target) if isinstance(target, str) else target
            kwargs = dict(n.kwargs)
            return self._same(n, x, lambda v: fn(v, *rest, **kwargs))
        if target in (F.dropout, F.dropout2d):
            training = n.kwargs.get("training", args[2] if len(args) > 2 else True)
            if training:
                return self._unknown(n)
            return self._same(n, x, None)
        if target in _CONST_POOL_FUNCTIONS and self._shape_ok(x, 4, 1):
            return self._same(n, x, None)
        if target is F.avg_pool2d and self._shape_ok(x, 4, 1):
            return self._same(n, x, None, zero_only=True)
        if target in (torch.flatten, "flatten"):
            start = rest[0] if rest else n.kwargs.get("start_dim", 0)
            end = rest[1] if len(rest) > 1 else n.kwargs.get("end_dim", -1)
            return self._flatten(n, x, start, end)
        if target in ("view", "reshape") or target is torch.reshape:
            shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            ok = (
                len(shape) == 2
                and shape[1] == -1
                and (shape[0] == x.meta["sf_shape"][0] or (isinstance(shape[0], fx.Node) and shape[0].target == "size"))
            )
            if ok:
                return self._flatten(n, x, 1, -1)
            return self._unknown(n)
        if target == "mean" and self._shape_ok(x, 4, 1):
            dims = rest[0] if rest else n.kwargs.get("dim")
            dims = tuple(dims) if isinstance(dims, (list, tuple)) else (dims,)
            if dims and all(isinstance(d, int) and d % 4 in (2, 3) for d in dims):
                return self._same_reduce(n, x)
            return self._unknown(n)
        is_bin = target in _ADD_TARGETS | _SUB_TARGETS | _MUL_TARGETS | _DIV_TARGETS
        if is_bin and len(args) == 2 and not n.kwargs:
            y = args[1]
            if _is_tensor_node(y):
                if target in _ADD_TARGETS | _SUB_TARGETS and x.meta["sf_shape"] == y.meta["sf_shape"]:
                    if self.sp.axis.get(x) != self.sp.axis.get(y):
                        return self._unknown(n)
                    sign = 1.0 if target in _ADD_TARGETS else -1.0
                    self._new(n, self.sp.axis[x] if self.sp.axis[x] >= 0 else 1)
                    self.sp.union(x, n)
                    self.sp.union(y, n)
                    a, b = self.const[x], self.const[y]
                    if a.mask.numel() == b.mask.numel() == self._c(n):
                        mask = a.mask & b.mask
                        self.const[n] = _Const(mask, torch.where(mask, a.value + sign * b.value, 0.0))
                    return
                return self._unknown(n)
            if isinstance(y, (int, float)) and not isinstance(y, bool):
                s = float(y)
                if target in _ADD_TARGETS:
                    return self._same(n, x, lambda v: v + s)
                if target in _SUB_TARGETS:
                    return self._same(n, x, lambda v: v - s)
                if target in _MUL_TARGETS:
                    return self._same(n, x, lambda v: v * s)
                return self._same(n, x, lambda v: v / s)
        return self._unknown(n)

    def _same_reduce(self, n: fx.Node, x: fx.Node) -> None:
        """Spatial mean: (N, C, H, W) -> (N, C[, 1, 1]); constants are kept."""
        self._new(n, 1)
        self.sp.union(x, n)
        self.const[n] = self.const[x]

    def _flatten(self, n: fx.Node, x: fx.Node, start: int, end: int) -> None:
        s_in, s_out = x.meta["sf_shape"], n.meta["sf_shape"]
        if len(s_in) == 2 and len(s_out) == 2:
            return self._same(n, x, None)
        if not (self._shape_ok(x, 4, 1) and start == 1 and end in (-1, 3) and len(s_out) == 2):
            return self._unknown(n)
        hw = int(s_in[2] * s_in[3])
        self._new(n, 1)
        self.flatten_links.append((x, n, hw))
        c = self.const[x]
        self.const[n] = _Const(c.mask.repeat_interleave(hw), c.value.repeat_interleave(hw))

    # -- constants -------------------------------------------------------------------------------
    @staticmethod
    def _producer_const(m: nn.Module) -> _Const:
        w = m.weight.detach()
        zero = (w.flatten(1) == 0).all(1).cpu()
        b = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        return _Const(zero, torch.where(zero, b, 0.0))

    @staticmethod
    def _depthwise_const(m: nn.Conv2d, inp: _Const) -> _Const:
        w = m.weight.detach().double().cpu().flatten(1)  # (C, kh*kw)
        b = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        zero_w = (w == 0).all(1)
        if inp.mask.numel() != w.shape[0]:
            return _Const(zero_w, torch.where(zero_w, b, 0.0))
        through = inp.mask & ((inp.value == 0) | (not _has_zero_padding(m)))
        mask = zero_w | through
        value = torch.where(zero_w, b, inp.value * w.sum(1) + b)
        return _Const(mask, torch.where(mask, value, 0.0))

    @staticmethod
    def _bn_fn(m: nn.Module, v: torch.Tensor) -> torch.Tensor:
        mean = m.running_mean.detach().double().cpu()
        var = m.running_var.detach().double().cpu()
        out = (v - mean) / torch.sqrt(var + m.eps)
        if m.weight is not None:
            out = out * m.weight.detach().double().cpu() + m.bias.detach().double().cpu()
        return out

    # -- decisions -------------------------------------------------------------------------------
    def plans(self) -> dict[fx.Node, _Plan]:
        sp = self.sp
        plans: dict[fx.Node, _Plan] = {}

        def plan(n: fx.Node) -> _Plan:
            return plans.setdefault(sp.find(n), _Plan())

        for name, kind in self.kind.items():
            if kind in ("conv", "linear"):
                plan(self.producer_out[name]).producers.append(name)
                if name in self.consumer_of:
                    plan(self.consumer_of[name]).consumers.append((name, self.consumer_of[name]))
            else:
                plan(self.per_channel_node[name]).per_channel.append(name)
        for x, out, hw in self.flatten_links:
            plan(x).flatten_children.append((sp.find(out), hw))
            plan(out).flatten_parents += 1
        for root, p in plans.items():
            if p.flatten_parents > 1 or (p.flatten_parents and p.producers):
                sp.pinned.add(root)
        return plans

    def removable(self, root: fx.Node, plans: dict[fx.Node, _Plan]) -> torch.Tensor:
        """Channels of space ``root`` that can be removed exactly (bool, (C,))."""
        c = self.sp.size[root]
        if root in self.sp.pinned or c == 0:
            return torch.zeros(c, dtype=torch.bool)
        p = plans.get(root, _Plan())
        ok = torch.ones(c, dtype=torch.bool)
        for name, x in p.consumers:
            m = self.mods[name]
            slice_zero = (m.weight.detach().transpose(0, 1).flatten(1) == 0).all(1).cpu()  # (C,)
            k = self.const[x]
            foldable = k.mask.clone()
            if isinstance(m, nn.Conv2d) and _has_zero_padding(m):
                foldable &= k.value == 0
            ok &= slice_zero | foldable
        for child, hw in p.flatten_children:
            ok &= self.removable(child, plans).view(c, hw).all(1)
        return ok


# ----------------------------------------------------------------------------------------------
# Surgery
# ----------------------------------------------------------------------------------------------


def _keep_from_removed(c: int, removed: torch.Tensor) -> torch.Tensor:
    return (~removed).nonzero().flatten()


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _new_param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


def _rebuild_conv_linear(m: nn.Module, out_keep, in_keep, bias_delta: torch.Tensor | None) -> nn.Module:
    w = m.weight.detach()
    out_keep = torch.arange(w.shape[0]) if out_keep is None else out_keep
    in_keep = torch.arange(w.shape[1]) if in_keep is None else in_keep
    has_bias = m.bias is not None or (bias_delta is not None and bool((bias_delta != 0).any()))
    bias = m.bias.detach().clone() if m.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bias_delta is not None:
        bias = bias + bias_delta.to(bias)
    dev = w.device
    if isinstance(m, nn.Conv2d):
        new: nn.Module = nn.Conv2d(
            len(in_keep), len(out_keep), m.kernel_size, stride=m.stride, padding=m.padding,
            dilation=m.dilation, groups=1, bias=has_bias, padding_mode=m.padding_mode,
            device=dev, dtype=w.dtype,
        )  # fmt: skip
    else:
        new = nn.Linear(len(in_keep), len(out_keep), bias=has_bias, device=dev, dtype=w.dtype)
    new.weight = _new_param(w[out_keep.to(dev)][:, in_keep.to(dev)], m.weight)
    if has_bias:
        new.bias = _new_param(bias[out_keep.to(dev)], m.bias if m.bias is not None else m.weight)
    new.train(m.training)
    return new


def _rebuild_depthwise(m: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    w = m.weight.detach()
    k = keep.to(w.device)
    new = nn.Conv2d(
        len(keep), len(keep), m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
        groups=len(keep), bias=m.bias is not None, padding_mode=m.padding_mode, device=w.device, dtype=w.dtype,
    )  # fmt: skip
    new.weight = _new_param(w[k], m.weight)
    if m.bias is not None:
        new.bias = _new_param(m.bias.detach()[k], m.bias)
    new.train(m.training)
    return new


def _rebuild_bn(m: nn.modules.batchnorm._BatchNorm, keep: torch.Tensor) -> nn.Module:
    k = keep.to(m.running_mean.device)
    new = type(m)(
        len(keep), eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats,
        device=m.running_mean.device, dtype=m.running_mean.dtype,
    )  # fmt: skip
    if m.affine:
        new.weight = _new_param(m.weight.detach()[k], m.weight)
        new.bias = _new_param(m.bias.detach()[k], m.bias)
    new.running_mean.copy_(m.running_mean[k])
    new.running_var.copy_(m.running_var[k])
    if m.num_batches_tracked is not None:
        new.num_batches_tracked.copy_(m.num_batches_tracked)
    new.train(m.training)
    return new


def _as_tuple(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise TypeError("compact: example_inputs must be a tensor or a tuple of tensors")


def _flat_outputs(out: Any) -> list[torch.Tensor]:
    res: list[torch.Tensor] = []
    if isinstance(out, torch.Tensor):
        res.append(out)
    elif isinstance(out, (list, tuple)):
        for o in out:
            res += _flat_outputs(o)
    elif isinstance(out, dict):
        for o in out.values():
            res += _flat_outputs(o)
    return res


def compact(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    return_report: bool = False,
    check: bool = True,
) -> nn.Module | tuple[nn.Module, CompactReport]:
    """Physically remove all-zero filters, neurons and channels, with their coupled slices.

    See the module docstring for the exact removal rule. ``model`` is not modified; the result
    is in eval mode (BatchNorm folding relies on running statistics).

    Args:
        model: the model to compact; must be traceable by ``torch.fx``.
        example_inputs: a tensor or tuple of tensors for one forward pass (shapes are recorded
            from it, and the result is checked on it).
        return_report: also return the :class:`CompactReport`.
        check: compare outputs of the original and the compacted model on ``example_inputs`` and
            raise ``RuntimeError`` if they differ by more than float32 round-off.

    Returns:
        The compacted ``torch.fx.GraphModule`` (its ``compact_report`` attribute holds the
        report), or ``(module, report)`` if ``return_report``.

    Raises:
        TraceError: the model cannot be traced by torch.fx (one line naming the op and module).
    """
    inputs = _as_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        src = _deepcopy(model)
    finally:
        model.train(was_training)
    src.eval()
    gm = _trace(src, inputs)
    gm.eval()
    with torch.no_grad():
        try:
            reference = _ShapeRecorder(gm).run(*inputs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TraceError(f"compact: the traced model failed on example_inputs: {first}") from None

    an = _Analysis(gm)
    plans = an.plans()
    mods = an.mods
    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    per_channel_keep: dict[str, torch.Tensor] = {}
    bias_delta: dict[str, torch.Tensor] = {}
    report = CompactReport(params_before=sum(p.numel() for p in model.parameters()))

    def apply(root: fx.Node, removed: torch.Tensor) -> None:
        c = removed.numel()
        keep = _keep_from_removed(c, removed)
        idx = removed.nonzero().flatten().tolist()
        p = plans.get(root, _Plan())
        for name in p.producers:
            out_keep[name] = keep
            report.removed[name] = idx
        for name in p.per_channel:
            per_channel_keep[name] = keep
            report.removed[name] = idx
        for name, x in p.consumers:
            m = mods[name]
            w = m.weight.detach()
            k = an.const[x]
            fold = removed & k.mask  # constant channels: add sum(W[:, c]) * k[c] to the bias
            fold &= ~(w.transpose(0, 1).flatten(1) == 0).all(1).cpu()
            if fold.any():
                cols = fold.nonzero().flatten().to(w.device)
                wsum = w[:, cols].double().flatten(2).sum(2) if w.dim() > 2 else w[:, cols].double()
                delta = wsum @ k.value[fold].to(w.device)
                bias_delta[name] = bias_delta.get(name, 0) + delta
                report.folded[name] = fold.nonzero().flatten().tolist()
            in_keep[name] = keep
            report.inputs_removed[name] = idx
        for child, hw in p.flatten_children:
            apply(child, removed.repeat_interleave(hw))

    for root in list(plans):
        p = plans[root]
        if p.flatten_parents or not (p.producers or p.per_channel):
            continue  # flatten children follow their parent; spaces without producers are inputs
        removed = an.removable(root, plans)
        if removed.all():
            removed[0] = False  # keep one channel so every layer stays well formed
        if removed.any():
            apply(root, removed)

    for name in set(out_keep) | set(in_keep):
        m = mods[name]
        _set_module(gm, name, _rebuild_conv_linear(m, out_keep.get(name), in_keep.get(name), bias_delta.get(name)))
    for name, keep in per_channel_keep.items():
        m = mods[name]
        new = _rebuild_depthwise(m, keep) if isinstance(m, nn.Conv2d) else _rebuild_bn(m, keep)
        _set_module(gm, name, new)
    for name in list(bias_delta):  # consumers whose inputs were only folded (no removal): none by design
        if name not in in_keep:
            raise AssertionError(f"internal: bias fold without removal in {name}")
    gm.eval()
    report.params_after = sum(p.numel() for p in gm.parameters())
    if check:
        _check_equal(reference, gm, inputs)
    gm.compact_report = report  # type: ignore[attr-defined]
    return (gm, report) if return_report else gm


def _deepcopy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _check_equal(reference: Any, b: nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        ya, yb = _flat_outputs(reference), _flat_outputs(b(*inputs))
    for u, v in zip(ya, yb):
        if u.shape != v.shape:
            raise RuntimeError(f"compact: internal error, output shape changed {tuple(u.shape)} -> {tuple(v.shape)}")
        if u.is_floating_point():
            tol = 1e-4 * (1.0 + float(u.abs().max())) if u.numel() else 0.0
            err = float((u - v).abs().max()) if u.numel() else 0.0
            if not err <= tol:
                raise RuntimeError(f"compact: internal error, outputs changed by {err:.3g}; please report this model")


class _CallableModule(types.ModuleType):
    """Makes ``import sparseforge.compact`` callable: ``sparseforge.compact(model, x)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return compact(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
