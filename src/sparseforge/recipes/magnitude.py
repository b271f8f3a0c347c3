"""Recipe ``magnitude``: train, prune by magnitude, fine-tune, compact, measure.

The baseline every structured-sparsity method is compared with (Han et al., "Learning both
Weights and Connections for Efficient Neural Networks", 2015, for the unstructured global
magnitude criterion; Li et al., "Pruning Filters for Efficient ConvNets", arXiv 1608.08710,
for the filter L2-norm criterion):

1. train the dense model (LeNet-5 on the built-in digits by default);
2. **unstructured**: keep the largest ``|w|`` globally over all Conv/Linear weights so that
   a fraction ``sparsity`` is removed, fine-tune with the mask attached;
3. **structured**: per layer, remove the fraction ``filter_sparsity`` of filters (neurons)
   with the smallest L2 norm (the classifier's outputs are kept), fine-tune masked, then
   :func:`sparseforge.compact` physically removes them and their coupled slices;
4. report accuracy, parameters, FLOPs and measured latency dense vs compact.

Measured on the 2-core machine: ``smoke`` ≈ 3 s, ``quick`` ≈ 15 s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import masks as M
from ..config import RecipeConfig
from ..engine import Run
from ..errors import ConfigError
from ..models import create_model
from ..targeting import select
from . import recipe
from ._common import (
    accuracy,
    filter_prune_masks,
    layer_rows,
    layer_sparsity_figure,
    load_classification,
    measure_dense_vs_compact,
    model_kwargs_for,
    train_classifier,
)


@dataclass
class MagnitudeConfig(RecipeConfig):
    """Configuration of the ``magnitude`` recipe.

    Attributes:
        model: a registered image model (``lenet5``, ``digits_cnn``, ``vgg16``, ``resnet18`` ...).
        dataset: ``digits`` (built in), ``mnist`` / ``fashion_mnist`` (IDX in ``data_dir``), ``cifar10``.
        data_dir: folder of the user dataset.
        allow_pickle: CIFAR-10 pickles run code when loaded: set only for trusted files.
        epochs: dense training epochs.
        finetune_epochs: masked fine-tuning epochs (each criterion).
        lr: SGD learning rate (cosine schedule); fine-tuning uses ``lr * finetune_lr_scale``.
        sparsity: fraction of weights removed by the unstructured criterion.
        filter_sparsity: fraction of filters/neurons removed per layer by the structured criterion.
        batch_size: training batch size.
        latency_batch: batch size of the latency measurement.
        latency_repeats: timed repeats (median reported).
    """

    file_datasets: ClassVar[tuple[str, ...]] = ("mnist", "fashion_mnist", "cifar10")
    limits: ClassVar[dict[str, Any]] = {"latency_repeats": (1, 10_000)}

    model: str = "lenet5"
    dataset: str = "digits"
    data_dir: str | None = None
    allow_pickle: bool = False
    epochs: int = 30
    finetune_epochs: int = 10
    lr: float = 0.05
    finetune_lr_scale: float = 0.2
    weight_decay: float = 5e-4
    sparsity: float = 0.8
    filter_sparsity: float = 0.5
    batch_size: int = 64
    latency_batch: int = 64
    latency_repeats: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.filter_sparsity < 1.0:
            raise ConfigError(f"filter_sparsity must be in [0, 1), got {self.filter_sparsity}")
        if self.epochs < 1 or self.finetune_epochs < 0:
            raise ConfigError("epochs must be >= 1 and finetune_epochs >= 0")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


PRESETS = {
    "smoke": {"epochs": 2, "finetune_epochs": 1, "latency_repeats": 5},
    "quick": {},
    "paper": {"model": "vgg16", "dataset": "cifar10", "epochs": 160, "finetune_epochs": 40, "lr": 0.1,
              "batch_size": 128, "latency_repeats": 50},
}


LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


def _global_magnitude_masks(model: torch.nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    from ..pruning import prune_global, scores

    return prune_global(model, scores(model, "magnitude", targets=select(model, types=LAYERS)), sparsity)


@recipe(
    "magnitude",
    config=MagnitudeConfig,
    presets=PRESETS,
    help="LeNet-5 on digits: global magnitude and filter-norm pruning, fine-tune, compact, measure speed",
    claim=("Magnitude pruning (Han et al. 2015; filter norms, Li et al. 2017) keeps accuracy after a masked fine-tune; "
           "only the structured (filter) sparsity makes the compacted network measurably faster."),
    headline=("dense_acc", "structured_acc", "unstructured_acc", "params_reduction", "flops_reduction", "latency_speedup"),
    goal="structured_acc >= dense_acc - 0.02 and latency_speedup > 1",
    goal_text="half the filters removed within 2 points of dense, and the compacted model faster",
    key_figure="dense_vs_compact",
)
def run(cfg: MagnitudeConfig, run: Run) -> dict:
    data = load_classification(cfg.dataset, cfg.data_dir, allow_pickle=cfg.allow_pickle, seed=cfg.seed)
    kw = model_kwargs_for(data, cfg.model)
    train_kw = dict(batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, seed=cfg.seed, run=run, device=cfg.device)
    ft_lr = cfg.lr * cfg.finetune_lr_scale

    def dense_stage() -> dict:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **kw)
        res = train_classifier(model, data, epochs=cfg.epochs, lr=cfg.lr, series="dense", **train_kw)
        return {"state": model.state_dict(), "acc": res["test_acc"]}

    dense_res = run.cached("dense", dense_stage)
    dense = create_model(cfg.model, **kw).to(cfg.device)
    dense.load_state_dict(dense_res["state"])

    def finetune(masks_fn, series: str) -> dict:
        model = copy.deepcopy(dense)
        masks = masks_fn(model)
        opt = torch.optim.SGD(model.parameters(), lr=ft_lr, momentum=0.9, weight_decay=cfg.weight_decay)
        ms = M.attach(model, masks, opt)
        acc_before = accuracy(model, data)
        res = train_classifier(model, data, epochs=max(cfg.finetune_epochs, 0) or 1, lr=ft_lr, optimizer=opt,
                               series=series, **train_kw) if cfg.finetune_epochs > 0 else {"test_acc": acc_before}
        ms.bake()
        return {"state": model.state_dict(), "masks": masks, "acc_before_ft": acc_before, "acc": res["test_acc"]}

    example = data.x_test[: cfg.latency_batch].to(cfg.device)
    filter_targets = select(dense, types=LAYERS, skip_classifier=True, example_inputs=example)  # the outputs stay
    uns = run.cached("unstructured", lambda: finetune(lambda m: _global_magnitude_masks(m, cfg.sparsity), "unstructured"))
    st = run.cached("structured", lambda: finetune(
        lambda m: filter_prune_masks(m, cfg.filter_sparsity, targets=filter_targets), "structured"))

    unstructured = copy.deepcopy(dense)
    unstructured.load_state_dict(uns["state"])
    structured = copy.deepcopy(dense)
    structured.load_state_dict(st["state"])

    meas = measure_dense_vs_compact(dense, structured, example, repeats=cfg.latency_repeats)
    small = meas.pop("_compact_model")
    compact_acc = accuracy(small, data)
    from .. import metrics

    uns_sum = metrics.summary(unstructured, example, latency=False)
    M.save_sparsity(structured, run.path / "structured_sparsity.pt", masks=st["masks"],
                    removed=getattr(small, "removed_groups", None), extra={"recipe": "magnitude", "criterion": "filter_l2"})

    run.save_figure(layer_sparsity_figure(unstructured, "unstructured global magnitude", grouping="filter"),
                    "layers_unstructured", "per-layer fraction of zero weights and of all-zero filters (unstructured)")
    run.save_figure(layer_sparsity_figure(structured, "structured filter-norm", grouping="filter"),
                    "layers_structured", "per-layer fraction of zero weights and removed filters (structured)")
    run.save_figure(_comparison_figure(dense_res["acc"], uns["acc"], st["acc"], meas), "dense_vs_compact",
                    "accuracy, parameters, FLOPs and measured latency: dense vs compacted structured model")
    run.save_table("dense vs compact", [
        {"model": "dense", "accuracy": dense_res["acc"], "params": meas["params_dense"],
         "nonzero_params": meas["nonzero_params_dense"], "flops": meas["flops_dense"],
         "effective_flops": meas["effective_flops_dense"], "latency_ms": meas["latency_ms_dense"]},
        {"model": f"unstructured {cfg.sparsity:.0%} (masked)", "accuracy": uns["acc"], "params": uns_sum["params"],
         "nonzero_params": uns_sum["nonzero_params"], "flops": uns_sum["flops"],
         "effective_flops": uns_sum["effective_flops"], "latency_ms": None},
        {"model": f"structured {cfg.filter_sparsity:.0%} filters, compacted", "accuracy": compact_acc,
         "params": meas["params_compact"], "nonzero_params": meas["nonzero_params_compact"], "flops": meas["flops_compact"],
         "effective_flops": meas["effective_flops_compact"], "latency_ms": meas["latency_ms_compact"]},
    ], caption=f"latency: median of {cfg.latency_repeats} runs on a batch of {example.shape[0]}, models interleaved")
    run.save_table("layers (structured)", layer_rows(structured))

    from ..engine import distributed as D

    sums = D.replica_checksums(structured)
    return {
        "ddp_world_size": D.world_size(),
        "ddp_replicas_identical": len(set(sums)) == 1,
        "ddp_replica_checksums": ",".join(s[:16] for s in sums),
        "dense_acc": dense_res["acc"],
        "unstructured_sparsity": M.sparsity(uns["masks"]),
        "unstructured_acc_before_ft": uns["acc_before_ft"],
        "unstructured_acc": uns["acc"],
        "structured_filter_sparsity": cfg.filter_sparsity,
        "structured_acc_before_ft": st["acc_before_ft"],
        "structured_acc": st["acc"],
        "compact_acc": compact_acc,
        **meas,
        "unstructured_effective_flops_reduction": uns_sum["flops"] / max(uns_sum["effective_flops"], 1),
    }


def _comparison_figure(dense_acc: float, uns_acc: float, st_acc: float, meas: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
    panels = [
        ("test accuracy", ["dense", "unstructured", "structured"], [dense_acc, uns_acc, st_acc]),
        ("parameters", ["dense", "compact"], [meas["params_dense"], meas["params_compact"]]),
        ("FLOPs", ["dense", "compact"], [meas["flops_dense"], meas["flops_compact"]]),
        ("latency (ms)", ["dense", "compact"], [meas["latency_ms_dense"], meas["latency_ms_compact"]]),
    ]
    for ax, (title, labels, vals) in zip(axes, panels):
        ax.bar(labels, vals, color=["#4c72b0", "#dd8452", "#55a868"][: len(vals)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig
