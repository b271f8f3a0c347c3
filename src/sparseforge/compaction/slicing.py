"""Re-emit the captured graph with removed channels sliced out of parameters and shape arguments.

Every node is re-emitted by its handler's ``rebuild`` (see :mod:`.handlers`); parameters are
sliced along each dimension that a channel indexes. Conv and Linear layers whose module was a
plain ``nn.Conv*d`` / ``nn.Linear`` come back as real, smaller modules of that class
(``call_module``); every other parameter is kept at its original name in a container module, so
``state_dict()`` keys match the original model's.
"""

from __future__ import annotations

import copy
import operator
import warnings
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import TraceError
from .analysis import Analysis, Mirror, _get_attr
from .capture import module_of
from .handlers import handler_for
from .report import CompactReport, LayerReport

__all__ = ["Rebuild", "CompactedModule"]

_MODULE_TYPES = {
    "linear": (nn.Linear,), "conv1d": (nn.Conv1d,), "conv2d": (nn.Conv2d,), "conv3d": (nn.Conv3d,),
}  # fmt: skip


class _Holder(nn.Module):
    """Holds the (sliced) parameters and buffers of an original module the graph uses directly."""

    def __init__(self, original: str = "") -> None:
        super().__init__()
        self._original = original

    def __getitem__(self, idx: int | str) -> nn.Module:  # `model.layers[0]` as on the original ModuleList
        return self._modules[str(idx)]

    def __len__(self) -> int:
        return len(self._modules)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        self.__dict__.pop(name, None)  # the fast-path mirror of a child module

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in [*self._parameters.items(), *self._buffers.items()] if v is not None)
        return f"{self._original + ': ' if self._original else ''}{shapes}"


class CompactedModule(fx.GraphModule):
    """The compacted model: a graph of ATen ops over real ``nn`` layers and the sliced parameters."""

    def __deepcopy__(self, memo: dict) -> CompactedModule:
        with warnings.catch_warnings():  # torch's TreeSpec copy warns about its own deprecated LeafSpec
            warnings.simplefilter("ignore", FutureWarning)
            new = super().__deepcopy__(memo)
        fast_paths(new)
        return new

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        self.__dict__.pop(name, None)


def fast_paths(module: nn.Module) -> None:
    """Mirror child modules of the graph module and its holders into their instance ``__dict__``.

    The generated forward reads each parameter through a chain of attribute lookups
    (``self.encoder.layer[0]...weight``); ``nn.Module.__getattr__`` costs about 0.4 us a step, which
    for a small Hugging Face model was ~40% of its forward. Reassigning a child (``nn.Module.__setattr__``)
    drops the mirror, so lookups stay correct.
    """
    for name, child in module._modules.items():
        if child is None:
            continue
        object.__setattr__(module, name, child)
        if isinstance(child, _Holder):
            fast_paths(child)


