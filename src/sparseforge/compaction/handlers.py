"""The handler table: how each ATen op propagates channels and constants, and how it is re-emitted.

One :class:`Handler` per op family, registered for the ATen ops it covers with
:func:`register_handler`. ``analyze(a, node)`` returns the op's output :class:`Mirror` (channel ids,
constants) and records what the op implies (joined channels, pins, votes, constraints, which
parameter dimensions are indexed by which channels); ``rebuild(r, node)`` emits the op into the
compacted graph with sliced parameters and recomputed shape arguments. Supporting a new op is one
registered handler::

    @register_handler(torch.ops.aten.my_op)
    class MyOp(Elementwise):
        ...

An op with no handler keeps every channel it touches (exact, listed in the report's
``unhandled``), or raises with ``compact(..., strict=True)``.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from .analysis import Analysis, Mirror, channel_vector, clean, uniform_channels

aten = torch.ops.aten

__all__ = ["Handler", "HANDLERS", "register_handler", "handler_for"]

HANDLERS: dict[Any, Handler] = {}


class Handler:
    """How one family of ATen ops is analysed and re-emitted.

    ``analyze(a, node)`` reads the op's inputs through the :class:`Analysis` ``a`` -- ``a.mir(arg)``
    (an input's :class:`Mirror`), ``a.real[arg]`` (its value on the example), ``a.param_of(arg)``
    (``(name, perm)`` when it is a parameter) -- and states what the op implies: ``a.union(ids, ids)``
    (these are the same channels), ``a.producer(...)`` (fresh channels a layer creates),
    ``a.param_dim(name, dim, ids)`` (a parameter dimension indexed by channels, sliced with them),
    ``a.vote(ids, ok, reason)`` (which input channels this consumer lets go), ``a.pin(ids, reason)``,
    ``a.constrain(fn)`` (a veto run to a fixpoint), ``a.opaque(node, reason)`` (give up: keep everything),
    ``a.info[node]`` (anything ``rebuild`` needs). It returns the output's mirror.

    ``rebuild(r, node)`` emits the op with the :class:`~sparseforge.compaction.slicing.Rebuild` ``r``:
    ``r.copy(node, args=...)`` (old nodes in ``args`` are mapped), ``r.emit(target, args)`` (new
    nodes), ``r.keep(node)`` / ``r.new_shape(node)`` (what survives per dimension), ``r.value(arg)``
    (a sliced parameter), ``r.tensor_attr(...)`` (a replaced parameter), ``r.module_for`` /
    ``r.call_module`` (a real ``nn`` module).
    """

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        """Return the output mirror (or tuple of mirrors); record joins, pins, votes, constraints."""
        raise NotImplementedError(f"handler {type(self).__name__} must define analyze (every registered op has one)")

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        """Emit ``node`` into the compacted graph; the default copies it with mapped arguments."""
        return r.copy(node)


def register_handler(*ops: Any) -> Any:
    """Class or instance decorator registering a :class:`Handler` for ATen ops (packets or overloads)."""

    def deco(h: Any) -> Any:
        inst = h() if isinstance(h, type) else h
        for op in ops:
            HANDLERS[op] = inst
        return h

    return deco


def handler_for(target: Any) -> Handler | None:
    """The handler of an op overload (exact overload first, then its packet)."""
    h = HANDLERS.get(target)
    if h is None:
        h = HANDLERS.get(getattr(target, "overloadpacket", None))
    return h


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Positional argument ``i`` or keyword ``name`` of ``node``."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def varies(ids: torch.Tensor, dim: int) -> bool:
    """Whether the channel ids change along ``dim``."""
    if ids.dim() == 0 or ids.shape[dim] <= 1:
        return False
    return bool((ids.amax(dim) != ids.amin(dim)).any())


def tensor_nodes(a: Analysis, node: fx.Node) -> list[fx.Node]:
    return [n for n in node.all_input_nodes if isinstance(a.real.get(n), torch.Tensor)]


# ----------------------------------------------------------------------------------------------
# element-wise ops
# ----------------------------------------------------------------------------------------------


def combine_ids(a: Analysis, node: fx.Node, mirrors: list[Mirror], shape: torch.Size) -> torch.Tensor:
    """Output ids of an element-wise op: operands of the output's shape are joined; a broadcast
    operand is joined where its broadcast covers one channel, and otherwise may only go when
    every output element it feeds goes."""
    shape = tuple(shape)
    full = [m for m in mirrors if tuple(m.ids.shape) == shape]
    base = full[0] if full else mirrors[0]
    out = base.ids.expand(shape)
    for m in mirrors:
        if m is base:
            continue
        if tuple(m.ids.shape) == shape:
            a.union(m.ids, out)
            continue
        ids = m.ids.reshape((1,) * (len(shape) - m.ids.dim()) + tuple(m.ids.shape))
        bdims = [d for d in range(len(shape)) if ids.shape[d] == 1 and shape[d] > 1]
        if not bdims:
            a.union(ids.expand(shape), out)
            continue
        lo, hi = out.amin(bdims, keepdim=True), out.amax(bdims, keepdim=True)
        lo = lo.expand(ids.shape) if lo.shape != ids.shape else lo
        hi = hi.expand(ids.shape) if hi.shape != ids.shape else hi
        uni = lo == hi
        if bool(uni.any()):
            a.union(ids[uni], lo[uni])
        if not bool(uni.all()):
            spread, out_ids, bd, where = ids[~uni], out, bdims, a.where(node)
            nonuni = ~uni

            def keep_broadcast(removed: torch.Tensor, spread=spread, out_ids=out_ids, bd=bd, nonuni=nonuni, where=where):
                rm = removed[spread.cpu()]
                if not bool(rm.any()):
                    return []
                all_rm = removed[out_ids.reshape(-1).cpu()].view(out_ids.shape).all(dim=bd, keepdim=True)
                all_rm = all_rm.expand(nonuni.shape)[nonuni].cpu() if all_rm.shape != nonuni.shape else all_rm[nonuni].cpu()
                return [(spread.cpu()[rm & ~all_rm], f"broadcast over several channels at {where}")]

            a.constrain(keep_broadcast)
    return out.contiguous()


class Elementwise(Handler):
    """Element-wise ops (with broadcasting and scalars): ids are joined, constants map through the op."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        real = a.real[node]
        if not isinstance(real, torch.Tensor):
            return a.opaque(node, f"{a.where(node)} returns a non-tensor")
        ins = tensor_nodes(a, node)
        mirrors = [a.mir(n) for n in ins]
        ids = combine_ids(a, node, mirrors, real.shape)
        mask = torch.ones(real.shape, dtype=torch.bool, device=real.device)
        for m in mirrors:
            mask = mask & m.mask
        try:
            args, kwargs = fx.node.map_arg(
                (node.args, node.kwargs),
                lambda n: a.mir(n).value if isinstance(a.real.get(n), torch.Tensor) else a.real[n],
            )
            value = node.target(*args, **kwargs)
            if not isinstance(value, torch.Tensor) or value.shape != real.shape:
                raise TypeError
            value = value.double() if value.is_floating_point() else value
            mask = self.extra_const(a, node, mirrors, mask)
        except Exception:  # the op rejects float64 / a dtype mix: no constants through it
            value = torch.zeros(real.shape, dtype=torch.float64, device=real.device)
            mask = torch.zeros_like(mask)
        mask, value = clean(mask.expand(real.shape), value)
        return Mirror(ids, mask.contiguous(), value)

    def extra_const(self, a: Analysis, node: fx.Node, mirrors: list[Mirror], mask: torch.Tensor) -> torch.Tensor:
        return mask


class Mul(Elementwise):
    """``mul``: also constant (zero) where any factor is a constant zero (e.g. a dead channel times a gate)."""

    def extra_const(self, a: Analysis, node: fx.Node, mirrors: list[Mirror], mask: torch.Tensor) -> torch.Tensor:
        for m in mirrors:
            mask = mask | (m.mask & (m.value == 0))
        return mask


class Where(Elementwise):
    """``where(cond, a, b)``: constant where the selected branch is."""

    def extra_const(self, a: Analysis, node: fx.Node, mirrors: list[Mirror], mask: torch.Tensor) -> torch.Tensor:
        vals = [a.mir(n) if isinstance(n, fx.Node) else None for n in node.args[:3]]
        if any(v is None for v in vals):
            return mask
        c, x, y = vals
        sel = torch.where(c.value.bool(), x.mask, y.mask)
        return mask | (c.mask & sel)


class MaskedFill(Elementwise):
    """``masked_fill(x, m, v)``: filled elements are constant where ``m`` is."""

    def extra_const(self, a: Analysis, node: fx.Node, mirrors: list[Mirror], mask: torch.Tensor) -> torch.Tensor:
        x, m = a.mir(node.args[0]), a.mir(node.args[1])
        if x is None or m is None:
            return mask
        v = node.args[2]
        v_const = a.mir(v).mask if isinstance(v, fx.Node) else torch.ones((), dtype=torch.bool)
        return mask | (m.mask & m.value.bool() & v_const)


_UNARY = [
    aten.relu, aten.relu6, aten.gelu, aten.silu, aten.sigmoid, aten.tanh, aten.hardtanh, aten.hardswish,
    aten.hardsigmoid, aten.leaky_relu, aten.elu, aten.celu, aten.selu, aten.softplus, aten.mish, aten.neg,
    aten.abs, aten.exp, aten.log, aten.log1p, aten.expm1, aten.sqrt, aten.rsqrt, aten.reciprocal, aten.sin,
    aten.cos, aten.erf, aten.square, aten.sign, aten.clamp, aten.clamp_min, aten.clamp_max, aten.threshold,
    aten.logical_not, aten.bitwise_not, aten.floor, aten.ceil, aten.round, aten.trunc,
    aten.contiguous, aten.lift_fresh_copy, aten._to_copy, aten.to, aten.nan_to_num,
    aten.isnan, aten.isinf, aten.logit,
]  # fmt: skip
_BINARY = [
    aten.add, aten.sub, aten.rsub, aten.div, aten.pow, aten.maximum, aten.minimum, aten.eq, aten.ne, aten.lt,
    aten.le, aten.gt, aten.ge, aten.logical_and, aten.logical_or, aten.logical_xor, aten.__and__, aten.__or__,
    aten.bitwise_and, aten.bitwise_or, aten.fmod, aten.remainder, aten.floor_divide, aten.atan2, aten.hypot,
    aten.copysign, aten.lerp, aten.addcmul, aten.addcdiv,
]  # fmt: skip
register_handler(*_UNARY, *_BINARY)(Elementwise)


@register_handler(aten.clone, aten.alias, aten.detach)
class Copy(Elementwise):
    """clone / alias / detach: identities for the analysis; a clone is dropped from the compacted graph.

    Capture turns eval-mode dropout into ``clone`` (a full copy of the activation per call); the
    compacted graph never mutates a tensor it shares, so the copy is not needed.
    """

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        x = node.args[0]
        if isinstance(x, fx.Node) and x.op != "placeholder" and not node.kwargs.get("memory_format"):
            return r.env[x]
        return r.copy(node)

register_handler(aten.mul)(Mul)
register_handler(aten.where.self)(Where)
register_handler(aten.masked_fill)(MaskedFill)


@register_handler(aten.dropout, aten.feature_dropout, aten.alpha_dropout)
class Dropout(Elementwise):
    """Dropout: an identity in eval mode; random (opaque) in training mode."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        if arg(node, 2, "train", True):
            return a.opaque(node, f"{a.where(node)} in training mode")
        m = a.mir(node.args[0])
        return Mirror(m.ids, m.mask, m.value)


# ----------------------------------------------------------------------------------------------
# layout ops: the op itself moves the ids
# ----------------------------------------------------------------------------------------------


class Layout(Handler):
    """Ops that only move elements (views, permutes, concatenation, slicing): applied to the mirror."""

    def pins(self, a: Analysis, node: fx.Node, x: Mirror) -> None:
        """Pin channels whose removal this op cannot follow."""

    def mirror_target(self, node: fx.Node) -> Any:
        return node.target

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x0 = node.args[0]
        if isinstance(x0, fx.Node):
            xm = a.mir(x0)
            if xm is None:
                return a.opaque(node, f"{a.where(node)} on a non-tensor")
            self.pins(a, node, xm)
        target = self.mirror_target(node)

        def run(part: str) -> Any:
            def sub(n: fx.Node) -> Any:
                m = a.mir(n) if isinstance(a.real.get(n), torch.Tensor) and n in self.data_nodes(node) else None
                return getattr(m, part) if m is not None else a.real[n]

            args, kwargs = fx.node.map_arg((node.args, node.kwargs), sub)
            return target(*args, **kwargs)

        ids, mask, value = run("ids"), run("mask"), run("value")
        if isinstance(ids, torch.Tensor):
            return Mirror(ids, mask, value)
        return tuple(Mirror(i, m, v) for i, m, v in zip(ids, mask, value))

    def data_nodes(self, node: fx.Node) -> list[fx.Node]:
        x = node.args[0]
        if isinstance(x, (list, tuple)):
            return [n for n in x if isinstance(n, fx.Node)]
        return [x] if isinstance(x, fx.Node) else []


@register_handler(aten.view, aten._unsafe_view, aten.reshape, aten.expand, aten.unflatten)
class Reshape(Layout):
    """view / reshape / expand / unflatten: the size arguments follow the removed channels."""

    def mirror_target(self, node: fx.Node) -> Any:
        if node.target in (aten.view.default, aten._unsafe_view.default):
            return aten.reshape.default
        return node.target

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        size_pos = 2 if node.target.overloadpacket is aten.unflatten else 1
        sizes = node.args[size_pos]
        old, new = r.old_shape(node), r.new_shape(node)
        # a view recorded at export may not fit the strides of a narrower input: reshape copies then
        as_reshape = node.target in (aten.view.default, aten._unsafe_view.default)
        if old == new:
            return r.copy(node) if not as_reshape else r.emit(aten.reshape.default, (r.env[node.args[0]], r.map(sizes)), node=node)
        if size_pos == 2:
            d = node.args[1] % len(r.old_shape(node.args[0]))
            old, new = old[d : d + len(sizes)], new[d : d + len(sizes)]
        fixed = [
            s if isinstance(s, fx.Node) or s == -1 or o == n else n
            for s, o, n in zip(sizes, old, new)
        ]  # fmt: skip
        args = list(node.args)
        args[size_pos] = fixed
        if as_reshape:
            return r.emit(aten.reshape.default, (r.env[node.args[0]], r.map(fixed)), node=node)
        return r.copy(node, args=tuple(args))


register_handler(
    aten.permute, aten.transpose, aten.t, aten.unsqueeze, aten.squeeze, aten.flatten, aten.movedim,
    aten.swapaxes, aten.flip, aten.repeat, aten.expand_as, aten.view_as, aten.reshape_as,
)(Layout)  # fmt: skip


@register_handler(aten.cat, aten.concat, aten.stack)
class Concat(Layout):
    """cat / stack: the slices of each input map through the concatenation."""


@register_handler(aten.slice.Tensor)
class Slice(Layout):
    def pins(self, a: Analysis, node: fx.Node, x: Mirror) -> None:
        d = arg(node, 1, "dim", 0)
        if arg(node, 4, "step", 1) != 1 and varies(x.ids, d):
            a.pin(x.ids, f"strided slice over channels at {a.where(node)}")

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        x = node.args[0]
        d = arg(node, 1, "dim", 0) % len(r.old_shape(x))
        keep = r.keep_mask(x, d)
        if keep is None:
            return r.copy(node)
        size = keep.numel()
        start = arg(node, 2, "start", None)
        end = arg(node, 3, "end", None)
        s = 0 if start is None else (start + size if start < 0 else min(start, size))
        e = size if end is None else (end + size if end < 0 else min(end, size))
        args = [x, d, int(keep[:s].sum()), int(keep[:e].sum())] + list(node.args[4:])
        return r.copy(node, args=tuple(args), kwargs={})


@register_handler(aten.narrow)
class Narrow(Layout):
    def rebuild(self, r: Any, node: fx.Node) -> Any:
        x, d, start, length = node.args[:4]
        d = d % len(r.old_shape(x))
        keep = r.keep_mask(x, d)
        if keep is None or isinstance(start, fx.Node):
            return r.copy(node)
        s = int(keep[:start].sum())
        return r.copy(node, args=(x, d, s, int(keep[start : start + length].sum())))


@register_handler(aten.select.int)
class Select(Layout):
    def pins(self, a: Analysis, node: fx.Node, x: Mirror) -> None:
        d, i = node.args[1], node.args[2]
        if varies(x.ids, d):
            a.pin(x.ids.select(d, i), f"selected by index at {a.where(node)}")

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        x, d, i = node.args[:3]
        d = d % len(r.old_shape(x))
        keep = r.keep_mask(x, d)
        if keep is None or isinstance(i, fx.Node):
            return r.copy(node)
        i = i % keep.numel()
        return r.copy(node, args=(x, d, int(keep[:i].sum())))


@register_handler(aten.split, aten.split_with_sizes, aten.chunk)
class Split(Layout):
    """split / chunk: the segment sizes follow the removed channels (re-emitted as split_with_sizes)."""

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        x = node.args[0]
        d = arg(node, 2, "dim", 0) % len(r.old_shape(x))
        keep = r.keep_mask(x, d)
        if keep is None:
            return r.copy(node)
        sizes = [t.shape[d] for t in r.analysis.real[node]]
        bounds = torch.tensor([0, *sizes]).cumsum(0)
        counts = [int(keep[int(bounds[i]) : int(bounds[i + 1])].sum()) for i in range(len(sizes))]
        return r.emit(aten.split_with_sizes.default, (r.env[x], counts, d), node=node)


@register_handler(aten.unbind, aten.roll, aten.unfold, aten.index_select, aten.gather, aten.take_along_dim)
class IndexAlong(Layout):
    """Ops that address positions along a dimension: fine along spatial / token dims, pinned along channels."""

    def pins(self, a: Analysis, node: fx.Node, x: Mirror) -> None:
        packet = node.target.overloadpacket
        if packet is aten.roll:
            dims = arg(node, 2, "dims", [])
            dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
            dims = dims or list(range(x.ids.dim()))
        else:
            dims = [arg(node, 1, "dim", 0)]
        if any(varies(x.ids, d) for d in dims):
            a.pin(x.ids, f"indexed along channels at {a.where(node)}")


@register_handler(aten.index.Tensor)
class Index(Layout):
    def pins(self, a: Analysis, node: fx.Node, x: Mirror) -> None:
        idx = node.args[1]
        if any(i is not None and varies(x.ids, d) for d, i in enumerate(idx)):
            a.pin(x.ids, f"indexed along channels at {a.where(node)}")


@register_handler(aten.pad, aten.constant_pad_nd, aten.reflection_pad2d, aten.replication_pad2d)
class Pad(Handler):
    """Padding of spatial / token dims: ids replicate into the border, zero padding is a constant 0."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x = a.mir(node.args[0])
        pad = list(node.args[1])
        nd = x.ids.dim()
        dims = [nd - 1 - i // 2 for i in range(len(pad))]
        if any(varies(x.ids, d) for d in set(dims)):
            a.pin(x.ids, f"padded along channels at {a.where(node)}")
        ids = x.ids
        for k in range(len(pad) // 2):
            d, lo, hi = nd - 1 - k, pad[2 * k], pad[2 * k + 1]
            src = torch.arange(-lo, ids.shape[d] + hi, device=ids.device).clamp(0, ids.shape[d] - 1)
            ids = ids.index_select(d, src)  # replicate the border's channel (negative pads crop)
        packet = node.target.overloadpacket
        if packet in (aten.pad, aten.constant_pad_nd):
            mode = arg(node, 2, "mode", "constant") if packet is aten.pad else "constant"
            fill = arg(node, 3, "value", None) if packet is aten.pad else arg(node, 2, "value", 0)
            fill = 0.0 if fill is None else float(fill)
        else:
            mode, fill = ("reflect" if packet is aten.reflection_pad2d else "replicate"), 0.0
        if mode == "constant":
            mask = F.pad(x.mask, pad, value=True)
            value = F.pad(x.value, pad, value=fill)
        else:
            mask = F.pad(x.mask.double(), pad, mode=mode) > 0.5
            value = F.pad(x.value.double(), pad, mode=mode)
        mask, value = clean(mask, value)
        return Mirror(ids.contiguous(), mask, value)


# ----------------------------------------------------------------------------------------------
# layers that produce channels
# ----------------------------------------------------------------------------------------------


def _vote_inputs(
    a: Analysis, node: fx.Node, cols: torch.Tensor, slice_zero: torch.Tensor, xm: Mirror, dim: int,
    *, padded: bool, bias_fqn: str | None, bias_foldable: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Votes of a weight layer on the input channels it reads; returns the fold plan for rebuild."""
    uni, k = uniform_channels(xm, dim)
    foldable = uni & bias_foldable
    if bias_fqn is not None and a.fqn_users.get(bias_fqn, 1) > 1:
        foldable = torch.zeros_like(foldable)  # a shared bias cannot absorb a fold
    pad_block = foldable & (k != 0) if padded else torch.zeros_like(foldable)
    ok = slice_zero | (foldable & ~pad_block)
    live = ~ok & ~pad_block
    where = a.where(node)
    blocked = pad_block & ~slice_zero
    if bool(blocked.any()):
        msg = f"a non-zero constant (bias or BatchNorm shift) feeds the zero-padded {where}"
        a.vote(cols[blocked], torch.zeros(int(blocked.sum()), dtype=torch.bool), msg)
    if bool(live.any()):
        d = dim % xm.mask.dim()
        const = xm.mask.movedim(d, 0).reshape(xm.mask.shape[d], -1).all(1).cpu()
        varying = live & const  # input-independent but not one value: zero padding upstream, positions
        if bool(varying.any()):
            a.vote(cols[varying], torch.zeros(int(varying.sum()), dtype=torch.bool),
                   f"a position-dependent constant (zero padding upstream) is read by {where}")
        rest = live & ~const
        if bool(rest.any()):
            a.vote(cols[rest], torch.zeros(int(rest.sum()), dtype=torch.bool), f"read by {where}")
    return {"cols": cols, "fold": foldable & ~pad_block & ~slice_zero, "k": k}


def _dense_const(xm: Mirror, w: torch.Tensor, b: torch.Tensor | None, out_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Constants after ``x @ w.T + b`` (w: (O, I))."""
    wd = w.detach().double()
    nc = (~xm.mask).double() @ (wd != 0).double().T > 0
    val = (xm.value.double() * xm.mask) @ wd.T
    if b is not None:
        val = val + b.detach().double()
    return clean((~nc).reshape(out_shape), val.reshape(out_shape))


def dense_layer(
    a: Analysis, node: fx.Node, xm: Mirror, w: torch.Tensor, wfqn: str, pdim_out: int, pdim_in: int,
    b: torch.Tensor | None, bfqn: str | None, op: str, *, foldable: bool = True,
) -> Mirror:  # fmt: skip
    """A layer ``y = x @ w.T + b`` (w: (O, I) view of parameter ``wfqn``) over the last dim of ``x``."""
    real = a.real[node]
    o = w.shape[0]
    out_ids = a.producer(node, op, wfqn, o, (w == 0).all(1))
    a.param_dim(wfqn, pdim_out, out_ids)
    if bfqn is not None:
        a.param_dim(bfqn, 0 if b.dim() == 1 else b.dim() - 1, out_ids)
    cols = channel_vector(xm.ids, -1)
    a.info[node] = {"out": out_ids}
    if cols is None:
        a.pin(xm.ids, f"{a.where(node)} reads features that mix channels")
    else:
        a.param_dim(wfqn, pdim_in, cols)
        a.info[node].update(_vote_inputs(a, node, cols, (w == 0).all(0).cpu(), xm, -1, padded=False, bias_fqn=bfqn,
                                         bias_foldable=foldable))
    mask, value = _dense_const(xm, w, b, real.shape)
    return Mirror(out_ids.to(real.device).expand(real.shape).contiguous(), mask, value)


def _fold_delta(a: Analysis, r: Any, node: fx.Node, w_in_out: torch.Tensor) -> torch.Tensor | None:
    """``sum_c W[:, c] k_c`` over removed foldable inputs (w_in_out: (O, I[, k...]))."""
    plan = a.info.get(node)
    if not plan or "fold" not in plan or a.structural:
        return None
    fold = plan["fold"] & r.removed_of(plan["cols"])
    if not bool(fold.any()):
        return None
    w = w_in_out.detach().double()
    cols = fold.nonzero().flatten().to(w.device)
    wsum = w[:, cols].flatten(2).sum(2) if w.dim() > 2 else w[:, cols]
    r.note_fold(node, fold)
    delta = wsum @ plan["k"][fold].to(w.device)  # (O,) over the original outputs
    if not bool((delta != 0).any()):
        return None  # zero constants: nothing to fold (no bias is added)
    return delta[r.keep_index(plan["out"]).to(delta.device)]


@register_handler(aten.linear)
class Linear(Handler):
    """``linear(x, W, b)``: output neurons are fresh channels; input features are voted on."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x, wn, bn = node.args[0], node.args[1], arg(node, 2, "bias", None)
        pw, pb = a.param_of(wn), (a.param_of(bn) if bn is not None else None)
        if pw is None or (bn is not None and pb is None):
            return a.opaque(node, f"{a.where(node)} with a weight that is not a parameter")
        w = a.real[wn]
        pdim_out, pdim_in = pw[1][0], pw[1][1]
        return dense_layer(a, node, a.mir(x), w, pw[0], pdim_out, pdim_in, a.real[bn] if bn is not None else None,
                           pb[0] if pb else None, "linear")

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        a = r.analysis
        if node not in a.info:
            return r.copy(node)
        x, wn, bn = node.args[0], node.args[1], arg(node, 2, "bias", None)
        w, b = r.value(wn), r.value(bn)
        delta = _fold_delta(a, r, node, a.real[wn])
        if delta is not None:
            b = (b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)) + delta.to(w)
        owner = r.module_for(node, [wn] + ([bn] if bn is not None else []), "linear")
        if owner is not None:
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
            r.set_module_params(lin, {"weight": w, "bias": b}, owner)
            return r.call_module(owner, lin, (r.env[x],), node)
        if delta is None:
            return r.copy(node)
        return r.emit(aten.linear.default, (r.env[x], r.env[wn], r.tensor_attr(bn, b, wn, "bias")), node=node)


@register_handler(aten.addmm, aten.mm, aten.matmul)
class MatmulParam(Handler):
    """``x @ W`` / ``addmm(b, x, W)`` with a parameter ``W`` (Hugging Face ``Conv1D``); else opaque."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        packet = node.target.overloadpacket
        bn = node.args[0] if packet is aten.addmm else None
        x, wn = (node.args[1], node.args[2]) if packet is aten.addmm else (node.args[0], node.args[1])
        pw = a.param_of(wn)
        pb = a.param_of(bn) if bn is not None else None
        w_real = a.real[wn]
        if pw is None or w_real.dim() != 2 or (bn is not None and pb is None) or not a.is_dynamic(x):
            return a.opaque(node, f"{a.where(node)} of two activations")
        alpha, beta = node.kwargs.get("alpha", 1), node.kwargs.get("beta", 1)
        if alpha != 1 or beta != 1:
            return a.opaque(node, f"{a.where(node)} with alpha/beta")
        w = w_real.T  # (O, I)
        b = a.real[bn] if bn is not None else None
        if b is not None and (b.dim() > 2 or (b.dim() == 2 and b.shape[0] != 1)):
            return a.opaque(node, f"{a.where(node)} with a non-row bias")
        return dense_layer(a, node, a.mir(x), w, pw[0], pw[1][1], pw[1][0], b, pb[0] if pb else None, packet.__name__.split(".")[-1])

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        a = r.analysis
        if node not in a.info:
            return r.copy(node)
        packet = node.target.overloadpacket
        wn = node.args[2] if packet is aten.addmm else node.args[1]
        delta = _fold_delta(a, r, node, a.real[wn].T)
        if delta is None:
            return r.copy(node)
        if packet is aten.addmm:
            bn = node.args[0]
            b = r.value(bn)
            b = b + delta.to(b).reshape(b.shape)
            return r.emit(node.target, (r.tensor_attr(bn, b, wn, "bias"), r.env[node.args[1]], r.env[wn]), node=node)
        out = r.copy(node)
        bias = r.tensor_attr(None, delta.to(a.real[wn].dtype), wn, "folded_bias")
        return r.emit(aten.add.Tensor, (out, bias), node=node)


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _conv_const(fn: Any, xm: Mirror, w: torch.Tensor, b: torch.Tensor | None, stride: Any, padding: Any,
                dilation: Any, groups: int, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Constants after a convolution, computed on one sample (they are the same for every input).

    An output is constant iff every non-zero tap reads a constant (zero padding is one): a count
    of non-constant taps in float32 (exact integers). Values are float64, from the input channels
    that hold constants only, plus the bias.
    """
    wd = w.detach()
    x_nc = (~xm.mask[:1]).to(torch.float32)  # (1, C, ...)
    nc = fn(x_nc, (wd != 0).to(torch.float32), None, stride, padding, dilation, groups) > 0.5
    value = torch.zeros((1, *shape[1:]), dtype=torch.float64, device=w.device)
    if b is not None:
        value = value + b.detach().double().view(1, -1, *([1] * (len(shape) - 2)))
    has = xm.mask[:1].flatten(2).any(2)[0] if xm.mask.dim() > 2 else xm.mask[:1].any(0)
    if bool(has.any()):
        ch = has.nonzero().flatten()
        if groups == 1:
            # channels that are one constant everywhere collapse into a single input channel
            uni, k = uniform_channels(Mirror(xm.ids[:1], xm.mask[:1], xm.value[:1]), 1)
            uni = uni.to(has.device) & has
            rest = (has & ~uni).nonzero().flatten()
            contrib = torch.zeros((1, *shape[1:]), dtype=torch.float64, device=w.device)
            if bool(uni.any()):
                cu = uni.nonzero().flatten()
                wk = (wd[:, cu].double() * k.to(w.device)[cu].view(1, -1, *([1] * (wd.dim() - 2)))).sum(1, keepdim=True)
                ones = torch.ones((1, 1, *xm.mask.shape[2:]), dtype=torch.float64, device=w.device)
                contrib = contrib + fn(ones, wk, None, stride, padding, dilation, 1)
            if rest.numel():
                contrib = contrib + fn(xm.value[:1, rest].double() * xm.mask[:1, rest], wd[:, rest].double(), None,
                                       stride, padding, dilation, 1)
        elif groups == xm.mask.shape[1] == wd.shape[0]:  # depthwise: only the constant channels
            part = fn(xm.value[:1, ch].double() * xm.mask[:1, ch], wd[ch].double(), None, stride, padding, dilation, len(ch))
            contrib = torch.zeros((1, *shape[1:]), dtype=torch.float64, device=w.device)
            contrib[:, ch] = part
        else:
            contrib = fn(xm.value[:1].double() * xm.mask[:1], wd.double(), None, stride, padding, dilation, groups)
        value = value + contrib
    mask, value = clean(~nc, value)
    return mask.expand(shape).contiguous(), value.expand(shape).contiguous()


@register_handler(aten.conv1d, aten.conv2d, aten.conv3d)
class Conv(Handler):
    """Convolutions: filters are fresh channels; depthwise convs carry their input channels through;
    grouped convs keep the same number of channels in every group."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x, wn, bn = node.args[0], node.args[1], arg(node, 2, "bias", None)
        pw, pb = a.param_of(wn), (a.param_of(bn) if bn is not None else None)
        if pw is None or pw[1] != tuple(range(a.real[wn].dim())) or (bn is not None and pb is None):
            return a.opaque(node, f"{a.where(node)} with a weight that is not a parameter")
        real, w = a.real[node], a.real[wn]
        b = a.real[bn] if bn is not None else None
        xm = a.mir(x)
        stride, padding = arg(node, 3, "stride", 1), arg(node, 4, "padding", 0)
        dilation, groups = arg(node, 5, "dilation", 1), arg(node, 6, "groups", 1)
        c_in, o = xm.ids.shape[1], w.shape[0]
        fn = _CONV_FN[w.dim() - 2]
        pads = [padding] if isinstance(padding, int) else list(padding) if not isinstance(padding, str) else []
        padded = (padding == "same" and any(k > 1 for k in w.shape[2:])) if isinstance(padding, str) else any(p > 0 for p in pads)
        cin_ids = channel_vector(xm.ids, 1)
        if cin_ids is None:
            a.pin(xm.ids, f"{a.where(node)} reads channels that vary over positions")
        depthwise = groups == c_in == o and w.shape[1] == 1
        if depthwise and cin_ids is not None:
            out_ids = cin_ids
            a.param_dim(pw[0], 0, cin_ids)
            if pb:
                a.param_dim(pb[0], 0, cin_ids)
            a.info[node] = {"kind": "depthwise"}
        else:
            out_ids = a.producer(node, f"conv{w.dim() - 2}d", pw[0], o, (w.flatten(1) == 0).all(1))
            a.param_dim(pw[0], 0, out_ids)
            if pb:
                a.param_dim(pb[0], 0, out_ids)
            a.info[node] = {"kind": "dense" if groups == 1 else "grouped", "out": out_ids, "groups": groups}
            if cin_ids is not None and groups == 1:
                a.param_dim(pw[0], 1, cin_ids)
                slice_zero = (w.transpose(0, 1).flatten(1) == 0).all(1).cpu()
                a.info[node].update(_vote_inputs(a, node, cin_ids, slice_zero, xm, 1, padded=padded,
                                                 bias_fqn=pb[0] if pb else None))
            elif cin_ids is not None:
                self._grouped(a, node, w, cin_ids, out_ids, groups, xm, padded, pb)
        mask, value = _conv_const(fn, xm, w, b, stride, padding, dilation, groups, real.shape)
        ids = out_ids.to(real.device).view(1, -1, *([1] * (real.dim() - 2))).expand(real.shape).contiguous()
        return Mirror(ids, mask, value)

    def _grouped(self, a: Analysis, node: fx.Node, w: torch.Tensor, cin_ids: torch.Tensor, out_ids: torch.Tensor,
                 groups: int, xm: Mirror, padded: bool, pb: Any) -> None:
        o, ig = w.shape[0], w.shape[1]
        og = o // groups
        rows = w.detach().reshape(groups, og, ig, -1)  # (g, og, ig, k)
        slice_zero = (rows == 0).all(3).all(1).reshape(-1).cpu()  # (c_in,)
        a.info[node].update(_vote_inputs(a, node, cin_ids, slice_zero, xm, 1, padded=padded,
                                         bias_fqn=pb[0] if pb else None))
        where = a.where(node)

        def equal_per_group(removed: torch.Tensor, cin=cin_ids, out=out_ids, g=groups) -> list:
            vetoes = []
            for ids in (out, cin):
                rm = removed[ids].view(g, -1)  # (g, per group)
                n = rm.sum(1)
                if bool((n == n.min()).all()):
                    continue
                # keep the last removed entries of groups that lose more than the least-pruned group
                excess = rm & (rm.long().cumsum(1) > n.min())
                vetoes.append((ids.view(g, -1)[excess], f"grouped {where} needs the same removal in every group"))
            return vetoes

        a.constrain(equal_per_group)

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        a = r.analysis
        info = a.info.get(node)
        if info is None:
            return r.copy(node)
        x, wn, bn = node.args[0], node.args[1], arg(node, 2, "bias", None)
        w, b = r.value(wn), r.value(bn)
        groups = arg(node, 6, "groups", 1)
        delta = None
        if info["kind"] == "dense":
            delta = _fold_delta(a, r, node, a.real[wn])
        elif info["kind"] == "grouped" and "cols" in info:
            per = (~r.removed_of(info["cols"])).view(groups, -1)  # (g, channels per group)
            og = w.shape[0] // groups
            wg = w.reshape(groups, og, *w.shape[1:])
            w = torch.stack([wg[g][:, per[g].nonzero().flatten().to(w.device)] for g in range(groups)])
            w = w.reshape(groups * og, -1, *wg.shape[3:])
            delta = self._grouped_delta(r, node, info, groups)
        elif info["kind"] == "depthwise":
            groups = w.shape[0]
        if delta is not None:
            b = (b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)) + delta.to(w)
        stride, padding, dilation = arg(node, 3, "stride", 1), arg(node, 4, "padding", 0), arg(node, 5, "dilation", 1)
        nd = w.dim() - 2
        owner = r.module_for(node, [wn] + ([bn] if bn is not None else []), f"conv{nd}d")
        if owner is not None:
            cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
            conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
                       dilation=dilation, groups=groups, bias=b is not None, device=w.device, dtype=w.dtype)
            r.set_module_params(conv, {"weight": w, "bias": b}, owner)
            return r.call_module(owner, conv, (r.env[x],), node)
        w_node = r.tensor_attr(wn, w, wn, "weight") if info["kind"] == "grouped" else r.env[wn]
        b_node = r.tensor_attr(bn, b, wn, "bias") if delta is not None else (r.env[bn] if bn is not None else None)
        return r.emit(node.target, (r.env[x], w_node, b_node, stride, padding, dilation, groups), node=node)

    @staticmethod
    def _grouped_delta(r: Any, node: fx.Node, info: dict, groups: int) -> torch.Tensor | None:
        a = r.analysis
        if a.structural:
            return None
        fold = info["fold"] & r.removed_of(info["cols"])
        if not bool(fold.any()):
            return None
        w = a.real[node.args[1]].detach().double()  # (O, ig, k...)
        o, ig = w.shape[0], w.shape[1]
        og = o // groups
        k = info["k"].to(w.device)
        delta = torch.zeros(o, dtype=torch.float64, device=w.device)
        for c in fold.nonzero().flatten().tolist():
            g, local = divmod(c, ig)
            delta[g * og : (g + 1) * og] += w[g * og : (g + 1) * og, local].flatten(1).sum(1) * k[c]
        r.note_fold(node, fold)
        if not bool((delta != 0).any()):
            return None
        return delta[r.keep_index(info["out"]).to(delta.device)]


@register_handler(aten.embedding)
class Embedding(Handler):
    """``embedding(W, idx)``: embedding columns are fresh channels (a column that is one value is a constant)."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        wn = node.args[0]
        pw = a.param_of(wn)
        real = a.real[node]
        if pw is None or pw[1] != (0, 1):
            return a.opaque(node, f"{a.where(node)} with a table that is not a parameter")
        w = a.real[wn]
        ids = a.producer(node, "embedding", pw[0], w.shape[1], (w == 0).all(0))
        a.param_dim(pw[0], pw[1][1], ids)
        const = (w == w[:1]).all(0)
        mask = const.view(*([1] * (real.dim() - 1)), -1).expand(real.shape)
        value = w[0].detach().double().expand(real.shape)
        mask, value = clean(mask, value)
        return Mirror(ids.to(real.device).expand(real.shape).contiguous(), mask.contiguous(), value.contiguous())


# ----------------------------------------------------------------------------------------------
# normalisation and reductions
# ----------------------------------------------------------------------------------------------


@register_handler(aten._native_batch_norm_legit_no_training, aten.batch_norm, aten._native_batch_norm_legit,
                  aten.native_batch_norm)
class BatchNorm(Handler):
    """BatchNorm in eval mode: per-channel affine; its parameters and statistics follow dim 1."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        packet = node.target.overloadpacket
        training = False
        if packet is aten.batch_norm:
            training = arg(node, 5, "training", False)
        elif packet is not aten._native_batch_norm_legit_no_training:
            training = arg(node, 5, "training", True)
        x = a.mir(node.args[0])
        real = a.real[node]
        if training or (packet is aten._native_batch_norm_legit and len(node.args) < 5):
            return a.opaque(node, f"{a.where(node)} in training mode")
        cin = channel_vector(x.ids, 1)
        params = node.args[1:5]
        if cin is None:
            a.pin(x.ids, f"{a.where(node)} over channels that vary by position")
        else:
            for p in params:
                if p is not None:
                    pp = a.param_of(p)
                    if pp is None:
                        a.pin(x.ids, f"{a.where(node)} with computed statistics")
                    else:
                        a.param_dim(pp[0], 0, cin)
        w, b, rm, rv = (a.real[p] if p is not None else None for p in params)
        eps = arg(node, 6 if packet is aten._native_batch_norm_legit_no_training else 7, "eps", 1e-5)
        value = F.batch_norm(x.value.double(), rm.double(), rv.double(), None if w is None else w.double(),
                             None if b is None else b.double(), False, 0.0, eps)
        mask, value = clean(x.mask, value)
        out = Mirror(x.ids, mask, value)
        if isinstance(real, (tuple, list)):
            return (out, *(None for _ in real[1:]))
        return out


@register_handler(aten.layer_norm, aten.native_layer_norm)
class LayerNorm(Handler):
    """LayerNorm normalises over its channels: they are kept (removal changes the mean and variance)."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x = a.mir(node.args[0])
        shape = list(node.args[1])
        k = len(shape)
        nd = x.ids.dim()
        a.pin(x.ids, f"normalised together by {a.where(node)}", hard=False)
        for p in node.args[2:4]:
            if isinstance(p, fx.Node):
                combine_ids(a, node, [x, a.mir(p)], x.ids.shape)
        dims = list(range(nd - k, nd))
        real = a.real[node]
        w = a.real.get(node.args[2]) if len(node.args) > 2 and node.args[2] is not None else None
        b = a.real.get(node.args[3]) if len(node.args) > 3 and node.args[3] is not None else None
        eps = arg(node, 4, "eps", 1e-5)
        value = F.layer_norm(x.value.double(), shape, None if w is None else w.double(),
                             None if b is None else b.double(), eps)
        mask = x.mask.all(dim=dims, keepdim=True).expand(x.ids.shape) if dims else x.mask
        mask, value = clean(mask, value)
        out = Mirror(x.ids, mask.contiguous(), value)
        return (out, None, None) if isinstance(real, (tuple, list)) else out

    def rebuild(self, r: Any, node: fx.Node) -> Any:
        new = r.new_shape(node.args[0])
        k = len(node.args[1])
        if list(new[-k:]) == list(node.args[1]):
            return r.copy(node)
        args = list(node.args)
        args[1] = list(new[-k:])
        return r.copy(node, args=tuple(args))


@register_handler(aten._softmax, aten.softmax, aten._log_softmax, aten.log_softmax)
class Softmax(Handler):
    """softmax over a dimension: channels along it are kept; constants need the whole row constant."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x = a.mir(node.args[0])
        d = node.args[1]
        if varies(x.ids, d):
            a.pin(x.ids, f"normalised together by {a.where(node)}")
        value = node.target(x.value.double(), *node.args[1:2], *([False] if node.target.overloadpacket in (aten._softmax, aten._log_softmax) else []))
        mask = x.mask.all(d, keepdim=True).expand(x.ids.shape)
        mask, value = clean(mask, value)
        return Mirror(x.ids, mask.contiguous(), value)


_REDUCE = {  # packet -> (index of dims arg, index of keepdim arg)
    aten.mean: (1, 2), aten.sum: (1, 2), aten.amax: (1, 2), aten.amin: (1, 2), aten.var: (1, 3), aten.std: (1, 3),
    aten.logsumexp: (1, 2), aten.prod: (1, 2), aten.max: (1, 2), aten.min: (1, 2), aten.argmax: (1, 2),
    aten.argmin: (1, 2), aten.linalg_vector_norm: (2, 3), aten.norm: (2, 3), aten.any: (1, 2), aten.all: (1, 2),
    aten.var_mean: (1, 3), aten.std_mean: (1, 3),
}  # fmt: skip


@register_handler(*_REDUCE)
class Reduce(Handler):
    """Reductions: over spatial / token dims a channel stays itself; over channels they are kept."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x = a.mir(node.args[0])
        real = a.real[node]
        di, ki = _REDUCE[node.target.overloadpacket]
        dims = arg(node, di, "dim", None)
        nd = x.ids.dim()
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0) or not isinstance(dims, (int, list, tuple)):
            return a.opaque(node, f"reduced over all dimensions by {a.where(node)}")
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = sorted({d % nd for d in dims})
        keep = bool(arg(node, ki, "keepdim", False))
        if any(varies(x.ids, d) for d in dims):
            if node.target is aten.sum.dim_IntList and x.value.is_floating_point():
                # a sum over channels reads them like a layer of ones: channels that are 0 may go
                a.vote(x.ids, x.mask & (x.value == 0), f"summed over channels by {a.where(node)}")
                mask = x.mask.all(dim=dims, keepdim=keep)
                value = x.value.double().sum(dims, keepdim=keep)
                mask, value = clean(mask.reshape(real.shape), value.reshape(real.shape))
                return Mirror(torch.zeros(real.shape, dtype=torch.long, device=real.device), mask, value)
            return a.opaque(node, f"reduced over channels by {a.where(node)}")
        ids = x.ids.amin(dims, keepdim=keep)
        mask = x.mask.all(dim=dims, keepdim=keep)
        outs = real if isinstance(real, (tuple, list)) else (real,)
        mirrors = []
        for i, t in enumerate(outs):
            try:
                v = node.target(x.value.double() if x.value.is_floating_point() else x.value, *node.args[1:], **node.kwargs)
                v = v[i] if isinstance(v, (tuple, list)) else v
                v = v.double() if v.is_floating_point() else v
                mk, v = clean(mask, v.reshape(t.shape))
            except Exception:
                mk, v = torch.zeros(t.shape, dtype=torch.bool), torch.zeros(t.shape, dtype=torch.float64)
            mirrors.append(Mirror(ids.reshape(t.shape).contiguous(), mk.reshape(t.shape), v))
        return tuple(mirrors) if isinstance(real, (tuple, list)) else mirrors[0]


_SPATIAL = [
    aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d,
    aten.adaptive_avg_pool1d, aten.adaptive_avg_pool2d, aten.adaptive_avg_pool3d, aten._adaptive_avg_pool2d,
    aten.adaptive_max_pool1d, aten.adaptive_max_pool2d, aten.max_pool2d_with_indices, aten.upsample_nearest2d,
    aten.upsample_bilinear2d, aten.upsample_nearest1d, aten.upsample_linear1d, aten._upsample_nearest_exact2d,
]  # fmt: skip


@register_handler(*_SPATIAL)
class Spatial(Handler):
    """Pooling and up-sampling (dims 2+ are positions): channel-wise; constants where the window is constant."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        x = a.mir(node.args[0])
        real = a.real[node]
        out = real[0] if isinstance(real, (tuple, list)) else real
        nd = x.ids.dim()
        if nd < 3 or any(varies(x.ids, d) for d in range(2, nd)):
            return a.opaque(node, f"{a.where(node)} over channels that vary by position")
        ids = x.ids.amin(list(range(2, nd)), keepdim=True).expand(out.shape).contiguous()

        def run(t: torch.Tensor) -> torch.Tensor:
            y = node.target(t, *node.args[1:], **node.kwargs)
            return y[0] if isinstance(y, (tuple, list)) else y

        nc = run((~x.mask).double()) > 0
        value = run(x.value.double() * x.mask)
        mask, value = clean(~nc, value)
        m = Mirror(ids, mask, value)
        if isinstance(real, (tuple, list)):
            return (m, Mirror.pinned(real[1]))
        return m


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------


@register_handler(aten.scaled_dot_product_attention)
class Attention(Handler):
    """``scaled_dot_product_attention(q, k, v)``: a head goes when its value / output channels all go.

    A head whose V rows are all zero (its V bias is a constant that passes through attention and is
    folded into the output projection's bias) or whose output-projection columns are all zero is
    removed from q, k and v, and the head count in the reshapes follows. Zero Q/K rows alone make
    the attention uniform, not absent, so they never remove a head. V may also lose value
    dimensions that are dead in every head.
    """

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        q, k, v = (a.mir(n) for n in node.args[:3])
        mask_node = arg(node, 3, "attn_mask", None)
        real = a.real[node]
        if q.ids.dim() != 4 or k.ids.dim() != 4 or v.ids.dim() != 4:
            return a.opaque(node, f"{a.where(node)} without (batch, heads, tokens, dim) inputs")
        hd = []
        for m in (q, k, v):
            t = m.ids[:1, :, :1, :]  # (1, H, 1, E)
            if not bool((m.ids == t).all()):
                return a.opaque(node, f"{a.where(node)} on heads whose channels vary by token")
            hd.append(t[0, :, 0, :].cpu())  # (H, E)
        qh, kh, vh = hd
        heads_ok = qh.shape[0] == kh.shape[0] == vh.shape[0] and not arg(node, 7, "enable_gqa", False)
        if mask_node is not None:
            mt = a.real[mask_node]
            if isinstance(mt, torch.Tensor) and mt.dim() >= 3 and mt.shape[-3] > 1:
                heads_ok = False
        if not heads_ok:
            a.pin(torch.cat([qh.flatten(), kh.flatten()]), f"heads of {a.where(node)} cannot be removed")
            a.pin(vh.flatten(), f"heads of {a.where(node)} cannot be removed")
        where = a.where(node)
        a.info[node] = {"qh": qh, "kh": kh, "vh": vh}

        def whole_heads(removed: torch.Tensor, qh=qh, kh=kh, vh=vh, where=where) -> list:
            rq, rk, rv = removed[qh], removed[kh], removed[vh]
            common = rq.all(1) & rk.all(1) & rv.all(1)
            out = []
            out.append((qh[rq & ~common[:, None]], f"its head is not removed in {where}"))
            out.append((kh[rk & ~common[:, None]], f"its head is not removed in {where}"))
            live = ~common
            dims_rm = rv[live].all(0) if bool(live.any()) else torch.zeros(rv.shape[1], dtype=torch.bool)
            allowed = common[:, None] | dims_rm[None, :]
            out.append((vh[rv & ~allowed], f"q/k of its head stay in {where}"))
            return [(i, r) for i, r in out if i.numel()]

        a.constrain(whole_heads)
        # output: channels of v; constant where v is the same over all keys
        vmask = v.mask.all(2, keepdim=True) & (v.value.amax(2, keepdim=True) == v.value.amin(2, keepdim=True))
        mask = vmask.expand(real.shape)
        value = v.value[:, :, :1, :].double().expand(real.shape)
        mask, value = clean(mask, value)
        ids = vh.to(real.device)[None, :, None, :].expand(real.shape).contiguous()
        return Mirror(ids, mask.contiguous(), value.contiguous())


# ----------------------------------------------------------------------------------------------
# tuples, constants, factories
# ----------------------------------------------------------------------------------------------


@register_handler(operator.getitem)
class GetItem(Handler):
    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        m = a.mir(node.args[0])
        real = a.real[node]
        if isinstance(m, (tuple, list)):
            out = m[node.args[1]]
            if out is None and isinstance(real, torch.Tensor):
                return Mirror.pinned(real)  # an auxiliary output (saved statistics, indices)
            return out
        if isinstance(real, torch.Tensor):
            return a.opaque(node, f"{a.where(node)} of an unknown value")
        return None


_FACTORIES = [
    aten.arange, aten.zeros, aten.ones, aten.full, aten.empty, aten.scalar_tensor, aten.new_ones, aten.new_zeros,
    aten.new_full, aten.new_empty, aten.zeros_like, aten.ones_like, aten.full_like, aten.empty_like,
    aten.linspace, aten.eye, aten.tril, aten.triu,
]  # fmt: skip


@register_handler(*_FACTORIES)
class Factory(Handler):
    """Tensors made from shapes and constants: input-independent, no channels of their own."""

    def analyze(self, a: Analysis, node: fx.Node) -> Any:
        real = a.real[node]
        packet = node.target.overloadpacket
        if packet in (aten.tril, aten.triu):
            x = a.mir(node.args[0])
            if varies(x.ids, -1) or varies(x.ids, -2):
                return a.opaque(node, f"{a.where(node)} over channels")
            out = node.target(x.value, *node.args[1:], **node.kwargs)
            return Mirror(x.ids, x.mask, out)
        if packet in (aten.zeros_like, aten.ones_like, aten.full_like):
            x = a.mir(node.args[0])
            return Mirror(x.ids, torch.ones_like(x.mask), real.double() if real.is_floating_point() else real.clone())
        return Mirror.pinned(real, const=True)
