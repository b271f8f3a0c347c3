"""``sst-lm``: Sparse Spectral Training vs full-rank, LoRA, ReLoRA and GaLore on a byte-level LM.

Paper: Zhao et al., "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural
Networks", arXiv:2405.15481 (OPT-125M at r = 64: gap reduction 67.6%). Baselines: LoRA
(arXiv:2106.09685), ReLoRA (arXiv:2307.05695), GaLore (arXiv:2403.03507).

An OPT-style decoder-only LM (``causal_lm``: pre-LN, learned positions, ReLU MLP, tied head) is
trained from scratch on byte-level text — by default the Python standard library's sources found
on the machine (:func:`sparseforge.data.text.stdlib_corpus`). Every method uses the same seed,
initial weights, data order, step budget and rank r (default d/8); all attention and MLP linears
are converted; embeddings, LayerNorms and biases stay dense and trained. Optimizer: AdamW
(0.9/0.999, wd 0.01 on dense matrices, 0 on U, V, sigma), global schedule = linear warm-up (5%)
then cosine to 10% of the LR (:func:`sparseforge.optim.warmup_cosine`); per-method LRs (``lr_<method>``)
and ``full_linear_lr_scale`` (the full-rank linears' LR multiplier).

Reported per method: validation perplexity (exp of the mean byte NLL on the held-out stream),
trainable parameters, optimizer-state bytes (measured from ``optimizer.state``), peak memory of one
training step (:func:`sparseforge.spectral.memory.step_peak_memory`) and training tokens/s. Also the
gap reduction (best other low-rank - SST) / (best other low-rank - full) over LoRA, ReLoRA, GaLore, and
the paper's version over LoRA and ReLoRA only; ``None`` ("undefined") when full rank is not better than
the best low-rank method, as happens in short runs (the gap needs about 2000 steps at this size).

The per-method learning rates are the best of a sweep on this setting (d=64, 2 layers, r=8, batch 16,
seq 64, 2000 steps; ``docs/results.md``): full 2e-2, LoRA 1e-2, ReLoRA 3e-3, GaLore 1e-2, SST 1e-2.
The ``paper`` preset resets them all to its single ``lr``.

Presets: ``smoke`` ~8 s; ``quick`` (d=64, batch 16, r=8, 300 steps per method, resample every 25)
~32 s on a 2-core machine (the gap is undefined at 300 steps); ``paper`` = OPT-125M dimensions (d=768,
12 layers, 12 heads, r=64, T3=200, one lr 1e-3), days on CPU. Byte tokens (V = 256) replace OPT's BPE.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .. import spectral
from ..config import RecipeConfig
from ..data.text import WindowSampler, eval_windows, load_corpus
from ..engine import EvalCallback, Run, fit
from ..engine import distributed as D
from ..errors import ConfigError
from ..models.causal_lm import CausalLM, lm_step, perplexity
from ..optim import warmup_cosine
from ..registry import METHODS
from ..spectral.memory import step_peak_memory
from ..spectral.metrics import gap_reduction
from . import recipe

ALL_METHODS = ("full", "lora", "relora", "galore", "sst")  # the default series; any spectral method may be named


@dataclass
class SSTLMConfig(RecipeConfig):
    """Config of ``sst-lm`` (see the module docstring).

    Attributes:
        corpus: ``"stdlib"`` or a text file / directory.
        max_bytes: corpus size cap in bytes.
        methods: which of full, lora, relora, galore, sst to run (plus SST ablations via ``sst_ablations``).
        rank: r for every method; 0 means d/8.
        steps: optimizer steps per method.
        lr / lr_<method>: base LR and per-method overrides (None = ``lr``).
        full_linear_lr_scale: LR multiplier of the full-rank model's linear weights.
        sst_T3 / sst_T2 / sst_warmup: resample period, re-SVD period in iterations (0 = d/r),
            per-iteration LR warm-up steps.
        relora_variant: ``relora`` (prune 0.99 of moments) or ``relora_star`` (full reset).
        sst_ablations: extra SST runs, any of ``top_r``, ``uniform``, ``plain_grad``, ``mix``.
    """

    corpus: str = "stdlib"
    max_bytes: int = 2_000_000
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 400
    rank: int = 0
    methods: tuple[str, ...] = ALL_METHODS
    lr: float = 3e-3
    lr_full: float | None = 2e-2
    lr_lora: float | None = 1e-2
    lr_relora: float | None = 3e-3
    lr_galore: float | None = 1e-2
    lr_sst: float | None = 1e-2
    full_linear_lr_scale: float = 0.4
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float | None = 1.0
    sst_T3: int = 25
    sst_T2: int = 0
    sst_warmup: int = 5
    sst_sampling: Literal["sigma", "sigma_uniform_mix", "uniform", "sequential", "top_r"] = "sigma"
    sst_enhanced_grad: bool = True
    sst_forward_mode: Literal["auto", "materialize", "factored"] = "auto"
    relora_variant: Literal["relora", "relora_star"] = "relora"
    relora_reset_every: int = 100
    relora_rewarm: int = 10
    relora_prune_mode: Literal["joint", "per_key"] = "joint"
    galore_proj_gap: int = 50
    galore_scale: float = 0.25
    eval_every: int = 50
    eval_tokens: int = 32_768
    final_eval_tokens: int = 131_072
    measure_memory: bool = True
    sst_ablations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        known = METHODS.names(family="spectral")
        bad = [m for m in self.methods if m not in known]
        if bad or not self.methods:
            raise ConfigError(f"methods must be a non-empty subset of {', '.join(known)}; got {bad or 'none'}")
        bad = [a for a in self.sst_ablations if a not in ("top_r", "uniform", "plain_grad", "mix")]
        if bad:
            raise ConfigError(f"sst_ablations must be among top_r, uniform, plain_grad, mix; got {bad}")
        for k in ("steps", "d_model", "n_layers", "n_heads", "seq_len", "batch_size", "eval_every", "sst_T3",
                  "relora_reset_every", "galore_proj_gap", "max_bytes"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)} (a resample/reset period of 0 is not allowed)")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        r = self.resolved_rank
        if not 1 <= r < self.d_model:
            raise ConfigError(f"rank must satisfy 1 <= rank < d_model={self.d_model}, got {r}")
        if self.sst_T2 < 0 or self.sst_warmup < 0:
            raise ConfigError("sst_T2 and sst_warmup must be >= 0")

    @property
    def resolved_rank(self) -> int:
        return self.rank if self.rank > 0 else max(1, self.d_model // 8)

    def method_lr(self, method: str) -> float:
        v = getattr(self, f"lr_{method}", None)
        return self.lr if v is None else v


cosine_schedule = warmup_cosine  # kept for callers of the old name


def build_method(cfg: SSTLMConfig, method: str, *, seed: int, variant: dict[str, Any] | None = None):
    """(model, optimizer, controller) for one method, from the seed's initial weights."""
    variant = variant or {}
    torch.manual_seed(seed)
    model = CausalLM(vocab_size=256, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                     seq_len=cfg.seq_len)
    r = cfg.resolved_rank
    lr = cfg.method_lr(method)
    layer_opts: dict[str, Any] = {}
    if method == "sst":
        layer_opts = {"forward_mode": cfg.sst_forward_mode, "enhanced_grad": variant.get("enhanced_grad", cfg.sst_enhanced_grad)}
    conv = cfg.relora_variant if method == "relora" else method
    spectral.convert(model, conv, rank=r, **layer_opts)
    opt = spectral.build_optimizer(
        model, lr=lr, weight_decay=cfg.weight_decay,
        linear_lr_scale=cfg.full_linear_lr_scale if method == "full" else 1.0,
        galore_update_proj_gap=cfg.galore_proj_gap, galore_scale=cfg.galore_scale,
    )
    ctl = None
    if method == "sst":
        ctl = spectral.attach("sst", model, opt, T3=cfg.sst_T3, T2=cfg.sst_T2 or None, d=cfg.d_model,
                              warmup_iter=cfg.sst_warmup, sampling=variant.get("sampling", cfg.sst_sampling),
                              seed=seed)
    elif method == "relora":
        ctl = spectral.attach(cfg.relora_variant, model, opt, reset_every=cfg.relora_reset_every,
                              rewarm=cfg.relora_rewarm, seed=seed, prune_mode=cfg.relora_prune_mode)
    return model, opt, ctl