class Rebuild:
    """Builds the compacted :class:`torch.fx.GraphModule` from a resolved :class:`Analysis`."""

    def __init__(self, analysis: Analysis, source: nn.Module, gm: fx.GraphModule) -> None:
        self.analysis = analysis
        self.source = source
        self.gm = gm
        self.removed = analysis.removed
        self.graph = fx.Graph()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.graph._codegen = copy.deepcopy(gm.graph._codegen)
        self.env: dict[fx.Node, Any] = {}
        self.params: dict[str, torch.Tensor] = {}
        self.modules: dict[str, nn.Module] = {}
        self.folds: dict[fx.Node, torch.Tensor] = {}
        self._keep: dict[fx.Node, list[torch.Tensor | None]] = {}

    # ------------------------------------------------------------------------------------------
    # shapes and keeps
    # ------------------------------------------------------------------------------------------
    def removed_of(self, ids: torch.Tensor) -> torch.Tensor:
        return self.removed[ids.reshape(-1).cpu()].view(ids.shape)

    def keep_index(self, ids: torch.Tensor) -> torch.Tensor:
        return (~self.removed_of(ids)).reshape(-1).nonzero().flatten()

    def _mirror(self, node: Any) -> Mirror | None:
        m = self.analysis._mir.get(node)
        return m if isinstance(m, Mirror) else None

    def keep(self, node: Any) -> list[torch.Tensor | None]:
        """Per dimension of ``node``'s tensor: the kept indices, or None when nothing goes."""
        if node in self._keep:
            return self._keep[node]
        m = self._mirror(node)
        real = self.analysis.real.get(node)
        nd = real.dim() if isinstance(real, torch.Tensor) else 0
        out: list[torch.Tensor | None] = [None] * nd
        if m is not None and m.ids.numel():
            rm = self.removed_of(m.ids)
            if bool(rm.any()):
                for d in range(nd):
                    others = [k for k in range(nd) if k != d]
                    gone = rm.all(dim=others) if others else rm
                    if bool(gone.any()):
                        out[d] = (~gone).nonzero().flatten()
        self._keep[node] = out
        return out

    def keep_mask(self, node: Any, dim: int) -> torch.Tensor | None:
        k = self.keep(node)[dim]
        if k is None:
            return None
        mask = torch.zeros(self.old_shape(node)[dim], dtype=torch.bool)
        mask[k] = True
        return mask

    def old_shape(self, node: Any) -> list[int]:
        return list(self.analysis.real[node].shape)

    def new_shape(self, node: Any) -> list[int]:
        return [s if k is None else int(k.numel()) for s, k in zip(self.old_shape(node), self.keep(node))]

    # ------------------------------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------------------------------
    def param_keep(self, fqn: str) -> list[torch.Tensor | None]:
        a = self.analysis
        t = _get_attr(self.gm, fqn)
        keep: list[torch.Tensor | None] = [None] * t.dim()
        masks = [torch.ones(s, dtype=torch.bool) for s in t.shape]
        for d, ids in a.param_dims.get(fqn, {}).items():
            masks[d] &= ~self.removed_of(ids)
        for node, m in a._mir.items():
            if node.op == "get_attr" and node.target == fqn and isinstance(m, Mirror):
                for d, k in enumerate(self.keep(node)):
                    if k is not None:
                        mk = torch.zeros(t.shape[d], dtype=torch.bool)
                        mk[k] = True
                        masks[d] &= mk
        for d, mk in enumerate(masks):
            if not bool(mk.all()):
                keep[d] = mk.nonzero().flatten()
        return keep

    def param(self, fqn: str) -> torch.Tensor:
        """The parameter ``fqn`` sliced along every dimension its channels index (or an override)."""
        if fqn not in self.params:
            t = _get_attr(self.gm, fqn).detach()
            for d, k in enumerate(self.param_keep(fqn)):
                if k is not None:
                    t = t.index_select(d, k.to(t.device))
            self.params[fqn] = t.clone()
        return self.params[fqn]

    def value(self, node: Any) -> torch.Tensor | None:
        """Sliced value of a parameter-rooted node, in that node's layout and dtype."""
        if node is None:
            return None
        pp = self.analysis.param_of(node)
        if pp is None:
            raise TraceError(f"compact: internal error, {node.name} is not a parameter")
        t = self.param(pp[0]).permute(pp[1]) if len(pp[1]) > 1 else self.param(pp[0])
        real = self.analysis.real[node]
        return t.to(real.dtype)

    def set_param(self, fqn: str, t: torch.Tensor) -> None:
        self.params[fqn] = t.detach()

    def tensor_attr(self, orig: Any, t: torch.Tensor, near: Any, suffix: str) -> fx.Node:
        """A node for tensor ``t``: replaces parameter ``orig``'s value, or a new parameter next to ``near``'s."""
        a = self.analysis
        if orig is not None:
            pp = a.param_of(orig)
            base = _get_attr(self.gm, pp[0])
            self.set_param(pp[0], t.to(base.dtype))
            return self.env[orig]
        owner = a.param_of(near)[0].rpartition(".")[0]
        fqn = f"{owner}.{suffix}" if owner else suffix
        i = 0
        while fqn in self.params or _has_attr(self.gm, fqn):
            i += 1
            fqn = f"{owner}.{suffix}_{i}" if owner else f"{suffix}_{i}"
        self.params[fqn] = nn.Parameter(t.detach().clone())
        return self.graph.get_attr(fqn)

    def module_for(self, node: fx.Node, param_nodes: list[Any], kind: str) -> str | None:
        """The owner module's name if the op can be re-emitted as a real ``nn`` module of its class."""
        a = self.analysis
        fqns = []
        for p in param_nodes:
            if not isinstance(p, fx.Node) or p.op != "get_attr" or len(p.users) != 1:
                return None
            fqns.append(p.target)
        owner = fqns[0].rpartition(".")[0]
        if not owner or any(f.rpartition(".")[0] != owner for f in fqns):
            return None
        try:
            mod = self.source.get_submodule(owner)
        except AttributeError:
            return None
        if type(mod) not in _MODULE_TYPES.get(kind, ()):
            return None
        own = {f"{owner}.{n}" for n, _ in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]}
        if own != set(fqns) or any(a.fqn_users.get(f, 0) != 1 for f in fqns):
            return None
        return owner

    def set_module_params(self, mod: nn.Module, tensors: dict[str, torch.Tensor | None], owner: str) -> None:
        src = self.source.get_submodule(owner)
        for name, t in tensors.items():
            if t is None:
                continue
            like = getattr(src, name, None)
            grad = like.requires_grad if isinstance(like, nn.Parameter) else True
            setattr(mod, name, nn.Parameter(t.detach().clone().contiguous(), requires_grad=grad))
        mod.eval()

    # ------------------------------------------------------------------------------------------
    # emission
    # ------------------------------------------------------------------------------------------
    def _meta(self, new: fx.Node, old: fx.Node | None) -> fx.Node:
        if old is not None:
            for k in ("nn_module_stack", "stack_trace", "source_fn_stack"):
                if k in old.meta:
                    new.meta[k] = old.meta[k]
            real = self.analysis.real.get(old)
            if isinstance(real, torch.Tensor):
                new.meta["sf_shape_dtype"] = (tuple(real.shape), real.dtype)  # before slicing
        return new

    def copy(self, node: fx.Node, *, args: Any = None, kwargs: Any = None) -> fx.Node:
        args = node.args if args is None else args
        kwargs = node.kwargs if kwargs is None else kwargs
        a2, k2 = fx.node.map_arg((args, kwargs), lambda n: self.env[n])
        return self._meta(self.graph.create_node(node.op, node.target, a2, k2, name=node.name), node)

    def map(self, value: Any) -> Any:
        """Map old graph nodes inside ``value`` to their re-emitted counterparts."""
        return fx.node.map_arg(value, lambda n: self.env[n])

    def emit(self, target: Any, args: tuple, *, node: fx.Node | None = None, kwargs: dict | None = None) -> fx.Node:
        return self._meta(self.graph.call_function(target, args, kwargs or {}), node)

    def call_module(self, owner: str, mod: nn.Module, args: tuple, node: fx.Node) -> fx.Node:
        self.modules[owner] = mod
        return self._meta(self.graph.call_module(owner, args), node)

    def note_fold(self, node: fx.Node, fold: torch.Tensor) -> None:
        self.folds[node] = fold

    # ------------------------------------------------------------------------------------------
    # run
    # ------------------------------------------------------------------------------------------
    def run(self, class_name: str) -> fx.GraphModule:
        a = self.analysis
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                self.env[node] = None  # export's input-guard module: the compacted graph has none
                continue
            if node.op in ("placeholder", "output"):
                self.env[node] = self._meta(self.graph.node_copy(node, lambda n: self.env[n]), node)
                continue
            if node.op == "get_attr":
                self.env[node] = self._meta(self.graph.get_attr(node.target), node)
                continue
            h = handler_for(node.target)
            try:
                self.env[node] = h.rebuild(self, node) if h is not None else self.copy(node)
            except TraceError:
                raise
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise TraceError(
                    f"compact: cannot slice {a.where(node)} ({type(exc).__name__}: {first}); "
                    "pass targets= to leave this layer out, and please report it"
                ) from None
        for n in reversed(list(self.graph.nodes)):  # dead-code elimination (weights now inside modules)
            if n.op in ("call_function", "get_attr") and not n.users and not (n.op == "call_function" and n.is_impure()):
                self.graph.erase_node(n)
        reinplace(self.graph)
        root = nn.Module()
        installed: set[str] = set()
        for n in self.graph.nodes:
            if n.op == "get_attr" and n.target not in installed:
                self._install(root, n.target)
                installed.add(n.target)
            elif n.op == "call_module":
                _set_path(root, n.target, self.modules[n.target], self.source)
        # parameters and buffers the graph does not read (e.g. BatchNorm's num_batches_tracked)
        # stay at their names, so state_dict() keys match the original's
        owners = tuple(f"{t}." for t in self.modules)
        for fqn, _ in [*self.gm.named_parameters(), *self.gm.named_buffers()]:
            if fqn not in installed and not fqn.startswith(owners) and fqn not in self.modules:
                self._install(root, fqn)
                installed.add(fqn)
        _order_like(root, self.source)
        gm = CompactedModule(root, self.graph, class_name)
        # keep the holders (names of the original classes, buffer persistence) instead of fx's copies
        for name in list(gm._modules):
            del gm._modules[name]
        for name, child in root.named_children():
            gm.add_module(name, child)
        for name, p in root._parameters.items():
            gm._parameters[name] = p
        for name, b in root._buffers.items():
            gm._buffers[name] = b
        gm._non_persistent_buffers_set = set(root._non_persistent_buffers_set)
        fast_paths(gm)
        for attr in ("_in_spec", "_out_spec"):
            if hasattr(self.gm, attr):
                setattr(gm, attr, getattr(self.gm, attr))
        gm.eval()
        return gm

    def _install(self, root: nn.Module, fqn: str) -> None:
        t = self.params[fqn] if fqn in self.params else self.param(fqn)
        owner_path, _, name = fqn.rpartition(".")
        orig = _get_attr(self.gm, fqn) if _has_attr(self.gm, fqn) else t
        holder = _holder(root, owner_path, self.source)
        if isinstance(orig, nn.Parameter) or isinstance(t, nn.Parameter):
            grad = orig.requires_grad if isinstance(orig, nn.Parameter) else True
            holder.register_parameter(name, nn.Parameter(t.detach().clone().contiguous(), requires_grad=grad))
        else:
            owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
            persistent = name not in getattr(owner, "_non_persistent_buffers_set", set())
            holder.register_buffer(name, t.detach().clone().contiguous(), persistent=persistent)

    # ------------------------------------------------------------------------------------------
    # report
    # ------------------------------------------------------------------------------------------
    def report(self, params_before: int, params_after: int, dynamic: bool) -> CompactReport:
        a = self.analysis
        rep = CompactReport(params_before=params_before, params_after=params_after, dynamic_batch=dynamic,
                            unhandled=list(a.unhandled))
        producers = set()
        for p in a.producers:
            rm = self.removed_of(p.ids)
            name = p.name
            producers.add(name)
            lr = LayerReport(name, p.op, int(p.ids.numel()), _idx(p.zeroed), _idx(rm))
            alive = p.zeroed & ~rm
            if bool(alive.any()):
                idx = alive.nonzero().flatten()
                lr.kept_alive = dict(zip(idx.tolist(), a.reason_of(p.ids[idx])))
            rep.layers[name] = lr
            if bool(rm.any()):
                rep.removed[name] = _idx(rm)
        for node, info in a.info.items():
            if not isinstance(info, dict):
                continue
            if "cols" in info:
                pp = a.param_of(node.args[1] if node.target.overloadpacket is not torch.ops.aten.addmm else node.args[2])
                name = pp[0].rpartition(".")[0] if pp else node.name
                rm = self.removed_of(info["cols"])
                if bool(rm.any()):
                    rep.inputs_removed[name] = _idx(rm)
                if node in self.folds:
                    rep.folded[name] = _idx(self.folds[node])
            if "qh" in info:
                heads = self.removed_of(info["vh"]).all(1) & self.removed_of(info["qh"]).all(1)
                if bool(heads.any()):
                    rep.heads[module_of(node)[0] or node.name] = _idx(heads)
        for fqn in list(a.param_dims) + [n.target for n in a._mir if n.op == "get_attr"]:
            owner = fqn.rpartition(".")[0]
            if owner in producers or owner in rep.removed:
                continue
            k = self.param_keep(fqn)
            if k and k[0] is not None:
                size = _get_attr(self.gm, fqn).shape[0]
                gone = torch.ones(size, dtype=torch.bool)
                gone[k[0]] = False
                rep.removed[owner] = _idx(gone)
        return rep


_aten = torch.ops.aten
# out-of-place op -> its in-place twin (capture functionalised ``ReLU(inplace=True)``, ``out += x``)
_INPLACE = {
    _aten.relu.default: _aten.relu_.default, _aten.hardtanh.default: _aten.hardtanh_.default,
    _aten.silu.default: _aten.silu_.default, _aten.gelu.default: _aten.gelu_.default,
    _aten.sigmoid.default: _aten.sigmoid_.default, _aten.tanh.default: _aten.tanh_.default,
    _aten.leaky_relu.default: _aten.leaky_relu_.default, _aten.hardswish.default: _aten.hardswish_.default,
    _aten.hardsigmoid.default: _aten.hardsigmoid_.default, _aten.elu.default: _aten.elu_.default,
    _aten.mish.default: _aten.mish_.default, _aten.add.Tensor: _aten.add_.Tensor,
}  # fmt: skip
# ops whose output is a fresh tensor (never a view of an input)
_FRESH = {
    _aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default, _aten.conv2d.padding, _aten.linear.default,
    _aten.addmm.default, _aten.mm.default, _aten.batch_norm.default, _aten.add.Tensor, _aten.sub.Tensor,
    _aten.mul.Tensor, _aten.div.Tensor, _aten.cat.default, _aten.pad.default, _aten.constant_pad_nd.default,
    _aten.max_pool2d.default, _aten.avg_pool2d.default, _aten.adaptive_avg_pool2d.default, _aten.mean.dim,
    _aten.clone.default, _aten.layer_norm.default, *_INPLACE, *_INPLACE.values(),
}  # fmt: skip


