"""``convert`` / ``merge``: swap ``nn.Linear`` modules for spectral or low-rank layers and back.

Methods are records of the ``spectral`` family (:class:`~sparseforge.spectral.family.SpectralMethod`), looked
up in the registry (plugins included):

* ``sst``     -> :class:`~sparseforge.spectral.sst.SpectralLinear` (Zhao et al., arXiv:2405.15481)
* ``lora``    -> :class:`~sparseforge.spectral.lora.LoRALinear` (Hu et al., arXiv:2106.09685)
* ``relora`` / ``relora_star`` -> LoRALinear, driven by a
  :class:`~sparseforge.spectral.relora.ReLoRAController` (Lialin et al., arXiv:2307.05695); ``relora`` is our
  hybrid (0.99 magnitude pruning of the moments at a merge), ``relora_star`` the paper's ReLoRA* (full reset)
* ``galore``  -> :class:`~sparseforge.spectral.galore.GaLoreLinear` (an nn.Linear marked for
  :class:`~sparseforge.spectral.galore.GaLoreAdamW`; Zhao et al., arXiv:2403.03507)
* ``full``    -> the model unchanged.

``targets`` are module names or fnmatch patterns (:func:`sparseforge.select`); without them every module whose
type is exactly ``nn.Linear`` is converted, the classifier included (subclasses such as
``nn.MultiheadAttention``'s ``out_proj`` are left alone unless named).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..registry import METHODS, register_method
from ..targeting import Targets, resolve_targets, select
from .family import SpectralMethod, record_of, spectral_methods
from .galore import GaLoreAdamW, GaLoreLinear
from .lora import LoRALinear
from .relora import ReLoRAController
from .sst import SpectralLinear, SSTController, check_rank


def _lora_trainable(m: int, n: int, r: int, bias: bool) -> int:
    return r * (m + n) + (m if bias else 0)


register_method("sst", family="spectral")(SpectralMethod(
    "Sparse Spectral Training: W = U diag(s) V^T, all s and r sampled singular vectors trained",
    layer=SpectralLinear, controller=SSTController,
    param_roles=lambda m: {"U_act": "vector", "Vh_act": "vector", "sigma": "sigma"},
    trainable=lambda m, n, r, bias: r * (m + n) + min(m, n) + (m if bias else 0)))
register_method("lora", family="spectral")(SpectralMethod(
    "LoRA: frozen W0 + B A at rank r", layer=LoRALinear, trainable=_lora_trainable))
register_method("relora", family="spectral")(SpectralMethod(
    "ReLoRA (hybrid): LoRA merged and restarted periodically, 0.99 magnitude pruning of the Adam moments",
    layer=LoRALinear, controller=ReLoRAController, trainable=_lora_trainable))
register_method("relora_star", family="spectral")(SpectralMethod(
    "ReLoRA* (the SST paper's baseline): LoRA merged and restarted, optimizer state fully reset",
    layer=LoRALinear, controller=ReLoRAController, controller_defaults={"prune": 1.0}, trainable=_lora_trainable))
register_method("galore", family="spectral")(SpectralMethod(
    "GaLore: full-rank weights, Adam on gradients projected to rank r", layer=GaLoreLinear,
    param_roles=lambda m: {"weight": ("projected", {"rank": m.galore_rank})},
    optimizer=lambda groups, **kw: GaLoreAdamW(groups, **kw)))
register_method("full", family="spectral")(SpectralMethod("full-rank training (the model unchanged)"))


def method_names() -> list[str]:
    """Names of the registered spectral methods."""
    return METHODS.names(family="spectral")


def select_linears(model: nn.Module, targets: Targets = None, exclude: Iterable[str] | str = ()) -> list[str]:
    """Names of the ``nn.Linear`` modules that ``convert`` would swap (see the module docstring)."""
    if targets is None:
        names = [n for n in select(model, types=nn.Linear, exclude=exclude) if type(model.get_submodule(n)) is nn.Linear]
        if not names:
            raise UserError("no nn.Linear layer to convert (check targets / exclude)")
        return names
    return resolve_targets(model, targets, types=nn.Linear, family="a spectral method", exclude=exclude)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(
    model: nn.Module,
    method: str = "sst",
    rank: int = 8,
    *,
    targets: Targets = None,
    exclude: Iterable[str] | str = (),
    **layer_opts: Any,
) -> nn.Module:
    """Swap the target ``nn.Linear`` modules of ``model`` for ``method``'s layers; returns ``model``.

    Outputs are unchanged at conversion (SST: the SVD of the current weight; LoRA: B = 0).

    Raises:
        UserError: unknown method, rank outside [1, min(in, out)), or a target matching no layer.
    """
    rec: SpectralMethod = METHODS.resolve(method, "spectral")
    if rec.layer is None:
        return model
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UserError(f"rank must be an integer >= 1, got {rank!r}")
    names = select_linears(model, targets, exclude)
    for n in names:  # validate everything before changing anything
        lin = model.get_submodule(n)
        check_rank(rank, lin.in_features, lin.out_features, n)
    for n in names:
        _set_module(model, n, rec.convert_layer(model.get_submodule(n), rank, **layer_opts))
    return model


def merge(model: nn.Module) -> nn.Module:
    """Replace every spectral layer (of any registered method) by a plain ``nn.Linear`` with the same outputs."""
    if record_of(model) is not None:
        return model.merge()  # type: ignore[operator]
    names = [n for n, m in model.named_modules() if n and record_of(m) is not None]
    for n in names:
        _set_module(model, n, model.get_submodule(n).merge())  # type: ignore[operator]
    return model


# ----------------------------------------------------------------------------------------------
# optimizers and controllers
# ----------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, linear_lr_scale: float = 1.0,
                 sigma_weight_decay: bool = False) -> list[dict[str, Any]]:
    """AdamW groups by the roles the spectral methods give their layers' parameters.

    Each parameter appears once (tied weights too; a head tied to an embedding is treated as the embedding).
    No decay on parameters of role ``"vector"`` (SST singular vectors), on sigma (unless asked), biases and norms;
    ``linear_lr_scale`` multiplies the LR of dense linear weights (full-rank and projected matrices): the same
    scale applies to every method's dense linear weights, so tuning stays symmetric.
    """
    decay, no_decay, spec_vec, spec_sigma, dense_lin = [], [], [], [], []
    projected: dict[tuple, list[nn.Parameter]] = {}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    lin_weights = {id(m.weight) for m in model.modules() if type(m) is nn.Linear} - embeddings  # tied heads: embeddings
    seen: set[int] = set()
    for mod in model.modules():
        rec = record_of(mod)
        roles = dict(rec.param_roles(mod)) if rec is not None and rec.param_roles is not None else {}
        for pn, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue  # a tied parameter is updated once
            seen.add(id(p))
            role = roles.get(pn)
            extras: dict[str, Any] = {}
            if isinstance(role, tuple):
                role, extras = role
            if role == "vector":
                spec_vec.append(p)
            elif role == "sigma":
                spec_sigma.append(p)
            elif role == "projected":
                projected.setdefault(tuple(sorted(extras.items())), []).append(p)
            elif id(p) in lin_weights or (role == "dense" and p.ndim >= 2):
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
    groups += [{"params": ps, "lr": lr * linear_lr_scale, "weight_decay": weight_decay, **dict(ex)}
               for ex, ps in projected.items()]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, *, lr: float = 1e-3, weight_decay: float = 0.01,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, linear_lr_scale: float = 1.0,
                    galore_update_proj_gap: int = 200, galore_scale: float = 0.25,
                    sigma_weight_decay: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, or :class:`GaLoreAdamW` when the model has GaLore layers."""
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, linear_lr_scale=linear_lr_scale,
                          sigma_weight_decay=sigma_weight_decay)
    own = {id(rec): rec for m in model.modules() if (rec := record_of(m)) is not None and rec.optimizer is not None}
    if len(own) > 1:
        raise UserError("the model mixes layers of two spectral methods that each need their own optimizer")
    if own:
        rec = next(iter(own.values()))
        return rec.optimizer(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,  # type: ignore[misc]
                             update_proj_gap=galore_update_proj_gap, scale=galore_scale)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def attach(method: str, model: nn.Module, optimizer: torch.optim.Optimizer, **opts: Any) -> Any:
    """The periodic-work controller of ``method`` hooked on ``optimizer`` (None when it has none).

    ``sst`` -> :class:`SSTController` (opts: T3, T2, d, warmup_iter, sampling, seed, ...);
    ``relora`` / ``relora_star`` -> :class:`ReLoRAController` (opts: reset_every, prune, rewarm, seed).
    """
    return METHODS.resolve(method, "spectral").attach(model, optimizer, **opts)


__all__ = ["attach", "build_optimizer", "convert", "merge", "method_names", "param_groups", "select_linears",
           "spectral_methods"]
