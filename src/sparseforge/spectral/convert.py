"""``convert`` / ``merge``: swap ``nn.Linear`` modules for spectral or low-rank layers and back.

Methods (registered with ``register_method(name, family="spectral")``; each entry is a converter
``fn(model, rank, *, targets=None, exclude=(), **layer_opts) -> model``):

* ``sst``     -> :class:`~sparseforge.spectral.sst.SpectralLinear` (Zhao et al., arXiv:2405.15481)
* ``lora``    -> :class:`~sparseforge.spectral.lora.LoRALinear` (Hu et al., arXiv:2106.09685)
* ``relora`` / ``relora_star`` -> LoRALinear, driven by a
  :class:`~sparseforge.spectral.relora.ReLoRAController` (Lialin et al., arXiv:2307.05695)
* ``galore``  -> :class:`~sparseforge.spectral.galore.GaLoreLinear` (an nn.Linear marked for
  :class:`~sparseforge.spectral.galore.GaLoreAdamW`; Zhao et al., arXiv:2403.03507)
* ``full``    -> the model unchanged.

``targets`` are name patterns: a pattern matches a module name when it is equal to it, is a
dotted suffix of it (``"q_proj"`` matches ``"blocks.0.attn.q_proj"``) or matches it as a glob
(``"blocks.*.mlp.*"``). Every pattern must match at least one ``nn.Linear``. Without targets every
``nn.Linear`` is converted except those named in ``exclude`` or in the model's own
``spectral_exclude`` attribute (e.g. a classifier head).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..registry import register_method
from .galore import GaLoreAdamW, GaLoreLinear
from .lora import LoRALinear
from .relora import ReLoRAController
from .sst import SpectralLinear, SSTController, check_rank

METHOD_NAMES = ("full", "sst", "lora", "relora", "relora_star", "galore")


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def select_linears(
    model: nn.Module, targets: Iterable[str] | str | None = None, exclude: Iterable[str] | str = ()
) -> list[str]:
    """Names of the plain ``nn.Linear`` modules that ``convert`` would swap."""
    if isinstance(targets, str):
        targets = [targets]
    if isinstance(exclude, str):
        exclude = [exclude]
    exclude = list(exclude) + list(getattr(model, "spectral_exclude", ()))
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]  # subclasses (MHA's out_proj) are left alone
    if targets is None:
        chosen = linears
    else:
        targets = list(targets)
        chosen = []
        for p in targets:
            hit = [n for n in linears if _matches(n, p)]
            if not hit:
                raise UserError(f"target pattern {p!r} matches no nn.Linear; linear layers are: {', '.join(linears) or 'none'}")
            chosen += [n for n in hit if n not in chosen]
    chosen = [n for n in chosen if not any(_matches(n, e) for e in exclude)]
    if not chosen:
        raise UserError("no nn.Linear layer to convert (check targets / exclude)")
    return chosen


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _swap(model: nn.Module, rank: int, targets: Any, exclude: Any, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    names = select_linears(model, targets, exclude)
    for n in names:  # validate everything before changing anything
        lin = model.get_submodule(n)
        check_rank(rank, lin.in_features, lin.out_features, n)
    for n in names:
        _set_module(model, n, make(model.get_submodule(n)))
    return model


@register_method("sst", family="spectral")
def convert_sst(model: nn.Module, rank: int, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """Swap linears for :class:`SpectralLinear` (SVD of their current weights: zero distortion)."""
    return _swap(model, rank, targets, exclude, lambda lin: SpectralLinear.from_linear(lin, rank, **opts))


@register_method("lora", family="spectral")
def convert_lora(model: nn.Module, rank: int, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """Swap linears for :class:`LoRALinear` (frozen W0 = current weight, B = 0: same outputs)."""
    return _swap(model, rank, targets, exclude, lambda lin: LoRALinear.from_linear(lin, rank, **opts))


@register_method("relora", family="spectral")
def convert_relora(model: nn.Module, rank: int, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """LoRA layers; attach a :class:`ReLoRAController` (prune 0.99, re-warm 50) to the optimizer."""
    return convert_lora(model, rank, targets=targets, exclude=exclude, **opts)


@register_method("relora_star", family="spectral")
def convert_relora_star(model: nn.Module, rank: int, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """LoRA layers; attach a :class:`ReLoRAController` with prune = 1 (full state reset)."""
    return convert_lora(model, rank, targets=targets, exclude=exclude, **opts)


@register_method("galore", family="spectral")
def convert_galore(model: nn.Module, rank: int, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """Mark linears for GaLore (:class:`GaLoreLinear`, same weights); use :func:`build_optimizer`."""
    return _swap(model, rank, targets, exclude, lambda lin: GaLoreLinear.from_linear(lin, rank))


@register_method("full", family="spectral")
def convert_full(model: nn.Module, rank: int = 0, *, targets: Any = None, exclude: Any = (), **opts: Any) -> nn.Module:
    """Full-rank training: the model unchanged."""
    return model


_CONVERTERS = {"sst": convert_sst, "lora": convert_lora, "relora": convert_relora,
               "relora_star": convert_relora_star, "galore": convert_galore, "full": convert_full}


def convert(
    model: nn.Module,
    method: str = "sst",
    rank: int = 8,
    *,
    targets: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str = (),
    **layer_opts: Any,
) -> nn.Module:
    """Swap the matching ``nn.Linear`` modules of ``model`` for ``method``'s layers; returns ``model``.

    Raises:
        UserError: unknown method, rank outside [1, min(in, out)), or a target matching no layer.
    """
    if method not in _CONVERTERS:
        raise UserError(f"unknown spectral method {method!r}; choose one of: {', '.join(METHOD_NAMES)}")
    if method != "full" and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise UserError(f"rank must be an integer >= 1, got {rank!r}")
    return _CONVERTERS[method](model, rank, targets=targets, exclude=exclude, **layer_opts)


def merge(model: nn.Module) -> nn.Module:
    """Replace every SpectralLinear / LoRALinear / GaLoreLinear by a plain ``nn.Linear`` (same outputs)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (SpectralLinear, LoRALinear, GaLoreLinear))]
    if isinstance(model, (SpectralLinear, LoRALinear, GaLoreLinear)):
        return model.merge()
    for n in names:
        _set_module(model, n, model.get_submodule(n).merge())
    return model