def _fresh(n: Any) -> bool:
    if not isinstance(n, fx.Node):
        return False
    if n.op == "call_module":
        return True
    if n.op != "call_function":
        return False
    if n.target is operator.getitem:  # the output of BatchNorm's tuple is a fresh tensor
        src = n.args[0]
        return isinstance(src, fx.Node) and src.target is _aten._native_batch_norm_legit_no_training.default
    return n.target in _FRESH


def reinplace(graph: fx.Graph) -> None:
    """Make activations and residual adds in-place where their input is a fresh tensor nobody else reads.

    Capture functionalises the model (``ReLU(inplace=True)`` becomes ``relu``); an out-of-place
    activation allocates and writes a whole new activation map, which on CPU costs up to 2x a
    ReLU's time. Outputs are unchanged.
    """
    for n in graph.nodes:
        if n.op != "call_function" or n.target not in _INPLACE or not n.args:
            continue
        x = n.args[0]
        if not _fresh(x) or len(x.users) != 1:
            continue
        if n.target is _aten.add.Tensor:
            other = n.args[1] if len(n.args) > 1 else None
            vx, vo = x.meta.get("sf_shape_dtype"), n.meta.get("sf_shape_dtype")
            if not isinstance(other, fx.Node) or vx is None or vx != vo:
                continue  # broadcasting into x, or a dtype promotion: keep it out of place
        n.target = _INPLACE[n.target]


