"""Recipe ``turbo-vbi``: structured Bayesian compression with the Turbo-VBI three-layer prior.

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483. Procedures live in :mod:`sparseforge.bayes` (module A/B updates,
:class:`~sparseforge.bayes.TurboVBI`, its schedule callback, structure metrics); this module wires them.

Per model (``digits_mlp`` and LeNet-5 on the built-in digits by default), each stage cached:

1. ``warm``: E0 epochs of ordinary Adam training (shared start of every variant);
2. ``dense``: T·E_w more epochs (the ``magnitude`` start), then E_ft more (the ``dense`` variant);
3. ``turbo``: TurboVBI on every Linear/Conv2d (``targets``), mean CE + (β/N)·KL for T·E_w epochs with
   a turbo round before each E_w-epoch block; prune by π̃ >= ½, bake, masked fine-tune E_ft epochs;
4. ``turbo_iid``: the same pipeline with ``coupling="iid"``; its ``iid_prior`` is calibrated to the
   ``turbo`` compression rate (start at the MRF run's mean π, secant steps);
5. ``magnitude``: global |w| pruning of the ``dense`` start to the ``turbo`` compression rate, then
   the same fine-tune;
6. compaction of every variant (:func:`sparseforge.compact`), FLOPs on the compacted model and latency
   at batch ``latency_batch`` (interleaved blocks: median and spread).

β = ``kl_weight`` = 0.03 (reconstructed default for digits): with 1,437 training images and 50k
weights the untempered posterior (β = 1) prunes every weight (measured), so the KL is tempered. With
``gamma_preset=fl_demo`` (b/b̄ = 100) the posterior rule prunes nothing (measured compression rate 1.0).

Measured on the shared 2-core machine at threads=1: ``smoke`` ≈ 5 s of CPU (10-15 s wall while the
machine ran at load 6-8), ``quick`` ≈ 26 s of CPU per seed (50-117 s wall at load 6-8). Quick, 3 seeds,
median (``benchmarks/turbo_vbi.py``), digits_mlp: turbo 14.0x at 96.1% vs turbo_iid 13.9x at 96.9%,
run count 5.3 vs 8.2, tile occupancy 0.37 vs 0.59, neuron sparsity 0.28 vs 0.16; global magnitude at
14.0x reaches 92.2% but removes more neurons (0.38, by collapsing layer 2 and the classifier).
``paper``: LeNet-5 on MNIST (``--set mnist_dir=PATH``) and a BatchNorm-free VGG-11 on CIFAR-10
(``--set cifar10_dir=PATH allow_pickle=true``), 60 rounds of 5 epochs as in the authors' demo, β = 1.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import masks as M
from ..bayes import TurboVBI, TurboVBIConfig, calibrate_iid_prior
from ..bayes.measure import compact_and_measure
from ..bayes.plots import convergence_figure, support_figure
from ..config import RecipeConfig
from ..engine import EvalCallback, Run, evaluate_accuracy, fit, make_loader
from ..errors import ConfigError
from ..registry import MODELS
from . import recipe
from ._common import load_classification, model_kwargs_for

VARIANTS = ("dense", "turbo", "turbo_iid", "magnitude")
METRICS = ("acc", "compression_rate", "neuron_sparsity", "run_count", "tile_occupancy", "flops", "latency_ms")
_TV_FIELDS = ("kappa", "ratio", "gamma_preset", "kl_weight", "p01_h", "p11_h", "p01_v", "p11_v", "start_prob_linear",
              "start_prob_conv", "bp_iters", "damping", "rho_update", "extrinsic_a", "extrinsic_b", "learn_sigma",
              "prune_rule", "conv_layout", "inner_iters")


@dataclass
class TurboVbiConfig(RecipeConfig):
    """Configuration of ``turbo-vbi`` (Turbo-VBI options are those of :class:`~sparseforge.bayes.TurboVBIConfig`).

    Attributes:
        models: registered models; the first is the primary one (flat summary keys).
        datasets: one dataset per model, or one for all (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``).
        mnist_dir, cifar10_dir: folders of the user datasets; allow_pickle: CIFAR-10 pickles run code.
        targets: module names / patterns made Bayesian (None = every Linear and Conv2d).
        warm_epochs, rounds, epochs_per_round, finetune_epochs: E0, T, E_w, E_ft.
        lr, batch_size: Adam learning rate and batch size (the demo's 1e-3, 128).
        iid_prior: fixed π of ``turbo_iid``; None calibrates it to the ``turbo`` compression rate in at most
            ``iid_search_steps`` trainings (accepting ``iid_tolerance`` relative error).
        latency_batch, latency_repeats, latency_blocks: the timing set-up.
    """

    data_dirs: ClassVar[dict[str, Any]] = {"mnist_dir": ("datasets", ("mnist", "fashion_mnist")),
                                           "cifar10_dir": ("datasets", ("cifar10",))}
    limits: ClassVar[dict[str, Any]] = {"rounds": (1, 10_000), "epochs_per_round": (1, 10_000), "bp_iters": (1, 10_000)}

    models: tuple[str, ...] = ("digits_mlp", "lenet5")
    datasets: tuple[str, ...] = ("digits",)
    mnist_dir: str | None = None
    cifar10_dir: str | None = None
    allow_pickle: bool = False
    targets: tuple[str, ...] | None = None
    warm_epochs: int = 20
    rounds: int = 20
    epochs_per_round: int = 2
    finetune_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    kl_weight: float = 0.03
    kappa: float = 0.5
    ratio: float = 10.0
    gamma_preset: Literal["scaled", "fl_demo", "custom"] = "scaled"
    p01_h: float | None = None
    p11_h: float | None = None
    p01_v: float | None = None
    p11_v: float | None = None
    start_prob_linear: float | None = 0.3
    start_prob_conv: float | None = None
    bp_iters: int = 10
    damping: float = 0.5
    rho_update: Literal["real", "complex"] = "real"
    extrinsic_a: Literal["extrinsic", "demo"] = "extrinsic"
    extrinsic_b: Literal["extrinsic", "belief"] = "extrinsic"
    learn_sigma: bool = True
    prune_rule: Literal["posterior", "magnitude", "both"] = "posterior"
    conv_layout: Literal["fanin_x_out", "tf_blocks"] = "fanin_x_out"
    inner_iters: int = 1
    iid_prior: float | None = None
    iid_search_steps: int = 3
    iid_tolerance: float = 0.1
    latency_batch: int = 1024
    latency_repeats: int = 40
    latency_blocks: int = 5
    threads: int | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models or len(self.datasets) not in (1, len(self.models)):
            raise ConfigError("give at least one model and either one dataset or one per model")
        if min(self.rounds, self.epochs_per_round, self.iid_search_steps, self.latency_repeats) < 1:
            raise ConfigError("rounds, epochs_per_round, iid_search_steps and latency_repeats must be >= 1")
        if self.warm_epochs < 0 or self.finetune_epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("warm_epochs and finetune_epochs must be >= 0, lr > 0 and batch_size >= 1")
        self.tv_config()  # Gamma constants > 0, probabilities in (0, 1), known options

    def tv_config(self, **changes: Any) -> TurboVBIConfig:
        return TurboVBIConfig(**{k: getattr(self, k) for k in _TV_FIELDS}, **changes)


PRESETS = {
    "smoke": {"models": ("digits_mlp",), "warm_epochs": 1, "rounds": 2, "epochs_per_round": 1, "finetune_epochs": 1,
              "iid_search_steps": 1, "latency_batch": 128, "latency_repeats": 4, "latency_blocks": 2},
    "quick": {},
    "paper": {"models": ("lenet5", "vgg11"), "datasets": ("mnist", "cifar10"), "warm_epochs": 10, "rounds": 60,
              "epochs_per_round": 5, "finetune_epochs": 10, "kl_weight": 1.0, "latency_batch": 256,
              "latency_repeats": 50, "threads": None},
}


@recipe("turbo-vbi", config=TurboVbiConfig, presets=PRESETS,
        help="digits MLP / LeNet-5: Turbo-VBI (MRF support prior) vs i.i.d. prior vs magnitude, structure + compacted speed",
        claim=("The three-layer hierarchical prior with an MRF over each layer's support prunes in a regular structure "
               "(whole neurons, contiguous runs) at the same compression rate as an i.i.d. prior, keeping accuracy, "
               "so the compacted network is smaller and faster."),
        headline=("acc/turbo", "acc/turbo_iid", "acc/magnitude", "compression_rate/turbo", "neuron_sparsity/turbo",
                  "neuron_sparsity/turbo_iid", "run_count/turbo", "run_count/turbo_iid"),
        goal="run_count/turbo < run_count/turbo_iid and neuron_sparsity/turbo > neuron_sparsity/turbo_iid",
        goal_text="the MRF prior gives fewer runs per neuron and more whole neurons removed than the i.i.d. prior",
        key_figure="support_digits_mlp",
        paper_note="the paper reports more regular structure than its baselines at better accuracy (no numbers here)")
def run(cfg: TurboVbiConfig, run: Run) -> dict:
    summary: dict[str, Any] = {"kl_weight": cfg.kl_weight, "kappa": cfg.kappa}
    rows: list[dict[str, Any]] = []
    layer_rows: list[dict[str, Any]] = []
    for i, name in enumerate(cfg.models):
        res = _run_model(cfg, run, name, cfg.datasets[i if len(cfg.datasets) > 1 else 0])
        prefix = "" if i == 0 else f"{name}/"
        for v, r in res["variants"].items():
            rows.append({"model": name, "variant": v, **{k: r[k] for k in (*METRICS, "latency_spread_ms", "acc_before_finetune")}})
            for k in (*METRICS, "latency_spread_ms", "latency_speedup", "acc_before_finetune"):
                summary[f"{k}/{prefix}{v}"] = r[k]
        layer_rows += [{"model": name, "variant": v, **r} for v, rs in res["layers"].items() for r in rs]
        summary[f"iid_prior/{prefix}turbo_iid"] = res["iid_prior"]
        summary[f"converged_round/{prefix}turbo"] = res["converged"]["turbo"]
        run.save_figure(support_figure(res["images"], title=name), f"support_{name}",
                        f"{name}: support posteriors π̃ per layer (rows = fan-in, columns = neurons), turbo vs turbo_iid")
        run.save_figure(convergence_figure(res["history"]), f"convergence_{name}",
                        f"{name}: ELBO estimate and relative changes of ã, b̃, π̃ per outer round (ã is constant when a = ā)")
        run.save_table(f"iid calibration {name}", res["trials"], caption="turbo_iid runs tried to match the turbo compression rate")
    run.save_table("layers", layer_rows, caption="per layer and variant: density, dead neurons (fan-in or fan-out "
                   "all zero), run count, 4x4 tile occupancy (support layout; the classifier is outside the structure figures)")
    run.save_table("variants", rows, caption=f"after fine-tune and compaction; latency at batch {cfg.latency_batch}, "
                   f"median of {cfg.latency_blocks} interleaved blocks (spread = half range)")
    return summary


def _run_model(cfg: TurboVbiConfig, run: Run, name: str, dataset: str) -> dict[str, Any]:
    dir_key = {"mnist": "mnist_dir", "fashion_mnist": "mnist_dir", "cifar10": "cifar10_dir"}.get(dataset)
    data_dir = getattr(cfg, dir_key) if dir_key else None
    if dir_key and not data_dir:
        raise ConfigError(f"dataset {dataset!r} reads files from disk: pass --set {dir_key}=PATH")
    data = load_classification(dataset, data_dir, allow_pickle=cfg.allow_pickle, seed=cfg.seed)
    kw = model_kwargs_for(data, name)
    if "bn" in inspect.signature(MODELS.get(name)).parameters:
        kw["bn"] = False  # BatchNorm after a Bayesian layer rescales away its shrinkage
    n_train = int(data.x_train.shape[0])
    loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test = make_loader(data.test, 512, shuffle=False)
    bayes_epochs = cfg.rounds * cfg.epochs_per_round
    tag = lambda s: f"{name}/{s}"  # noqa: E731

    def fresh(state: dict | None = None) -> nn.Module:
        torch.manual_seed(cfg.seed)
        m = MODELS.get(name)(**kw).to(cfg.device)
        if state is not None:
            m.load_state_dict(state)
        return m

    def train(model: nn.Module, epochs: int, series: str, *, opt_state=None, penalty=None, callbacks=()) -> dict:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        if epochs > 0:
            ev = EvalCallback(lambda m: {"test_acc": evaluate_accuracy(m, test, cfg.device)}, every=max(1, epochs // 10))
            fit(model, loader, opt, loss_fn=F.cross_entropy, penalty_fn=penalty, epochs=epochs,
                callbacks=[*callbacks, ev], run=run, series=tag(series), device=cfg.device, desc=tag(series), stateful=())
        return {"state": copy.deepcopy(model.state_dict()), "opt": opt.state_dict(),
                "acc": evaluate_accuracy(model, test, cfg.device)}

    def finetune(model: nn.Module, masks: dict[str, torch.Tensor], series: str) -> dict:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        ms = M.attach(model, masks, opt)
        acc0 = evaluate_accuracy(model, test, cfg.device)
        if cfg.finetune_epochs > 0:
            fit(model, loader, opt, loss_fn=F.cross_entropy, epochs=cfg.finetune_epochs, run=run, series=tag(series),
                device=cfg.device, desc=tag(series), stateful=())
        ms.bake()
        return {"state": copy.deepcopy(model.state_dict()), "acc": evaluate_accuracy(model, test, cfg.device),
                "acc_before_finetune": acc0}

    warm = run.cached(tag("warm"), lambda: train(fresh(), cfg.warm_epochs, "warm"))

    def dense_stage() -> dict:
        m = fresh(warm["state"])
        pre = train(m, bayes_epochs, "dense", opt_state=warm["opt"])
        final = train(m, cfg.finetune_epochs, "dense_ft", opt_state=pre["opt"])
        return {"pre": pre["state"], "state": final["state"], "acc": final["acc"], "acc_before_finetune": pre["acc"]}

    dense = run.cached(tag("dense"), dense_stage)
    xtr, ytr = data.x_train[:4096].to(cfg.device), data.y_train[:4096].to(cfg.device)

    def bayes(coupling: str, prior: float, series: str) -> dict:
        m = fresh(warm["state"])
        tv = TurboVBI(m, targets=list(cfg.targets) if cfg.targets else None, n_data=n_train,
                      config=cfg.tv_config(coupling=coupling, iid_prior=prior))
        cb = tv.callback(rounds=cfg.rounds, epochs_per_round=cfg.epochs_per_round,
                         data_fn=lambda mm: F.cross_entropy(mm(xtr), ytr))
        train(m, cb.total_epochs, series, penalty=lambda _: tv.penalty(), callbacks=[cb])
        natural = tv.natural_sparsity()
        masks = tv.prune()
        return {"model": tv.bake(), "masks": masks, "history": cb.history, "converged": cb.converged_at,
                "images": tv.support_images("pi_tilde"), "natural_sparsity": natural,
                "compression_rate": 1.0 / max(1.0 - natural, 1e-12),
                "mean_pi": float(torch.cat([ly.pi_prior.flatten() for ly in tv.layers().values()]).mean())}

    def finish(r: dict, series: str) -> dict:
        ft = finetune(r.pop("model"), r["masks"], series)
        return {**r, **ft}

    turbo = run.cached(tag("turbo"), lambda: finish(bayes("mrf", 0.5, "turbo"), "turbo_ft"))

    def iid_stage() -> dict:
        if cfg.iid_prior is not None:
            best, trials = bayes("iid", cfg.iid_prior, "turbo_iid"), []
        else:
            count = iter(range(cfg.iid_search_steps))
            best, trials = calibrate_iid_prior(lambda p: {**bayes("iid", p, f"turbo_iid_{next(count)}"), "iid_prior": p},
                                               turbo["compression_rate"], initial=min(max(turbo["mean_pi"], 1e-3), 0.999),
                                               steps=cfg.iid_search_steps, tolerance=cfg.iid_tolerance)
        prior = best.pop("iid_prior", cfg.iid_prior)
        return {**finish(best, "turbo_iid_ft"), "iid_prior": prior, "trials": trials}

    iid = run.cached(tag("turbo_iid"), iid_stage)

    def magnitude_stage() -> dict:
        from ..pruning import prune_global, scores

        m = fresh(dense["pre"])
        params = dict(m.named_parameters())
        weights = {k: params[k] for k in turbo["masks"]}  # the same target weights as Turbo-VBI
        sparsity = 1.0 - 1.0 / turbo["compression_rate"]
        masks = prune_global(m, scores(m, "magnitude", params=weights), sparsity)
        return {**finetune(m, masks, "magnitude_ft"), "masks": masks}

    mag = run.cached(tag("magnitude"), magnitude_stage)

    # compaction, FLOPs, latency, structure ----------------------------------------------------
    states = {"dense": dense, "turbo": turbo, "turbo_iid": iid, "magnitude": mag}
    nets = {v: fresh(s["state"]).eval() for v, s in states.items()}
    reps = max(1, math.ceil(cfg.latency_batch / data.x_test.shape[0]))
    example = data.x_test.repeat(reps, *([1] * (data.x_test.dim() - 1)))[: cfg.latency_batch].to(cfg.device)
    meas = compact_and_measure(nets, example, repeats=cfg.latency_repeats, blocks=cfg.latency_blocks)
    probe = TurboVBI(fresh(), targets=list(cfg.targets) if cfg.targets else None, n_data=n_train, config=cfg.tv_config())
    variants, layers = {}, {}
    for v, net in nets.items():
        wmasks = {k: dict(net.named_parameters())[k].detach() != 0 for k in probe.param_names()}
        st = probe.metrics(wmasks)
        layers[v] = [{k: r[k] for k in ("layer", "shape", "density", "neurons", "dead_neurons", "run_count", "tile_occupancy")}
                     for r in st["layers"]]
        mm = meas[v]
        variants[v] = {"acc": states[v]["acc"], "acc_before_finetune": states[v]["acc_before_finetune"],
                       "compression_rate": st["compression_rate"], "neuron_sparsity": st["neuron_sparsity"],
                       "run_count": st["run_count"], "tile_occupancy": st["tile_occupancy"],
                       "flops": mm["flops_compact"], "latency_ms": mm["latency_ms"],
                       "latency_spread_ms": mm["latency_spread_ms"],
                       "latency_speedup": meas["dense"]["latency_ms"] / max(mm["latency_ms"], 1e-9)}
    return {"variants": variants, "layers": layers, "iid_prior": iid["iid_prior"], "trials": iid["trials"],
            "images": {"turbo": turbo["images"], "turbo_iid": iid["images"]},
            "history": {"turbo": turbo["history"], "turbo_iid": iid["history"]},
            "converged": {"turbo": turbo["converged"], "turbo_iid": iid["converged"]}}
