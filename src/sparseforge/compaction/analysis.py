"""Channel liveness analysis on an ATen graph: channel ids, constants, votes, and the removal fixpoint.

The graph is run once on the example inputs. Next to every real tensor it carries a *mirror*
of the same shape (:class:`Mirror`):

* ``ids`` -- the channel each element belongs to. A layer that produces channels (Conv, Linear,
  ``addmm`` with a parameter, embedding) allocates fresh *candidate* ids for its output channels;
  layout ops (view, permute, cat, split, ...) move ids exactly as they move the data, because the
  op itself is applied to the mirror; element-wise ops with several operands *join* the ids they
  combine (a residual add makes channel ``c`` of both branches one channel). Model inputs, model
  outputs and ops without a handler *pin* the ids they touch. Parameters used as values
  (layer scale, position embeddings, biases) get *passive* ids that follow whatever they join.
* ``mask`` / ``value`` -- whether the element is the same for every input (its value then in
  float64): a filter whose weights are all zero outputs its bias, BatchNorm maps it to its shift,
  activations map it through, zero padding makes it position-dependent.

Consumers *vote* on the channels they read: a Conv/Linear input channel may go when its weight
slice is all zero, or when it is a constant ``k`` at every position (its contribution
``W[:, c] * k`` is then folded into the bias; a zero-padded conv accepts only ``k == 0``).
A channel (a connected component of joined ids) is removed iff it holds a candidate id, no pin,
no failed vote, and the *constraints* accept it: every tensor's removed elements must form whole
slices (a product of per-dimension index sets, so that the compacted graph is a dense graph again),
attention heads go as a whole in q, k and v, grouped convolutions lose the same count per group.
Constraints veto channels until a fixpoint.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ..errors import TraceError
from .capture import module_of

__all__ = ["Mirror", "Analysis", "Producer"]


@dataclass
class Mirror:
    """Per-element channel ids and constants of one tensor (same shape as the tensor)."""

    ids: torch.Tensor  # int64: channel id of every element (0 = pinned)
    mask: torch.Tensor  # bool: the element does not depend on the inputs
    value: torch.Tensor  # its value where ``mask`` (float64 for floating tensors), 0 elsewhere

    @staticmethod
    def pinned(real: torch.Tensor, *, const: bool = False) -> Mirror:
        ids = torch.zeros(real.shape, dtype=torch.long, device=real.device)
        if const:
            return Mirror(ids, torch.ones(real.shape, dtype=torch.bool, device=real.device), _f64(real))
        return Mirror(ids, torch.zeros(real.shape, dtype=torch.bool, device=real.device), torch.zeros_like(_f64(real)))

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Mirror:
        """The mirror of a pure layout op ``fn`` (applied to ids, mask and value alike)."""
        return Mirror(fn(self.ids), fn(self.mask), fn(self.value))


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double() if t.is_floating_point() else t.detach().clone()


def clean(mask: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop non-finite constants and zero the values of non-constant elements."""
    if value.is_floating_point():
        mask = mask & torch.isfinite(value)
    return mask, torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