def _idx(mask: torch.Tensor) -> list[int]:
    return mask.reshape(-1).nonzero().flatten().tolist()


def _has_attr(root: nn.Module, target: str) -> bool:
    try:
        _get_attr(root, target)
        return True
    except AttributeError:
        return False


def _holder(root: nn.Module, path: str, gm: nn.Module) -> nn.Module:
    mod = root
    done = []
    for part in path.split(".") if path else []:
        done.append(part)
        child = mod._modules.get(part)
        if child is None:
            try:
                orig = type(gm.get_submodule(".".join(done))).__name__
            except AttributeError:
                orig = ""
            child = _Holder(orig if orig not in ("Module", "GraphModule") else "")
            mod.add_module(part, child)
        mod = child
    return mod


def _order_like(root: nn.Module, source: nn.Module) -> None:
    """Reorder child modules as they appear in ``source`` (printing follows the original model)."""
    order = {n: i for i, (n, _) in enumerate(source.named_modules())}

    def visit(mod: nn.Module, prefix: str) -> None:
        items = sorted(mod._modules.items(), key=lambda kv: order.get(prefix + kv[0], len(order)))
        mod._modules.clear()
        for k, v in items:
            mod._modules[k] = v
            if isinstance(v, _Holder):
                visit(v, prefix + k + ".")

    visit(root, "")


def _set_path(root: nn.Module, path: str, module: nn.Module, gm: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    _holder(root, parent, gm).add_module(name, module)
