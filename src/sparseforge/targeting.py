"""One targeting vocabulary for every method: which layers of a model a method acts on.

Every method-facing function of sparseforge (prox maps, pruning scores and masks, spectral conversion,
Bayesian layers, ...) takes ``targets=``: a list of module names as returned by :func:`select`, or
fnmatch patterns matched against full module names. ``targets=None`` means the family's default: *every
module of the method's layer types, the classifier included*. The same list therefore aims WGSEF, SNIP, SST
and masks at the same layers::

    names = sparseforge.select(model, include=["encoder.*"], types=(nn.Linear,), skip_classifier=True,
                               example_inputs=x)
    prox_map = build_prox_map(model, "wgsef", weight=0.5, targets=names)
    s = pruning.scores(model, "snip", batch=(x, y), targets=names)
    spectral.convert(model, "sst", rank=8, targets=names)

Modules are the ones that *own* parameters (``module.named_parameters(recurse=False)`` is not empty), so a
parameter is always ``f"{module_name}.{param_name}"`` (the root module's own parameters have the module name
``""``). Parameters are keyed by their ``named_parameters()`` names (strings) in every family; a parameter
shared by several modules (tied weights) is keyed by its first name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .errors import UserError

Targets = Sequence[str] | str | None

__all__ = [
    "Targets",
    "classifier_name",
    "owning_modules",
    "residual_joined",
    "resolve_targets",
    "select",
    "structured_targets",
    "target_parameters",
]


def _patterns(p: Iterable[str] | str | None) -> list[str] | None:
    if p is None:
        return None
    return [p] if isinstance(p, str) else list(p)


def _match(name: str, pattern: str) -> bool:
    """A module name matches a pattern, or a pattern that names (or globs) one of its ancestors."""
    return name == pattern or fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def owning_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module that owns parameters itself, in registration order (no duplicates)."""
    out, seen = [], set()
    for name, mod in model.named_modules():
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        if any(True for _ in mod.named_parameters(recurse=False)):
            out.append((name, mod))
    return out


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)  # Hugging Face ModelOutput
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _call(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


_SHAPE_ONLY = {"ViewBackward", "ReshapeAliasBackward", "UnsafeViewBackward", "SqueezeBackward", "UnsqueezeBackward",
               "PermuteBackward", "TransposeBackward", "CloneBackward", "ToCopyBackward", "SelectBackward",
               "SliceBackward", "ExpandBackward", "AliasBackward"}


def _classifier_from_autograd(model: nn.Module, example_inputs: Any, candidates: list[str]) -> str | None:
    """The candidate module whose parameters are nearest to the output in the autograd graph (BFS)."""
    owner: dict[int, str] = {}
    mods = dict(owning_modules(model))
    for name in candidates:  # a tied parameter belongs to its last owner (the output head, after the embedding)
        for p in mods[name].parameters(recurse=False):
            owner[id(p)] = name
    flags = {}
    for p in model.parameters():
        flags[id(p)] = p.requires_grad
        p.requires_grad_(True)
    produced: dict[int, str] = {}  # grad_fn of a candidate's output -> its name

    def hook(name: str):
        def record(mod, args, out):
            t = _first_tensor(out)
            if t is not None and t.grad_fn is not None:
                produced.setdefault(id(t.grad_fn), name)
        return record

    handles = [mods[n].register_forward_hook(hook(n)) for n in candidates]
    try:
        with torch.enable_grad():
            out = _first_tensor(_call(model, example_inputs))
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
    if out is None or out.grad_fn is None:
        return None
    fn = out.grad_fn  # the module whose output *is* the model output (through shape-only ops) is the head
    while fn is not None:
        if id(fn) in produced:
            return produced[id(fn)]
        if type(fn).__name__.rstrip("0123456789") not in _SHAPE_ONLY or not fn.next_functions:
            break
        fn = fn.next_functions[0][0]
    frontier, seen = [out.grad_fn], set()  # else (a head that is no module call): the nearest parameter
    while frontier:
        nxt = []
        hits = []
        for fn in frontier:
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            var = getattr(fn, "variable", None)  # AccumulateGrad: a leaf parameter
            if var is not None and id(var) in owner:
                hits.append(owner[id(var)])
            nxt.extend(f for f, _ in fn.next_functions)
        if hits:
            return hits[0]
        frontier = nxt
    return None


def _classifier_from_fx(model: nn.Module, candidates: list[str]) -> str | None:
    """With ``torch.fx`` symbolic tracing: walk back from the output to the nearest candidate module."""
    import torch.fx as fx

    gm = fx.symbolic_trace(model)
    param_owner: dict[str, str] = {}
    mods = dict(owning_modules(model))
    for name in candidates:
        for pn, _ in mods[name].named_parameters(recurse=False):
            param_owner[f"{name}.{pn}" if name else pn] = name
    out = next(n for n in gm.graph.nodes if n.op == "output")
    frontier, seen = [out], set()
    while frontier:
        nxt, hits = [], []
        for n in frontier:
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.op == "call_module" and n.target in mods and n.target in candidates:
                hits.append(n.target)
            elif n.op == "get_attr" and n.target in param_owner:
                hits.append(param_owner[n.target])
            nxt.extend(a for a in n.all_input_nodes)
        if hits:
            return hits[0]
        frontier = nxt
    return None


def classifier_name(model: nn.Module, *, example_inputs: Any = None, candidates: Sequence[str] | None = None) -> str:
    """Name of the module that produces the model's output (its classifier / output head).

    Found from the graph that computes the output: the autograd graph of one forward on ``example_inputs``
    when given, else ``torch.fx`` symbolic tracing; else Hugging Face's ``get_output_embeddings()``. Never
    from registration order.

    Raises:
        UserError: none of these works: pass ``example_inputs``.
    """
    names = list(candidates) if candidates is not None else [n for n, _ in owning_modules(model)]
    if example_inputs is not None:
        was = model.training
        model.eval()
        try:
            found = _classifier_from_autograd(model, example_inputs, names)
        finally:
            model.train(was)
        if found is not None:
            return found
    else:
        try:
            found = _classifier_from_fx(model, names)
        except Exception:  # noqa: BLE001 - untraceable models fall through to the next rule
            found = None
        if found is not None:
            return found
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        head = get_out()
        if head is not None:
            for n, m in model.named_modules():
                if m is head:
                    return n
    raise UserError(
        f"cannot find the classifier of {type(model).__name__} (it is not traceable by torch.fx): "
        "pass example_inputs=... so it can be found from one forward pass"
    )


def select(
    model: nn.Module,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str = (),
    types: tuple[type, ...] | type | None = None,
    skip_classifier: bool = False,
    example_inputs: Any = None,
) -> list[str]:
    """Names of the modules a method should act on.

    Args:
        model: any ``nn.Module`` (ours, a Hugging Face model, your own).
        include: module names or fnmatch patterns over full module names (``"encoder.layer.*.output.dense"``);
            a pattern that matches a container also selects the modules inside it (``"features"``). None = every
            module. Each pattern must match at least one module.
        exclude: names or patterns to leave out.
        types: keep only modules of these classes (``(nn.Linear, nn.Conv2d)``); None = any.
        skip_classifier: drop the module that produces the model's output, found by :func:`classifier_name`
            (from the traced graph, never from registration order).
        example_inputs: inputs for one forward pass (a tensor, a tuple, or a dict of keyword inputs); needed for
            ``skip_classifier`` on models that ``torch.fx`` cannot trace.

    Returns:
        Names of the modules that own parameters themselves and pass every filter, in registration order.

    Raises:
        UserError: a pattern matches no module, or nothing is left.
    """
    inc, exc = _patterns(include), _patterns(exclude) or []
    if types is not None and not isinstance(types, tuple):
        types = (types,)
    owners = owning_modules(model)
    all_names = [n for n, _ in model.named_modules()]
    chosen = [(n, m) for n, m in owners if types is None or isinstance(m, types)]
    if inc is not None:
        for p in inc:
            if not any(_match(n, p) for n in all_names):
                raise UserError(f"target {p!r} matches no module of {type(model).__name__}; "
                                f"modules with parameters are: {_preview([n for n, _ in owners])}")
        chosen = [(n, m) for n, m in chosen if any(_match(n, p) for p in inc)]
    for p in exc:
        if not any(_match(n, p) for n in all_names):
            raise UserError(f"exclude {p!r} matches no module of {type(model).__name__}")
    chosen = [(n, m) for n, m in chosen if not any(_match(n, p) for p in exc)]
    if skip_classifier and chosen:
        head = classifier_name(model, example_inputs=example_inputs)  # over every module: a tied head counts
        chosen = [(n, m) for n, m in chosen if n != head]
    if not chosen:
        kinds = "" if types is None else " of type " + "/".join(t.__name__ for t in types)
        raise UserError(f"no module{kinds} is left to target (include={include!r}, exclude={exclude!r})")
    return [n for n, _ in chosen]


def _preview(names: list[str], k: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "") if names else "none"


def resolve_targets(
    model: nn.Module,
    targets: Targets = None,
    *,
    types: tuple[type, ...] | type | None = None,
    family: str = "this method",
    exclude: Iterable[str] | str = (),
) -> list[str]:
    """``targets`` (names, patterns or None) as module names of the family's layer ``types``.

    ``None`` selects every module of ``types`` (classifier included). A pattern that matches several modules
    keeps those of ``types``; a module named exactly that is not of ``types`` is a one-line error (the method
    cannot act on it), so a list from :func:`select` gives every family the same layers or fails loudly.
    """
    if types is not None and not isinstance(types, tuple):
        types = (types,)
    if targets is None:
        return select(model, types=types, exclude=exclude)
    pats = _patterns(targets) or []
    mods = dict(model.named_modules())
    if types is not None:
        for p in pats:
            m = mods.get(p)
            if m is not None and not isinstance(m, types) and any(True for _ in m.parameters(recurse=False)):
                raise UserError(f"{family} cannot act on {p!r}: it is a {type(m).__name__}, "
                                f"not one of {', '.join(t.__name__ for t in types)}")
    return select(model, include=pats, types=types, exclude=exclude)


def target_parameters(
    model: nn.Module, modules: Iterable[str], *, min_dim: int = 2, names: Iterable[str] | None = None
) -> dict[str, nn.Parameter]:
    """``{parameter name: parameter}`` of the listed modules' own parameters with ``dim >= min_dim``.

    ``names`` restricts to those parameter attribute names (e.g. ``("weight",)``). Tied parameters appear once,
    under their first ``named_parameters()`` name.
    """
    first: dict[int, str] = {}
    for n, p in model.named_parameters():
        first.setdefault(id(p), n)
    mods = dict(model.named_modules())
    wanted = None if names is None else set(names)
    out: dict[str, nn.Parameter] = {}
    for mn in modules:
        for pn, p in mods[mn].named_parameters(recurse=False):
            if p.dim() < min_dim or (wanted is not None and pn not in wanted):
                continue
            key = first.get(id(p), f"{mn}.{pn}" if mn else pn)
            out.setdefault(key, p)
    return out


def distinct_weights(model: nn.Module, names: Iterable[str]) -> list[str]:
    """``names`` without the modules whose ``weight`` is the same tensor as an earlier one's (tied layers), so a
    shared weight is regularized, projected and masked once."""
    seen: set[int] = set()
    out = []
    for n in names:
        w = getattr(model.get_submodule(n), "weight", None)
        if isinstance(w, torch.Tensor):
            if id(w) in seen:
                continue
            seen.add(id(w))
        out.append(n)
    return out


def residual_joined(model: nn.Module) -> list[str]:
    """Convs whose outputs join a residual addition, so their filters cannot be removed alone.

    For blocks with a ``shortcut``/``downsample`` branch only the block-internal convs (``conv1`` of a basic
    block, ``conv1``/``conv2`` of a bottleneck, which has a ``conv3``) have outputs that feed nothing but the
    next conv; every other Conv2d of such a model (the stem, the last conv of each block, the shortcut) is
    returned. A model without such blocks returns ``[]``.
    """
    blocks = [(n, m) for n, m in model.named_modules() if hasattr(m, "shortcut") or hasattr(m, "downsample")]
    if not blocks:
        return []
    internal = set()
    for n, m in blocks:
        names = ["conv1", "conv2"] if hasattr(m, "conv3") else ["conv1"]
        internal |= {f"{n}.{c}" for c in names if hasattr(m, c)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in internal]


def structured_targets(model: nn.Module, *, example_inputs: Any = None, skip_classifier: bool = True,
                       include: Iterable[str] | str | None = None) -> list[str]:
    """Conv2d / Linear layers whose filters (neurons) can be removed one by one.

    Every Conv2d and Linear (of ``include``), without the classifier (``skip_classifier``), grouped or
    depthwise convs (a filter of those is tied to its input channel), and convs whose outputs join a residual
    addition (:func:`residual_joined`). The layer set of the structured recipes (WGSEF, filter pruning).
    """
    names = select(model, include=include, types=(nn.Conv2d, nn.Linear), skip_classifier=skip_classifier,
                   example_inputs=example_inputs)
    joined = set(residual_joined(model))
    return [n for n in names if n not in joined and getattr(model.get_submodule(n), "groups", 1) == 1]
