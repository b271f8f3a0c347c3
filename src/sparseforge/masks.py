"""Masks: keep chosen weights exactly zero through training, bake them, save and load them.

A mask is a boolean tensor of a parameter's shape (True = kept). :func:`attach` zeroes the
masked entries and keeps them exactly zero through *any* optimizer step:

* a gradient hook multiplies the gradient by the mask, so momentum buffers and Adam
  moments of masked entries stay zero;
* an optimizer post-step hook multiplies the parameter by the mask after every step, which
  also cancels anything the optimizer does without the gradient (decoupled weight decay of
  AdamW, stale momentum from before the mask existed, numerical noise).

Sparsity files (:func:`save_sparsity` / :func:`load_sparsity`) hold the masks, the groups
that :func:`sparseforge.compact` removed, and the library version, in one ``torch.save``
file written atomically; they load onto a freshly built model of the same class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .engine.checkpoint import load_checkpoint, save_checkpoint
from .errors import DataFormatError, UserError

FORMAT_VERSION = 1


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


@dataclass
class MaskSet:
    """Masks attached to a model's parameters. Create with :func:`attach`.

    Float copies of the masks are cached once, so keeping weights at zero allocates nothing
    per step: gradients are multiplied in place after accumulation and weights after each step.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    _handles: list[Any] = field(default_factory=list, repr=False)
    _optimizers: list[int] = field(default_factory=list, repr=False)
    _pairs: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        p = _params(self.model)
        self._pairs = [(p[name], m.to(p[name].dtype)) for name, m in self.masks.items()]  # (param, float keep)

    def params(self) -> Iterable[tuple[str, nn.Parameter, torch.Tensor]]:
        p = _params(self.model)
        for name, m in self.masks.items():
            yield name, p[name], m

    def _keep(self, i: int) -> torch.Tensor:
        """The cached float mask of pair ``i``, following its parameter across devices/dtypes."""
        param, keep = self._pairs[i]
        if keep.device != param.device or keep.dtype != param.dtype:  # the model moved after attach()
            keep = keep.to(device=param.device, dtype=param.dtype)
            self._pairs[i] = (param, keep)
        return keep

    @torch.no_grad()
    def apply_(self) -> MaskSet:
        """Zero every masked entry now."""
        for i, (param, _) in enumerate(self._pairs):
            param.mul_(self._keep(i))
        return self

    def hook_optimizer(self, optimizer: torch.optim.Optimizer) -> MaskSet:
        """Re-apply the masks after every ``optimizer.step()`` (idempotent per optimizer).

        Existing optimizer state of masked entries (momentum, Adam moments) is zeroed once;
        since their gradients are zero from then on, it stays zero.
        """
        if id(optimizer) in self._optimizers:
            return self
        self._optimizers.append(id(optimizer))
        self._zero_state(optimizer)
        self._handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.apply_()))
        return self

    @torch.no_grad()
    def _zero_state(self, optimizer: torch.optim.Optimizer) -> None:
        for i, (param, _) in enumerate(self._pairs):
            keep = self._keep(i)
            for v in optimizer.state.get(param, {}).values():
                if isinstance(v, torch.Tensor) and v.shape == param.shape:
                    v.mul_(keep.to(v.dtype))

    def detach(self) -> None:
        """Remove every hook (the weights keep their current values)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._optimizers.clear()

    def bake(self) -> nn.Module:
        """Apply the masks for good and remove the hooks; returns the model."""
        self.apply_()
        self.detach()
        return self.model

    def sparsity(self) -> float:
        return sparsity(self.masks)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.masks.items()}


def attach(model: nn.Module, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None) -> MaskSet:
    """Attach boolean ``masks`` (True = kept) to ``model``'s parameters by name.

    Masked entries are zeroed at once, their accumulated gradients are zeroed in place, and
    if ``optimizer`` is given (or later via :meth:`MaskSet.hook_optimizer`) they are re-zeroed
    after every step, so they stay exactly zero through SGD with momentum, Adam and AdamW
    (decoupled weight decay included).

    Raises:
        UserError: a mask names no parameter or has the wrong shape.
    """
    params = _params(model)
    clean: dict[str, torch.Tensor] = {}
    for name, m in masks.items():
        if name not in params:
            raise UserError(f"mask for {name!r} matches no parameter of {type(model).__name__}")
        if tuple(m.shape) != tuple(params[name].shape):
            raise UserError(f"mask for {name!r} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}")
        clean[name] = m.detach().to(device=params[name].device, dtype=torch.bool)
    ms = MaskSet(model, clean)

    def mask_grad_(param: torch.Tensor, i: int) -> None:
        if param.grad is not None:
            param.grad.mul_(ms._keep(i))

    for i, (param, _) in enumerate(ms._pairs):
        if param.requires_grad:
            ms._handles.append(param.register_post_accumulate_grad_hook(lambda q, i=i: mask_grad_(q, i)))
    ms.apply_()
    if optimizer is not None:
        ms.hook_optimizer(optimizer)
    return ms


def from_model(model: nn.Module, *, targets: Any = None, names: Iterable[str] | None = None,
               min_dim: int = 2) -> dict[str, torch.Tensor]:
    """Masks of the current non-zeros, keyed by parameter name.

    Args:
        targets: module names or patterns (:func:`sparseforge.select`); their own parameters with
            ``dim >= min_dim`` get masks. Default: every such parameter of the model.
        names: explicit parameter names instead of ``targets``.
    """
    p = _params(model)
    if names is not None:
        keys = list(names)
    else:
        from .targeting import resolve_targets, target_parameters

        keys = list(target_parameters(model, resolve_targets(model, targets, family="masks"), min_dim=min_dim))
    return {n: p[n].detach() != 0 for n in keys}


def sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of masked-out (False) entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(total, 1)


def layer_density(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction kept per parameter."""
    return {n: float(m.float().mean()) for n, m in masks.items()}