def measure_step_memory(cfg: SSTLMConfig, method: str, batch: tuple[torch.Tensor, torch.Tensor], *,
                        seed: int, variant: dict[str, Any] | None = None) -> int | None:
    """Peak bytes of one training step of ``method`` (after a warm-up step so optimizer state exists)."""
    try:
        model, opt, _ = build_method(cfg, method, seed=seed, variant=variant)
        model.to(cfg.device)
        batch = (batch[0].to(cfg.device), batch[1].to(cfg.device))
        return step_peak_memory(model, opt, lm_step, batch, device=cfg.device)
    except Exception:  # the measurement must never break a run  # noqa: BLE001
        return None


def train_method(cfg: SSTLMConfig, run: Run, corpus: Any, val: tuple[torch.Tensor, torch.Tensor],
                 method: str, series: str, *, variant: dict[str, Any] | None = None) -> dict[str, Any]:
    seed = cfg.seed
    model, opt, ctl = build_method(cfg, method, seed=seed, variant=variant)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, cfg.warmup_frac, cfg.min_lr_frac))
    data = WindowSampler(corpus.train, cfg.batch_size, cfg.seq_len, seed=seed, rank=D.rank(),
                         batches_per_epoch=cfg.steps)
    xv, yv = val
    ev_x, ev_y = xv[: max(1, cfg.eval_tokens // cfg.seq_len)], yv[: max(1, cfg.eval_tokens // cfg.seq_len)]
    eval_time = [0.0]

    def eval_fn(m: nn.Module) -> dict[str, float]:
        t = time.perf_counter()
        out = {"val_ppl": perplexity(m, ev_x, ev_y, device=cfg.device)}
        eval_time[0] += time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    state = fit(model, data, opt, step_fn=lm_step, steps=cfg.steps, scheduler=sched, device=cfg.device,
                callbacks=[EvalCallback(eval_fn, every=cfg.eval_every, unit="step", at_start=True)],
                run=run, series=series, grad_clip=cfg.grad_clip, desc=series)
    train_time = time.perf_counter() - t0 - eval_time[0]
    raw = state.raw_model
    raw.eval()
    final_ppl = perplexity(raw, xv, yv, device=cfg.device)
    mem = spectral.memory_report(raw, opt)["total"]
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len * D.world_size()
    peak = measure_step_memory(cfg, method, next(iter(data)), seed=seed, variant=variant) if cfg.measure_memory else None
    # a hash of the final parameters and buffers (bitwise identical on every rank under DDP)
    sha = hashlib.sha1()
    for name, t in list(raw.state_dict().items()):
        sha.update(name.encode())
        sha.update(t.detach().cpu().contiguous().numpy().tobytes())
    h = sha.hexdigest()[:16]
    return {
        "method": series,
        "val_ppl": final_ppl,
        "trainable_params": mem["trainable_params"],
        "optimizer_state_bytes": mem["optimizer_state_bytes"],
        "grad_bytes": mem["grad_bytes"],
        "peak_mem_bytes": peak,
        "tokens_per_s": tokens / max(train_time, 1e-9),
        "step_time_ms": 1000 * train_time / cfg.steps,
        "lr": cfg.method_lr(method),
        "final_train_loss": state.loss,
        "param_checksum": h,
        "n_resamples": getattr(ctl, "iteration", None),
        "n_resvd": getattr(ctl, "n_resvd", None),
        "n_resets": getattr(ctl, "n_resets", None),
        "model": raw,
    }


ABLATIONS = {
    "top_r": {"sampling": "top_r"},
    "uniform": {"sampling": "uniform"},
    "mix": {"sampling": "sigma_uniform_mix"},
    "plain_grad": {"enhanced_grad": False},
}


@recipe(
    "sst-lm",
    config=SSTLMConfig,
    presets={
        "smoke": {"steps": 20, "d_model": 32, "n_layers": 1, "batch_size": 8, "seq_len": 32, "eval_every": 10,
                  "eval_tokens": 2048, "final_eval_tokens": 4096, "max_bytes": 300_000, "sst_T3": 5, "sst_warmup": 2,
                  "relora_reset_every": 10, "relora_rewarm": 3, "galore_proj_gap": 10},
        "quick": {"steps": 300, "eval_every": 60, "eval_tokens": 16_384, "final_eval_tokens": 65_536},
        "paper": {"d_model": 768, "n_layers": 12, "n_heads": 12, "seq_len": 512, "batch_size": 32, "rank": 64,
                  "steps": 20_000, "lr": 1e-3, **{f"lr_{m}": None for m in ALL_METHODS}, "sst_T3": 200,
                  "sst_warmup": 20, "relora_reset_every": 200, "relora_rewarm": 50, "galore_proj_gap": 200, "eval_every": 1000, "max_bytes": 32_000_000,
                  "final_eval_tokens": 1_000_000, "sst_ablations": ("top_r", "uniform", "plain_grad")},
    },
    help="SST vs full-rank, LoRA, ReLoRA, GaLore: a byte-level OPT-style LM trained from scratch",
    headline=("full/val_ppl", "sst/val_ppl", "lora/val_ppl", "relora/val_ppl", "galore/val_ppl", "gap_reduction"),
)
def run(cfg: SSTLMConfig, run: Run) -> dict[str, Any]:
    """Train every method at the same rank and budget; report perplexity, memory and speed.

    Wall time: smoke ~8 s in the test suite; quick 32 s (measured, 2-core machine).
    """
    corpus = load_corpus(cfg.corpus, max_bytes=cfg.max_bytes)
    xv, yv = eval_windows(corpus.val, cfg.seq_len, max_tokens=cfg.final_eval_tokens)
    results: dict[str, dict[str, Any]] = {}
    jobs = [(m, m, None) for m in cfg.methods] + [(f"sst_{a}", "sst", ABLATIONS[a]) for a in cfg.sst_ablations]
    def stage(series: str, method: str, variant: dict[str, Any] | None) -> dict[str, Any]:
        res = train_method(cfg, run, corpus, (xv, yv), method, series, variant=variant)
        res.pop("model")
        return res

    for series, method, variant in jobs:  # each method is a stage: --resume skips finished ones
        results[series] = run.cached(series, lambda s=series, m=method, v=variant: stage(s, m, v))
    ppl = {k: v["val_ppl"] for k, v in results.items()}
    gap = gap_ppr = None
    if "full" in ppl and "sst" in ppl:
        others = {m: ppl[m] for m in cfg.methods if m not in ("full", "sst")}
        gap = gap_reduction(ppl["full"], ppl["sst"], others)
        gap_ppr = gap_reduction(ppl["full"], ppl["sst"], {m: ppl[m] for m in ("lora", "relora") if m in ppl})
    full_state = results.get("full", {}).get("optimizer_state_bytes")
    rows = []
    for v in results.values():
        row = {key: v[key] for key in ("method", "val_ppl", "trainable_params", "optimizer_state_bytes", "grad_bytes",
                                       "peak_mem_bytes", "tokens_per_s", "step_time_ms", "lr")}
        row["val_ppl"] = round(row["val_ppl"], 4)
        row["tokens_per_s"] = round(row["tokens_per_s"], 1)
        row["step_time_ms"] = round(row["step_time_ms"], 2)
        if full_state:
            row["opt_state_vs_full"] = round(v["optimizer_state_bytes"] / full_state, 4)
        rows.append(row)
    note = ("gap reduction undefined: full rank is not better than the best low-rank method at this budget "
            "(expected below ~2000 steps at this size)") if gap is None and "full" in ppl and "sst" in ppl else ""
    run.save_table("methods", rows, caption=(
        f"byte-level LM on {corpus.source} ({corpus.train.numel():,} train / {corpus.val.numel():,} val bytes), "
        f"d={cfg.d_model}, r={cfg.resolved_rank}, {cfg.steps} steps per method, world size {D.world_size()}. "
        f"Peak memory: one training step (CPU: TorchDispatchMode storage tracker; CUDA: max_memory_allocated). {note}"))
    summary: dict[str, Any] = {
        "rank": cfg.resolved_rank,
        "steps": cfg.steps,
        "world_size": D.world_size(),
        "corpus_train_bytes": int(corpus.train.numel()),
        "corpus_val_bytes": int(corpus.val.numel()),
        "gap_reduction": gap,
        "gap_reduction_lora_relora": gap_ppr,
        "gap_note": note or "defined",
    }
    for k, v in results.items():
        for key in ("val_ppl", "trainable_params", "optimizer_state_bytes", "peak_mem_bytes", "tokens_per_s",
                    "step_time_ms", "param_checksum"):
            summary[f"{k}/{key}"] = v[key]
    return summary


__all__ = ["SSTLMConfig", "build_method", "cosine_schedule", "lm_step", "perplexity", "run", "train_method"]