# ----------------------------------------------------------------------------------------------
# optimizers and controllers
# ----------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, linear_lr_scale: float = 1.0,
                 sigma_weight_decay: bool = False) -> list[dict[str, Any]]:
    """AdamW groups: no decay on U/V (renormalised), sigma (unless asked), biases and norms.

    ``linear_lr_scale`` multiplies the LR of dense linear weights (full-rank and GaLore matrices;
    presets.md: full rank wants ~0.3-0.5x the embedding LR on a tiny LM).
    """
    decay, no_decay, spec_vec, spec_sigma, dense_lin, galore = [], [], [], [], [], {}
    lin_weights = {id(m.weight) for m in model.modules() if type(m) is nn.Linear}
    for mod in model.modules():
        for pn, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(mod, SpectralLinear) and pn in ("U_act", "Vh_act"):
                spec_vec.append(p)
            elif isinstance(mod, SpectralLinear) and pn == "sigma":
                spec_sigma.append(p)
            elif isinstance(mod, GaLoreLinear) and pn == "weight":
                galore.setdefault(mod.galore_rank, []).append(p)
            elif id(p) in lin_weights:
                dense_lin.append(p)
            elif p.ndim >= 2:
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": dense_lin, "lr": lr * linear_lr_scale, "weight_decay": weight_decay},
        {"params": spec_vec, "lr": lr, "weight_decay": 0.0},
        {"params": spec_sigma, "lr": lr, "weight_decay": weight_decay if sigma_weight_decay else 0.0},
    ]
    groups += [{"params": ps, "lr": lr * linear_lr_scale, "weight_decay": weight_decay, "rank": r}
               for r, ps in galore.items()]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, *, lr: float = 1e-3, weight_decay: float = 0.01,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, linear_lr_scale: float = 1.0,
                    galore_update_proj_gap: int = 200, galore_scale: float = 0.25,
                    sigma_weight_decay: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, or :class:`GaLoreAdamW` when the model has GaLore layers."""
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, linear_lr_scale=linear_lr_scale,
                          sigma_weight_decay=sigma_weight_decay)
    if any("rank" in g for g in groups):
        return GaLoreAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                           update_proj_gap=galore_update_proj_gap, scale=galore_scale)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def attach(method: str, model: nn.Module, optimizer: torch.optim.Optimizer, **opts: Any) -> Any:
    """The periodic-work controller of ``method`` hooked on ``optimizer`` (None when it has none).

    ``sst`` -> :class:`SSTController` (opts: T3, T2, d, warmup_iter, sampling, seed, ...);
    ``relora`` / ``relora_star`` -> :class:`ReLoRAController` (opts: reset_every, prune, rewarm, seed).
    """
    if method == "sst":
        return SSTController(model, optimizer, **opts)
    if method in ("relora", "relora_star"):
        if method == "relora_star":
            opts.setdefault("prune", 1.0)
        return ReLoRAController(model, optimizer, **opts)
    return None


__all__ = ["METHOD_NAMES", "attach", "build_optimizer", "convert", "merge", "param_groups", "select_linears"]