def save_sparsity(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    masks: dict[str, torch.Tensor] | None = None,
    removed: dict[str, list[int]] | None = None,
    extra: dict[str, Any] | None = None,
    weights: bool = False,
) -> None:
    """Save a model's sparsity to one file, atomically.

    Args:
        model: the (uncompacted) model; its class name and parameter shapes are stored.
        masks: boolean masks by parameter name (default: the model's current non-zeros).
        removed: groups that compaction removed, e.g. ``{"features.0": [3, 7]}`` (filters).
        extra: free-form metadata (method, sparsity target, ...).
        weights: also store the model's ``state_dict``, so the file alone reproduces the sparse model
            on a freshly built one (:func:`load_sparsity` loads it before the masks).
    """
    from . import __version__

    masks = masks if masks is not None else from_model(model)
    params = _params(model)
    save_checkpoint(
        {
            "format": "sparseforge.sparsity",
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "model_class": type(model).__name__,
            "shapes": {n: tuple(params[n].shape) for n in masks},
            "masks": {n: m.detach().cpu().to(torch.bool) for n, m in masks.items()},
            "removed": {k: [int(i) for i in v] for k, v in (removed or {}).items()},
            "extra": extra or {},
            **({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}} if weights else {}),
        },
        path,
    )


def load_sparsity(model: nn.Module, path: str | os.PathLike, *, attach_masks: bool = True) -> dict[str, Any]:
    """Load a file written by :func:`save_sparsity` onto a freshly built ``model``.

    The masks are applied (and attached, unless ``attach_masks=False``). Returns the file's
    record with an extra ``"maskset"`` entry when attached.

    Raises:
        DataFormatError: missing file, not a sparsity file, newer format, or a model of another class/shape.
    """
    if not os.path.exists(path):
        raise DataFormatError(f"{path}: no such sparsity file")
    try:
        rec = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a format error for the user
        raise DataFormatError(f"{path}: not a readable sparsity file ({type(e).__name__})") from None
    if not isinstance(rec, dict) or rec.get("format") != "sparseforge.sparsity":
        raise DataFormatError(f"{path}: not a sparseforge sparsity file")
    if rec["format_version"] > FORMAT_VERSION:
        raise DataFormatError(f"{path}: written by a newer sparseforge ({rec['library_version']}); upgrade to load it")
    if rec["model_class"] != type(model).__name__:
        raise DataFormatError(f"{path}: saved for a {rec['model_class']}, not a {type(model).__name__}")
    params = _params(model)
    for n, shape in rec["shapes"].items():
        if n not in params or tuple(params[n].shape) != tuple(shape):
            raise DataFormatError(f"{path}: parameter {n!r} of shape {tuple(shape)} does not fit this model")
    if "state_dict" in rec:  # a file saved with weights=True carries the trained weights too
        try:
            model.load_state_dict(rec["state_dict"])
        except RuntimeError as e:
            raise DataFormatError(f"{path}: its weights do not fit this model ({str(e).splitlines()[0]})") from None
    if attach_masks:
        rec["maskset"] = attach(model, rec["masks"])
    else:
        with torch.no_grad():
            for n, m in rec["masks"].items():
                params[n].mul_(m.to(params[n].dtype))
    return rec


__all__ = [
    "MaskSet",
    "attach",
    "from_model",
    "layer_density",
    "load_sparsity",
    "save_sparsity",
    "sparsity",
]
