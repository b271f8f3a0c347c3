"""``giorom``: a reduced-order neural operator on ~20% of the particles vs GNS on all of them.

Paper: Viswanath et al., "Reduced-Order Neural Operators: Learning Lagrangian Dynamics on Highly
Sparse Graphs", arXiv 2407.03925 (claims: ~100,000-point clouds inferred from ~1,000-point sparse
graphs with negligible change in computation time; 25x faster than GNS-style simulators with better
or comparable accuracy). Baseline: GNS, Sanchez-Gonzalez et al., arXiv 2002.09405.

Stages (each ``run.cached``): (1) data: MLS-MPM trajectories generated from the seed
(:func:`sparseforge.data.particles.generate_particle_splits`) or a GNS folder (``data_dir``:
``train/valid/test.npz`` + ``metadata.json``); (2) a sparse subset per trajectory by FPS
(``frac`` = 0.2) and its graph radius (2.5 x the mean nearest-neighbour spacing); (3) GIOROM trained
on the sparse trajectories; (4) GNS trained on the full trajectories with the same steps, batch,
optimizer and noise; (5) the splat dense decoder trained on ground-truth sparse -> full frames;
(6) evaluation on the test trajectories: one-step MSE, rollout MSE over the whole horizon (GIOROM's
decoded full cloud vs GNS on the full cloud; GIOROM on its sparse points; a constant-velocity
reference), relative L2 and Chamfer distance of the decoded cloud, and the time per rollout step
of both models at the training resolution, measured side by side. The scale sweep (N = 1e4..1e5)
is ``benchmarks/giorom_speed.py``.

Optimizer (reconstructed small-scale setting): Adam, lr 1e-3 decaying exponentially to 1e-5, 2
scenes per batch. Noise sigma (``noise_std=None``, reconstructed default): the GIOROM code's 3e-4
fluid-like / 3e-5 granular / 0 elastic divided by 3 for this generator's data (per-frame acceleration
std ~2e-4): 1e-4 water and goop, 1e-5 sand and plasticine, 0 jelly. Measured on 2-D water, width 64,
1000 steps, batch 1: rollout MSE 0.0092 at sigma = 3e-4 (no better than constant velocity, 0.0086)
vs 0.0016 at 1e-4 with GIOROM's clean-position target (0.0046 / 0.0020 with GNS's target).

Presets: ``smoke`` (tiny widths, 150 particles) 2.2 s; ``quick`` (2-D
water, 6/1/1 trajectories of 1,000 particles x 100 frames, latent grid 16, 300 steps per model) with
width 64, FNO modes 8, a 3-block GNS (instead of 128 and 10 blocks: CPU budget) and batch 1:
56 s wall / 56 s CPU at threads=1 (load ~1.5; 191 s wall at load ~7). ``paper`` = the reconstructed
small-scale setup (20/4/4 trajectories, width 128, grid 32, GNS 10 blocks, 50k steps, plus the
GNS-on-sparse + IDW baseline): days on CPU, not run here.

Measured (quick, seed 0): rollout MSE GIOROM (decoded cloud) 0.0027, GNS 0.0035, constant velocity
0.0086; time per step at 1k particles 13.9 ms vs 29-33 ms (2.2x). 300 steps leave both models far
from converged: in the rendered rollout both fall through the floor. ``benchmarks/giorom_speed.py``
(1000 steps per model, 3 seeds, 1 thread): rollout MSE median GIOROM 0.0042 vs GNS 0.0017 (ratio
2.5; per seed 2.5 / 2.3 / 0.39; the 2x target is not met at this budget), constant velocity 0.0154;
time per step at N = 1e5 with GNS 10 x 128: GIOROM (1,000 sparse points + decode) 173 ms vs GNS 47.8 s
(276x), GIOROM 1.37x slower from N = 1e4 to 1e5.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import RecipeConfig
from ..data.particles import (
    ParticleSplits,
    WindowBatches,
    default_radius,
    generate_particle_splits,
    load_gns_dataset,
    subset,
)
from ..engine import EvalCallback, Run, fit
from ..engine import distributed as D
from ..errors import ConfigError
from ..graph import sample_points
from ..operators import (
    GIOROM,
    GNS,
    DecoderBatches,
    GIOROMConfig,
    GNSConfig,
    ParticleStats,
    build_decoder,
    compare_rollouts,
    decoder_loss,
    exponential_lr,
    n_params,
    one_step_mse,
    stepper_loss,
)
from ..physics.mpm import MATERIALS, MPMConfig
from . import recipe

NOISE = {"water": 1e-4, "goop": 1e-4, "sand": 1e-5, "plasticine": 1e-5, "jelly": 0.0}


@dataclass
class GIOROMRecipeConfig(RecipeConfig):
    """Config of ``giorom`` (see the module docstring).

    Attributes:
        data_dir: GNS folder (train/valid/test.npz + metadata.json); None = generate with MLS-MPM.
        allow_pickle: needed for GNS object-array .npz files (trusted files only).
        material, dim, n_particles, n_frames, n_train, n_valid, n_test, mpm_grid: generated data.
        sampler, frac: the sparse subset (FPS or random, fraction of the particles).
        radius_factor: graph radius = factor x the mean nearest-neighbour spacing at t = 0.
        noise_std: training noise sigma (None: by material); noise_target: "clean" or "gns".
        hidden, latent, latent_grid, fno_modes, fno_width: GIOROM; gns_blocks: GNS processor depth.
        steps, batch_size, lr, lr_final: training of both steppers (same budget).
        position_loss_weight: lambda of the extra position MSE (0, reconstructed default; code 1e5-1e9).
        clamp_to_bounds: clamp rollout positions to the bounds.
        decoder, decoder_steps: dense decoder.
        gns_sparse: also train GNS on the sparse points (same budget) and decode it with IDW, the
            baseline that isolates the latent operator (``rollout_mse/gns_sparse_idw``).
        eval_every: validation one-step MSE period (steps); timing_repeats: timing medians.
    """

    threads: int | None = 1
    data_dir: str | None = None
    allow_pickle: bool = False
    material: Literal["water", "jelly", "sand", "plasticine", "goop"] = "water"
    dim: int = 2
    n_particles: int = 1000
    n_frames: int = 100
    n_train: int = 20
    n_valid: int = 4
    n_test: int = 4
    mpm_grid: int | None = None
    sampler: Literal["fps", "random"] = "fps"
    frac: float = 0.2
    radius_factor: float = 2.5
    noise_std: float | None = None
    noise_target: Literal["clean", "gns"] = "clean"
    window: int = 5
    hidden: int = 128
    latent: Literal["fno", "transformer", "none"] = "fno"
    latent_grid: int | None = None
    fno_modes: int = 12
    fno_width: int = 32
    gns_blocks: int = 10
    steps: int = 50_000
    batch_size: int = 2
    lr: float = 1e-3
    lr_final: float = 1e-5
    position_loss_weight: float = 0.0
    clamp_to_bounds: bool = False
    decoder: Literal["splat", "idw", "neural_field"] = "splat"
    decoder_steps: int = 2000
    gns_sparse: bool = False
    eval_every: int = 1000
    timing_repeats: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.material not in MATERIALS:
            raise ConfigError(f"material must be one of {', '.join(MATERIALS)}, got {self.material!r}")
        if not 0 < self.frac <= 1:
            raise ConfigError(f"frac must be in (0, 1], got {self.frac}")
        for k in ("n_particles", "n_train", "steps", "batch_size", "hidden", "gns_blocks", "eval_every",
                  "timing_repeats", "window"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.n_test < 1 or self.n_valid < 0 or self.decoder_steps < 0:
            raise ConfigError("n_test must be >= 1, n_valid and decoder_steps >= 0")
        if self.n_frames < self.window + 3:
            raise ConfigError(f"n_frames must be >= window + 3 = {self.window + 3}")
        if self.dim not in (2, 3):
            raise ConfigError(f"dim must be 2 or 3, got {self.dim}")
        if self.radius_factor <= 0 or self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError("radius_factor, lr and lr_final must be > 0")


def load_data(cfg: GIOROMRecipeConfig) -> ParticleSplits:
    if cfg.data_dir is not None:
        tr, meta = load_gns_dataset(cfg.data_dir, "train", allow_pickle=cfg.allow_pickle)
        va, _ = load_gns_dataset(cfg.data_dir, "valid", allow_pickle=cfg.allow_pickle)
        te, _ = load_gns_dataset(cfg.data_dir, "test", allow_pickle=cfg.allow_pickle)
        return ParticleSplits(tr, va, te, meta)
    mpm = MPMConfig(dim=cfg.dim, n_grid=cfg.mpm_grid)
    return generate_particle_splits(cfg.material, n_train=cfg.n_train, n_valid=cfg.n_valid, n_test=cfg.n_test,
                                    n_particles=cfg.n_particles, n_frames=cfg.n_frames, seed=cfg.seed, dim=cfg.dim,
                                    config=mpm, radius_factor=cfg.radius_factor)


def build_models(cfg: GIOROMRecipeConfig, meta: dict[str, Any], sparse_radius: float) -> tuple[GIOROM, GNS]:
    sigma = cfg.noise_std if cfg.noise_std is not None else NOISE.get(meta.get("material", cfg.material), 1e-4)
    torch.manual_seed(cfg.seed)
    gio = GIOROM(ParticleStats.from_metadata(meta, noise_std=sigma, radius=sparse_radius),
                 GIOROMConfig(window=cfg.window, hidden=cfg.hidden, latent=cfg.latent, grid=cfg.latent_grid,
                              fno_modes=cfg.fno_modes, fno_width=cfg.fno_width))
    torch.manual_seed(cfg.seed)
    gns = GNS(ParticleStats.from_metadata(meta, noise_std=sigma),
              GNSConfig(window=cfg.window, hidden=cfg.hidden, blocks=cfg.gns_blocks))
    return gio, gns


def train_stepper(cfg: GIOROMRecipeConfig, run: Run, model: torch.nn.Module, trajs: list, valid: list,
                  series: str) -> dict[str, Any]:
    data = WindowBatches(trajs, window=cfg.window, batch_size=cfg.batch_size, batches_per_epoch=cfg.steps,
                         seed=cfg.seed + 1000 * D.rank())  # other windows on every rank under torchrun
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, exponential_lr(cfg.steps, cfg.lr, cfg.lr_final))
    vx, vt = [t.position for t in valid], [t.particle_type for t in valid]
    cbs = [EvalCallback(lambda m: {"valid_one_step_mse": one_step_mse(m, vx, vt, max_frames=10)},
                        every=cfg.eval_every, unit="step")] if valid else []
    t0 = time.process_time()
    state = fit(model, data, opt, step_fn=lambda m, b: stepper_loss(m, b, noise_target=cfg.noise_target,
                                                             position_loss_weight=cfg.position_loss_weight),
                steps=cfg.steps, scheduler=sched, callbacks=cbs, run=run, series=series, desc=series)
    return {"state": state.raw_model.state_dict(), "train_cpu_s": time.process_time() - t0, "loss": state.loss}


def train_decoder(cfg: GIOROMRecipeConfig, run: Run, splits: ParticleSplits, idx: list[torch.Tensor]) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    dec = build_decoder(cfg.decoder, splits.metadata["bounds"])
    params = list(dec.parameters())
    if not params or cfg.decoder_steps == 0:
        return {"state": dec.state_dict(), "train_cpu_s": 0.0}
    g = torch.Generator().manual_seed(cfg.seed)
    data = DecoderBatches(len(splits.train), splits.train[0].n_frames, batches_per_epoch=cfg.decoder_steps, seed=cfg.seed)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, exponential_lr(cfg.decoder_steps, cfg.lr, cfg.lr_final))
    t0 = time.process_time()
    fit(dec, data, opt, step_fn=lambda m, b: decoder_loss(m, b, trajectories=splits.train, sparse_index=idx, generator=g),
        steps=cfg.decoder_steps, scheduler=sched, run=run, series="decoder", desc="decoder")
    return {"state": dec.state_dict(), "train_cpu_s": time.process_time() - t0}


def render(run: Run, keep: dict[str, torch.Tensor], bounds: list[list[float]], W: int) -> None:
    import matplotlib.pyplot as plt

    T = keep["truth"].shape[0]
    frames = sorted({W, W + (T - W) // 4, W + (T - W) // 2, W + 3 * (T - W) // 4, T - 1})
    names = (("truth", "ground truth"), ("giorom", "GIOROM (sparse stepper + dense decoder)"), ("gns", "GNS (full cloud)"))
    fig, axes = plt.subplots(3, len(frames), figsize=(2.6 * len(frames), 7.8), squeeze=False)
    for r, (k, label) in enumerate(names):
        for c, t in enumerate(frames):
            ax = axes[r][c]
            p = keep[k][t]
            ax.scatter(p[:, 0], p[:, 1], s=0.6, c="tab:blue" if r == 0 else ("tab:green" if r == 1 else "tab:orange"))
            if r == 1:
                s = keep["giorom"][t, keep["sparse_index"]]
                ax.scatter(s[:, 0], s[:, 1], s=0.6, c="k")
            ax.set_xlim(*bounds[0])
            ax.set_ylim(*bounds[1])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label.split(' (')[0]} t={t}", fontsize=8)
    run.save_figure(fig, "rollout", caption="Test rollout of the full cloud: ground truth, GIOROM's decoded cloud "
                    "(black: its sparse stepper particles), GNS. Seeded with the first W+1 true frames.")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k, label in names[1:]:
        err = ((keep[k] - keep["truth"]) ** 2).sum(-1).mean(-1)
        ax.plot(range(W + 1, T), err[W + 1:], label=label)
    ax.set_xlabel("frame")
    ax.set_ylabel("MSE (sum over dims)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    run.save_figure(fig, "rollout_error", caption="Full-cloud rollout error per frame on the first test trajectory.")


@recipe(
    "giorom",
    config=GIOROMRecipeConfig,
    presets={
        "smoke": {"n_particles": 150, "n_frames": 14, "n_train": 2, "n_valid": 1, "n_test": 1, "mpm_grid": 32,
                  "hidden": 16, "latent_grid": 8, "fno_modes": 3, "fno_width": 8, "gns_blocks": 1, "steps": 8,
                  "batch_size": 1, "decoder_steps": 5, "eval_every": 4, "timing_repeats": 1, "gns_sparse": True},
        "quick": {"n_particles": 1000, "n_frames": 100, "n_train": 6, "n_valid": 1, "n_test": 1, "hidden": 64,
                  "latent_grid": 16, "fno_modes": 8, "gns_blocks": 3, "steps": 300, "batch_size": 1,
                  "decoder_steps": 300, "eval_every": 100, "timing_repeats": 3},
        "paper": {"latent_grid": 32, "hidden": 128, "gns_blocks": 10, "steps": 50_000, "gns_sparse": True},
    },
    help="GIOROM (reduced-order neural operator on ~20% of the particles + dense decoder) vs GNS on MPM water",
    headline=("rollout_mse/giorom", "rollout_mse/gns", "speedup/gns_over_giorom", "chamfer/giorom", "step_ms/giorom",
              "step_ms/gns"),
)
def run(cfg: GIOROMRecipeConfig, run: Run) -> dict[str, Any]:
    splits = run.cached("data", lambda: load_data(cfg))

    def sparse() -> dict[str, Any]:
        everything = splits.train + splits.valid + splits.test
        idx = [sample_points(t.position[0], frac=cfg.frac, method=cfg.sampler, seed=cfg.seed + i)
               for i, t in enumerate(everything)]
        n_tr = len(splits.train)
        radius = default_radius([subset(t, i) for t, i in zip(splits.train, idx[:n_tr])], factor=cfg.radius_factor)
        return {"idx": idx, "radius": radius}

    sp = run.cached("sparse", sparse)
    n_tr, n_va = len(splits.train), len(splits.valid)
    idx_tr, idx_va, idx_te = sp["idx"][:n_tr], sp["idx"][n_tr:n_tr + n_va], sp["idx"][n_tr + n_va:]
    gio, gns = build_models(cfg, splits.metadata, sp["radius"])
    sub = lambda ts, ii: [subset(t, i) for t, i in zip(ts, ii)]  # noqa: E731
    res_g = run.cached("giorom", lambda: train_stepper(cfg, run, gio, sub(splits.train, idx_tr), sub(splits.valid, idx_va), "giorom"))
    res_n = run.cached("gns", lambda: train_stepper(cfg, run, gns, splits.train, splits.valid, "gns"))
    res_d = run.cached("decoder", lambda: train_decoder(cfg, run, splits, idx_tr))
    extra = {}
    if cfg.gns_sparse:
        torch.manual_seed(cfg.seed)
        gs = GNS(ParticleStats.from_metadata(splits.metadata, noise_std=gio.noise_std, radius=sp["radius"]),
                 GNSConfig(window=cfg.window, hidden=cfg.hidden, blocks=cfg.gns_blocks))
        res_s = run.cached("gns_sparse", lambda: train_stepper(cfg, run, gs, sub(splits.train, idx_tr),
                                                               sub(splits.valid, idx_va), "gns_sparse"))
        gs.load_state_dict(res_s["state"])
        extra["gns_sparse_idw"] = (gs, build_decoder("idw", splits.metadata["bounds"]))
    gio.load_state_dict(res_g["state"])
    gns.load_state_dict(res_n["state"])
    dec = build_decoder(cfg.decoder, splits.metadata["bounds"])
    dec.load_state_dict(res_d["state"])
    ev = run.cached("evaluate", lambda: compare_rollouts(gio, gns, dec, splits.test, idx_te,
                                                         timing_repeats=cfg.timing_repeats, extra=extra,
                                                         clamp_to_bounds=cfg.clamp_to_bounds))
    rows = ev["rows"]
    summary: dict[str, Any] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "trajectory"}
    tg, tn = ev["timing"]["giorom"], ev["timing"]["gns"]
    summary.update({
        "step_ms/giorom": 1e3 * tg["total"], "step_ms/giorom_stepper": 1e3 * tg["stepper"],
        "step_ms/giorom_decode": 1e3 * tg["decode"], "step_ms/gns": 1e3 * tn["total"],
        "graph_ms/giorom": 1e3 * tg["graph"], "graph_ms/gns": 1e3 * tn["graph"],
        "speedup/gns_over_giorom": tn["total"] / tg["total"],
        "error_ratio/giorom_over_gns": summary["rollout_mse/giorom"] / max(summary["rollout_mse/gns"], 1e-30),
        "params/giorom": n_params(gio), "params/gns": n_params(gns), "params/decoder": n_params(dec),
        "train_cpu_s/giorom": res_g["train_cpu_s"], "train_cpu_s/gns": res_n["train_cpu_s"],
        "train_cpu_s/decoder": res_d["train_cpu_s"], "n_particles": splits.test[0].n_particles,
        "n_sparse": int(idx_te[0].numel()), "radius/giorom": sp["radius"],
        "radius/gns": float(splits.metadata["default_connectivity_radius"]), "threads": torch.get_num_threads(),
    })
    run.save_table("test_trajectories", [{k: (round(v, 8) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                   caption="Per test trajectory; rollout MSE over all frames after the W+1 seed frames (sum over dims).")
    run.save_table("timing", [{"model": m, **{k: round(1e3 * v, 3) for k, v in t.items()}} for m, t in ev["timing"].items()],
                   caption=f"Median ms per rollout step at the training resolution ({summary['n_particles']} particles, "
                           f"GIOROM on {summary['n_sparse']}), {torch.get_num_threads()} thread(s), same process.")
    render(run, ev["keep"], splits.metadata["bounds"], cfg.window)
    return summary


__all__ = ["GIOROMRecipeConfig", "build_models", "load_data", "run", "train_decoder", "train_stepper"]