def channel_vector(ids: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The ids along ``dim`` if they do not depend on the other dimensions, else None."""
    if ids.dim() == 0:
        return None
    d = dim % ids.dim()
    moved = ids.movedim(d, -1).reshape(-1, ids.shape[d])  # (rest, S)
    if moved.shape[0] == 0:
        return None
    v = moved[0]
    return v.cpu().clone() if bool((moved == v).all()) else None


def uniform_channels(m: Mirror, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per index along ``dim``: whether it is one constant everywhere, and that constant."""
    d = dim % m.ids.dim()
    mask = m.mask.movedim(d, 0).reshape(m.mask.shape[d], -1)  # (S, rest)
    val = m.value.movedim(d, 0).reshape(m.value.shape[d], -1).double()
    if mask.shape[1] == 0:
        return torch.zeros(mask.shape[0], dtype=torch.bool), torch.zeros(mask.shape[0], dtype=torch.float64)
    ok = mask.all(1) & (val.amax(1) == val.amin(1))
    k = torch.where(ok, val[:, 0], torch.zeros((), dtype=torch.float64, device=val.device))
    return ok.cpu(), k.cpu()


@dataclass
class Producer:
    """A layer whose output channels got fresh candidate ids (for the report)."""

    node: fx.Node
    name: str
    op: str
    ids: torch.Tensor  # (C,) out-channel ids
    zeroed: torch.Tensor  # (C,) bool: weight slice all zero


_SHAPE_ONLY = {
    "aten.sym_size.int", "aten.sym_numel.default", "aten.sym_stride.int", "aten.sym_storage_offset.default",
    "aten._assert_tensor_metadata.default", "aten.dim.default", "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg",
}  # fmt: skip


class Analysis:
    """Runs the handlers over a captured graph and decides which channels go.

    Args:
        gm: the captured (unlifted) graph module.
        names: module name -> class name of the original model (for messages).
        targets: predicate on a producing module's name: may its channels be removed?
        structural: ignore votes and soft pins and take only zeroed channels as candidates
            (an upper bound on what removing every zeroed channel would give, exact or not).
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        *,
        targets: Callable[[str], bool] | None = None,
        structural: bool = False,
        strict: bool = False,
    ) -> None:
        from .handlers import handler_for

        self._handler_for = handler_for
        self.gm = gm
        self.targets = targets
        self.structural = structural
        self.strict = strict
        self.n_ids = 1  # id 0 is the pinned root
        self._candidates: list[torch.Tensor] = []
        self._zeroed_candidates: list[torch.Tensor] = []
        self.edges: list[torch.Tensor] = []
        self.pins: list[tuple[torch.Tensor, str, bool]] = []
        self.votes: list[tuple[torch.Tensor, torch.Tensor, str]] = []
        self.constraints: list[Callable[[torch.Tensor], list[tuple[torch.Tensor, str]]]] = []
        self.param_dims: dict[str, dict[int, torch.Tensor]] = {}
        self.producers: list[Producer] = []
        self.info: dict[fx.Node, Any] = {}
        self.unhandled: list[str] = []
        self.real: dict[fx.Node, Any] = {}
        self._mir: dict[fx.Node, Any] = {}
        self._dynamic: set[fx.Node] = set()
        self.fqn_users: dict[str, int] = {}
        for n in gm.graph.nodes:
            if n.op == "get_attr":
                self.fqn_users[n.target] = self.fqn_users.get(n.target, 0) + len(n.users)
        self.removed: torch.Tensor | None = None
        self.label: torch.Tensor | None = None
        self.reasons: dict[int, str] = {}

    # ------------------------------------------------------------------------------------------
    # ids
    # ------------------------------------------------------------------------------------------
    def new_ids(self, count: int, *, candidate: bool = False, zeroed: torch.Tensor | None = None) -> torch.Tensor:
        ids = torch.arange(self.n_ids, self.n_ids + count, dtype=torch.long)
        self.n_ids += count
        if candidate:
            self._candidates.append(ids)
            if zeroed is not None:
                self._zeroed_candidates.append(ids[zeroed.cpu()])
        return ids

    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Join the channels of ``a`` and ``b`` element-wise (same shape, or broadcastable)."""
        a, b = torch.broadcast_tensors(a.detach().cpu(), b.detach().cpu())
        ab = _compress(torch.stack([a, b]), start=1)
        a, b = ab[0].reshape(-1), ab[1].reshape(-1)
        differ = a != b
        if not bool(differ.any()):
            return
        pair = torch.unique(a[differ] * (1 << 32) + b[differ])
        self.edges.append(torch.stack([pair >> 32, pair & ((1 << 32) - 1)]))

    def pin(self, ids: torch.Tensor, reason: str, *, hard: bool = True) -> None:
        """Keep every channel of ``ids`` (``hard=False``: ignored by the structural bound)."""
        ids = torch.unique(ids.detach().reshape(-1).cpu())
        ids = ids[ids != 0]
        if ids.numel():
            self.pins.append((ids, reason, hard))

    def vote(self, ids: torch.Tensor, ok: torch.Tensor, reason: str) -> None:
        """A consumer's verdict per element of ``ids``: ``ok`` False keeps that channel."""
        ids, ok = ids.reshape(-1).cpu(), ok.reshape(-1).cpu()
        if ids.numel():
            self.votes.append((ids, ok, reason))

    def constrain(self, fn: Callable[[torch.Tensor], list[tuple[torch.Tensor, str]]]) -> None:
        """Register ``fn(removed_by_id) -> [(ids to keep, reason), ...]``, run until a fixpoint."""
        self.constraints.append(fn)

    def param_dim(self, fqn: str, dim: int, ids: torch.Tensor) -> None:
        """Dimension ``dim`` of parameter ``fqn`` is indexed by channels ``ids`` (sliced with them)."""
        dims = self.param_dims.setdefault(fqn, {})
        ids = ids.detach().reshape(-1).cpu()
        if dim in dims:
            self.union(dims[dim], ids)
        else:
            dims[dim] = ids

    def producer(self, node: fx.Node, op: str, weight_fqn: str, count: int, zeroed: torch.Tensor) -> torch.Tensor:
        """Fresh candidate ids for ``count`` output channels of the layer owning ``weight_fqn``."""
        name = weight_fqn.rpartition(".")[0]
        allowed = self.targets is None or self.targets(name)
        ids = self.new_ids(count, candidate=True, zeroed=zeroed)
        if not allowed:
            self.pin(ids, f"'{name}' is not in targets", hard=False)
        self.producers.append(Producer(node, name, op, ids, zeroed.cpu()))
        return ids

    # ------------------------------------------------------------------------------------------
    # graph access
    # ------------------------------------------------------------------------------------------
    def where(self, node: fx.Node) -> str:
        """``aten.op in 'module' (Class)`` for messages."""
        path, cls = module_of(node)
        op = _op_name(node)
        return f"{op} in '{path}' ({cls})" if path or cls else f"{op} in the model's own forward"

    def mir(self, arg: Any) -> Any:
        """The mirror of a graph value (None for non-tensors); computed lazily for constant nodes."""
        if not isinstance(arg, fx.Node):
            return None
        if arg not in self._mir:
            self._mir[arg] = self._analyze(arg)
        return self._mir[arg]

    def is_dynamic(self, node: Any) -> bool:
        return isinstance(node, fx.Node) and node in self._dynamic

    def param_of(self, arg: Any) -> tuple[str, tuple[int, ...]] | None:
        """``(fqn, perm)`` if ``arg`` is a parameter/buffer, possibly transposed/permuted/cast."""
        perm: tuple[int, ...] | None = None
        node = arg
        while isinstance(node, fx.Node):
            if node.op == "get_attr":
                t = self.real[node]
                if not isinstance(t, torch.Tensor):
                    return None
                base = tuple(range(t.dim()))
                return node.target, (base if perm is None else perm)
            name = _op_name(node)
            x = self.real.get(node)
            if not isinstance(x, torch.Tensor):
                return None
            if name in ("aten.t.default", "aten.transpose.int", "aten.permute.default"):
                nd = x.dim()
                if name == "aten.t.default":
                    p = (1, 0) if nd == 2 else (0,)
                elif name == "aten.transpose.int":
                    i, j = node.args[1] % nd, node.args[2] % nd
                    p = list(range(nd))
                    p[i], p[j] = p[j], p[i]
                    p = tuple(p)
                else:
                    p = tuple(d % nd for d in node.args[1])
                perm = p if perm is None else tuple(p[d] for d in perm)
            elif name not in ("aten._to_copy.default", "aten.clone.default", "aten.contiguous.default",
                              "aten.detach.default", "aten.alias.default", "aten.lift_fresh_copy.default"):
                return None
            node = node.args[0]
        return None

    # ------------------------------------------------------------------------------------------
    # run
    # ------------------------------------------------------------------------------------------
    def run(self, flat_inputs: list[Any]) -> None:
        inputs = iter(flat_inputs)
        with torch.no_grad():
            for node in self.gm.graph.nodes:
                if node.op == "placeholder":
                    x = next(inputs)
                    self.real[node] = x
                    self._dynamic.add(node)
                    if isinstance(x, torch.Tensor):
                        self._mir[node] = Mirror.pinned(x)
                elif node.op == "get_attr":
                    self.real[node] = _get_attr(self.gm, node.target)
                elif node.op == "call_module":
                    self.real[node] = None  # export's guard check: not part of the computation
                elif node.op == "call_function":
                    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self.real[n])
                    try:
                        self.real[node] = node.target(*args, **kwargs)
                    except Exception as exc:
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        raise TraceError(
                            f"compact: the captured graph failed at {self.where(node)}: {first}; "
                            "check that example_inputs are valid for the model"
                        ) from None
                    if any(a in self._dynamic for a in node.all_input_nodes):
                        self._dynamic.add(node)
                        self.mir(node)
                elif node.op == "output":
                    for m in _flat_mirrors(self.mir(a) for a in node.all_input_nodes):
                        self.pin(m.ids, "reaches the model's output")

    def _analyze(self, node: fx.Node) -> Any:
        if node.op == "get_attr":
            t = self.real[node]
            if not isinstance(t, torch.Tensor):
                return None
            ids = self.new_ids(t.numel()).view(t.shape).to(t.device)
            return Mirror(ids, torch.ones(t.shape, dtype=torch.bool, device=t.device), _f64(t))
        if node.op != "call_function":
            return None
        real = self.real[node]
        name = _op_name(node)
        if name in _SHAPE_ONLY:
            return None
        handler = self._handler_for(node.target)
        if handler is None:
            return self.opaque(node, f"no handler for {self.where(node)}", unhandled=True)
        try:
            return handler.analyze(self, node)
        except TraceError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TraceError(
                f"compact: the handler of {self.where(node)} failed ({type(exc).__name__}: {first}); "
                "pass targets= to leave this part of the model out, and please report it"
            ) from None
        del real

    def opaque(self, node: fx.Node, reason: str, *, unhandled: bool = False) -> Any:
        """An op the analysis does not model: pin every channel it touches; constants pass if all inputs are."""
        ins = [self.mir(a) for a in node.all_input_nodes]
        if unhandled and any(bool((m.ids != 0).any()) for m in _flat_mirrors(ins)):  # it touches channels
            if self.strict:
                raise TraceError(
                    f"compact: no handler for {self.where(node)}; register one with "
                    "sparseforge.compaction.register_handler or pass strict=False to keep its channels"
                )
            msg = self.where(node)
            if msg not in self.unhandled:
                self.unhandled.append(msg)
        for m in _flat_mirrors(ins):
            self.pin(m.ids, reason)
        real = self.real[node]
        all_const = all(bool(m.mask.all()) for m in _flat_mirrors(ins))
        if isinstance(real, torch.Tensor):
            return Mirror.pinned(real, const=all_const)
        if isinstance(real, (tuple, list)):
            return tuple(Mirror.pinned(r, const=all_const) if isinstance(r, torch.Tensor) else None for r in real)
        return None

    # ------------------------------------------------------------------------------------------
    # decision
    # ------------------------------------------------------------------------------------------
    def mirrors(self) -> Iterable[tuple[fx.Node, Mirror]]:
        for node, m in self._mir.items():
            for mm in _flat_mirrors([m]):
                yield node, mm

    def resolve(self) -> torch.Tensor:
        """Run the fixpoint; returns ``removed`` (bool per id) and fills ``self.reasons`` per component."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.n_ids
        e = torch.cat(self.edges, 1) if self.edges else torch.zeros(2, 0, dtype=torch.long)
        g = coo_matrix((np.ones(e.shape[1], dtype=np.int8), (e[0].numpy(), e[1].numpy())), shape=(n, n))
        n_comp, lab = connected_components(g, directed=False)
        label = torch.from_numpy(lab.astype(np.int64))
        self.label = label
        cand = torch.zeros(n_comp, dtype=torch.bool)
        pool = self._zeroed_candidates if self.structural else self._candidates
        for ids in pool:
            cand[label[ids]] = True
        keep = torch.zeros(n_comp, dtype=torch.bool)
        keep[label[0]] = True
        why: dict[int, str] = {}

        noted = torch.zeros(n_comp, dtype=torch.bool)

        def note(comps: torch.Tensor, reason: str) -> None:
            fresh = torch.unique(comps)
            fresh = fresh[~noted[fresh]]
            noted[fresh] = True
            for c in fresh.tolist():
                why[c] = reason

        for ids, reason, hard in self.pins:
            if hard or not self.structural:
                keep[label[ids]] = True
                note(label[ids], reason)
        if not self.structural:
            for ids, ok, reason in self.votes:
                bad = label[ids[~ok]]
                keep[bad] = True
                note(bad, reason)
        removable = cand & ~keep

        def apply(vetoes: list[tuple[torch.Tensor, str]]) -> bool:
            changed = False
            for ids, reason in vetoes:
                comps = label[ids.reshape(-1).cpu()]
                newly = torch.unique(comps[removable[comps]])
                if newly.numel():
                    removable[newly] = False
                    note(newly, reason)
                    changed = True
            return changed

        # Vetoes in tiers, so that the arbitrary ones (which channel stays in an emptied tensor) see
        # the state the specific ones (whole heads, equal groups, whole slices) settle on.
        # the tensors that can lose elements at all, with dims along which ids do not vary squeezed
        mirrors = []
        for node, m in self.mirrors():
            if m.ids.numel():
                ids = _compress(m.ids.cpu())
                if bool(removable[label[ids.reshape(-1)]].any()):
                    mirrors.append((node, ids))
        for _ in range(10000):
            removed = removable[label]
            if apply([v for fn in self.constraints for v in fn(removed)]):
                continue
            if apply([v for node, m in mirrors for v in _product_vetoes(m, removed, lambda n=node: self._where_any(n))]):
                continue
            if not apply([v for node, m in mirrors for v in _keep_one(m, removed, lambda n=node: self._where_any(n))]):
                break
        self.removed = removable[label]
        self.reasons = why
        return self.removed

    def _where_any(self, node: fx.Node) -> str:
        if node.op == "call_function":
            return self.where(node)
        if node.op == "get_attr":
            return f"parameter '{node.target}'"
        return f"input '{node.name}'"

    def reason_of(self, ids: torch.Tensor) -> list[str]:
        assert self.label is not None
        return [self.reasons.get(int(c), "a live channel joins it") for c in self.label[ids.cpu()]]


def _compress(t: torch.Tensor, *, start: int = 0) -> torch.Tensor:
    """``t`` with every dim (from ``start``) along which it does not vary reduced to size 1."""
    for d in range(start, t.dim()):
        if t.shape[d] > 1:
            first = t.narrow(d, 0, 1)
            if bool((first == t).all()):
                t = first
    return t


def _keep_one(ids: torch.Tensor, removed: torch.Tensor, where: Callable[[], str]) -> list[tuple[torch.Tensor, str]]:
    """The first id of a tensor whose every element would go (so that no tensor becomes empty)."""
    if ids.numel() == 0 or not bool(removed[ids.reshape(-1).cpu()].all()):
        return []
    return [(ids.reshape(-1)[:1], f"one channel is kept so that {where()} is not empty")]


def _product_vetoes(ids: torch.Tensor, removed: torch.Tensor, where: Callable[[], str]) -> list[tuple[torch.Tensor, str]]:
    """Ids whose removal in this tensor would not be whole slices (a ragged tensor)."""
    if ids.numel() == 0:
        return []
    rm = removed[ids.reshape(-1).cpu()].view(ids.shape)
    if not bool(rm.any()) or bool(rm.all()):
        return []
    implied = torch.zeros_like(rm)
    for d in range(rm.dim()):
        others = [k for k in range(rm.dim()) if k != d]
        whole = rm.all(dim=others, keepdim=True) if others else rm
        implied |= whole
    bad = rm & ~implied
    if bool(bad.any()):
        return [(torch.unique(ids.cpu()[bad]), f"removing it would leave a ragged tensor at {where()}")]
    return []


def _flat_mirrors(items: Iterable[Any]) -> list[Mirror]:
    out: list[Mirror] = []
    for m in items:
        if isinstance(m, Mirror):
            out.append(m)
        elif isinstance(m, (tuple, list)):
            out += _flat_mirrors(m)
    return out


def _op_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"aten.{t._opname}.{t._overloadname}" if t.namespace == "aten" else str(t)
    if t is operator.getitem:
        return "getitem"
    return getattr(t, "__name__", str(t))


def _get_attr(root: torch.nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
