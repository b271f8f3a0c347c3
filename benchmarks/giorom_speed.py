"""Benchmark: GIOROM (sparse stepper + dense decoder) vs GNS on the full cloud, and radius-graph scaling.

Paper: Viswanath et al., arXiv 2407.03925 — ~100,000-point clouds inferred from ~1,000-point sparse
graphs "with negligible change in computation time", 25x faster than GNS-style simulators with
better or comparable accuracy. Prints ONE JSON object with:

1. accuracy at the training resolution (MPM water, ~1k particles, 2-D): both models trained with the
   same steps, batch, optimizer and noise (the recipe's training procedure); one-step MSE, rollout
   MSE over the horizon (GIOROM: its decoded full cloud), Chamfer distance, a constant-velocity
   reference; median over seeds;
2. speed: median time per rollout step of GIOROM (``--sparse`` points, graph + stepper, then the
   dense decoder to N query points) vs GNS on N points, for each N in ``--sizes``, with the radius
   scaled with N so the mean degree stays at the training data's; untrained models (the cost of a
   step does not depend on the weights) at the paper's widths (GNS 10 blocks x 128, GIOROM 128, grid
   32) and at the trained widths; measured side by side in this process;
3. ``radius_graph`` time and peak tensor memory at ``--radius-sizes`` points.

    python benchmarks/giorom_speed.py                 # ~15-20 min on the shared 2-core machine
    python benchmarks/giorom_speed.py --steps 200 --sizes 10000 30000 --radius-sizes 100000   # faster
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time

import torch

from sparseforge.engine import Run
from sparseforge.graph import fps, radius_graph
from sparseforge.operators import GIOROM, GNS, GIOROMConfig, GNSConfig, ParticleStats, SplatDecoder, median_time
from sparseforge.recipes import RECIPES
from sparseforge.spectral.memory import PeakMemory

BOUNDS = [[0.046875, 0.953125], [0.046875, 0.953125]]


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the JSON)."""
    print(f"[giorom_speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def accuracy(args: argparse.Namespace) -> dict:
    from sparseforge.recipes.giorom import run as giorom_run

    rec = RECIPES.get("giorom")
    per_seed = []
    for seed in args.seeds:
        log(f"accuracy: training both models, seed {seed}, {args.steps} steps each")
        over = {"steps": str(args.steps), "decoder_steps": str(max(100, args.steps // 2)), "eval_every": str(args.steps),
                "timing_repeats": "3", "n_train": str(args.n_train)}
        cfg = rec.build_config("quick", over, seed=seed, threads=args.accuracy_threads)
        torch.set_num_threads(args.accuracy_threads)  # tiny models thrash with more threads on a busy machine
        with tempfile.TemporaryDirectory() as tmp:
            s = giorom_run(cfg, Run(tmp, write=True))
        per_seed.append(s)
    keys = ["rollout_mse/giorom", "rollout_mse/gns", "rollout_mse/giorom_sparse", "rollout_mse/const_vel",
            "one_step_mse/giorom", "one_step_mse/gns", "chamfer/giorom", "chamfer/gns", "rel_l2/giorom", "rel_l2/gns",
            "rel_l2/decoder_only", "step_ms/giorom", "step_ms/gns", "speedup/gns_over_giorom",
            "train_cpu_s/giorom", "train_cpu_s/gns"]
    med = {k: statistics.median(s[k] for s in per_seed) for k in keys}
    med["error_ratio/giorom_over_gns"] = med["rollout_mse/giorom"] / med["rollout_mse/gns"]  # ratio of medians
    med["error_ratio_median_of_seeds"] = statistics.median(s["rollout_mse/giorom"] / s["rollout_mse/gns"] for s in per_seed)
    cfg = rec.build_config("quick", {"steps": str(args.steps)})
    return {"setting": {"material": cfg.material, "n_particles": cfg.n_particles, "n_frames": cfg.n_frames,
                        "n_train": args.n_train, "n_test": cfg.n_test, "frac": cfg.frac, "hidden": cfg.hidden,
                        "gns_blocks": cfg.gns_blocks, "latent_grid": cfg.latent_grid, "steps": args.steps,
                        "batch_size": cfg.batch_size, "seeds": args.seeds},
            "median": med, "per_seed": [{k: s[k] for k in keys} for s in per_seed],
            "sparse_radius_ref": per_seed[0]["radius/giorom"], "gns_radius_ref": per_seed[0]["radius/gns"]}


def timed(fn, *, repeats: int, warmup: int = 1) -> tuple[float, float]:  # noqa: ANN001
    """(median, min) seconds of fn() (the min is robust to other processes on a shared CPU)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def cloud(n: int, seed: int) -> torch.Tensor:
    """n points on a jittered lattice in the box [0.1, 0.9] x [0.05, 0.55] (a settled water body)."""
    g = torch.Generator().manual_seed(seed)
    area = 0.8 * 0.5
    a = math.sqrt(area / (n * 1.02))
    xs = torch.arange(0.1 + a / 2, 0.9, a)
    ys = torch.arange(0.05 + a / 2, 0.55, a)
    p = torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    p = p[torch.randperm(p.shape[0], generator=g)[:n]]
    return p + (torch.rand(p.shape, generator=g) - 0.5) * 0.5 * a


def radius_for_degree(n: int, degree: float, area: float = 0.4) -> float:
    return math.sqrt(degree * area / (math.pi * n))


def stats(radius: float) -> ParticleStats:
    return ParticleStats(bounds=BOUNDS, radius=radius, vel_mean=[0.0, 0.0], vel_std=[2e-3, 2e-3],
                         acc_mean=[0.0, -1e-5], acc_std=[2e-4, 2e-4], noise_std=3e-4)


@torch.no_grad()
def speed_at(N: int, gio: GIOROM, args: argparse.Namespace, widths: dict, degree: float) -> dict:
    """One row of the speed table: GIOROM (sparse stepper + decode to N) vs GNS on N points."""
    W, n = 5, args.sparse
    log(f"speed: N = {N}, widths {widths}")
    X = cloud(N, seed=N)
    win = X[:, None, :] + 1e-3 * torch.arange(W + 1).view(1, -1, 1)  # (N, W + 1, 2): a uniform drift
    typ = torch.full((N,), 5)
    si = fps(X, n)
    ws, ts = win[si], typ[si]
    dec = SplatDecoder(BOUNDS).eval()
    t0 = time.perf_counter()
    plan = dec.prepare(X[si], X)
    prep = time.perf_counter() - t0
    nxt = gio.predict_positions(ws, ts)
    t_step, m_step = timed(lambda: gio.predict_positions(ws, ts), repeats=max(7, args.repeats), warmup=2)
    t_dec, m_dec = timed(lambda: dec(plan, nxt), repeats=max(7, args.repeats), warmup=2)
    r = radius_for_degree(N, degree)
    gns = GNS(stats(r), GNSConfig(hidden=widths["hidden"], blocks=widths["gns_blocks"])).eval()
    t_graph = median_time(lambda: gns.graph(win[:, -1]), repeats=args.repeats)
    e = gns.graph(win[:, -1])
    reps = args.repeats if N <= 30_000 else args.repeats_large
    t_gns, m_gns = timed(lambda: gns.predict_positions(win, typ), repeats=max(1, reps))
    return {"N": N, "n_sparse": n, "gns_radius": r, "gns_mean_degree": e.shape[1] / N,
            "giorom_sparse_mean_degree": gio.graph(ws[:, -1]).shape[1] / n,
            "giorom_step_ms": 1e3 * t_step, "giorom_decode_ms": 1e3 * t_dec,
            "giorom_total_ms": 1e3 * (t_step + t_dec), "giorom_decoder_prepare_ms": 1e3 * prep,
            "decoder_grid": plan.grid_size, "gns_step_ms": 1e3 * t_gns, "gns_graph_ms": 1e3 * t_graph,
            "speedup": t_gns / (t_step + t_dec), "speedup_without_gns_graph": (t_gns - t_graph) / (t_step + t_dec),
            "giorom_total_ms_min": 1e3 * (m_step + m_dec), "gns_step_ms_min": 1e3 * m_gns,
            "speedup_of_mins": m_gns / (m_step + m_dec)}


def speed(args: argparse.Namespace, widths: dict, degree: float, sparse_degree: float) -> dict:
    torch.manual_seed(0)
    gio = GIOROM(stats(radius_for_degree(args.sparse, sparse_degree)),
                 GIOROMConfig(hidden=widths["hidden"], grid=widths["grid"])).eval()
    rows = [speed_at(N, gio, args, widths, degree) for N in args.sizes]
    first, last = rows[0], rows[-1]
    return {"widths": widths, "rows": rows,
            "giorom_time_ratio_largest_over_smallest_N": last["giorom_total_ms"] / first["giorom_total_ms"],
            "giorom_time_ratio_of_mins": last["giorom_total_ms_min"] / first["giorom_total_ms_min"],
            "gns_time_ratio_largest_over_smallest_N": last["gns_step_ms"] / first["gns_step_ms"],
            "speedup_at_largest_N": last["speedup"], "largest_N": last["N"]}


def radius_at(N: int, degree: float) -> dict:
    log(f"radius_graph: N = {N}")
    X = cloud(N, seed=1)
    r = radius_for_degree(N, degree)
    big = N >= 1_000_000
    t = median_time(lambda: radius_graph(X, r), repeats=1 if big else 3, warmup=0 if big else 1)
    with PeakMemory(baseline_tensors=[X]) as pm:
        e = radius_graph(X, r)
    out_bytes = int(e.numel() * e.element_size())
    return {"N": N, "radius": r, "edges": int(e.shape[1]), "mean_degree": e.shape[1] / N, "time_s": t,
            "peak_tensor_bytes": pm.peak_bytes, "edge_index_bytes": out_bytes,
            "peak_over_output": pm.peak_bytes / max(1, out_bytes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="threads of the speed part (2 thrash on a busy 2-core machine)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per model (accuracy part)")
    ap.add_argument("--accuracy-threads", type=int, default=1, help="threads of the accuracy part (1k-particle models)")
    ap.add_argument("--n-train", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--sparse", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-large", type=int, default=2, help="timing repeats of GNS above 30k points")
    ap.add_argument("--radius-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    acc = None if args.skip_accuracy else accuracy(args)
    torch.set_num_threads(args.threads)
    # mean degrees of the training data's graphs (full cloud for GNS, sparse set for GIOROM)
    degree, sparse_degree = 13.0, 14.0
    if acc is not None:
        from sparseforge.recipes.giorom import load_data

        cfg = RECIPES.get("giorom").build_config("quick", {"n_train": str(args.n_train)}, seed=args.seeds[0])
        s = load_data(cfg)
        x0 = s.train[0].position[0]
        degree = radius_graph(x0, s.metadata["default_connectivity_radius"], loop=True).shape[1] / x0.shape[0]
        si = fps(x0, math.ceil(cfg.frac * x0.shape[0]))
        sparse_degree = radius_graph(x0[si], acc["sparse_radius_ref"], loop=True).shape[1] / si.numel()
    paper = speed(args, {"hidden": 128, "gns_blocks": 10, "grid": 32}, degree, sparse_degree)
    q = RECIPES.get("giorom").build_config("quick")
    trained = speed(args, {"hidden": q.hidden, "gns_blocks": q.gns_blocks, "grid": q.latent_grid}, degree, sparse_degree)
    rad = [radius_at(N, degree) for N in args.radius_sizes]
    err_ok = None if acc is None else acc["median"]["error_ratio/giorom_over_gns"] <= 2.0
    out = {
        "benchmark": "giorom_speed",
        "what": "GIOROM (sparse stepper on ~1k points + splat dense decoder to N) vs GNS on N points; MPM water 2-D",
        "device": "cpu", "torch_threads": args.threads, "accuracy_threads": args.accuracy_threads,
        "mean_degree": {"gns": degree, "giorom_sparse": sparse_degree},
        "accuracy": acc,
        "speed_paper_widths": paper,
        "speed_trained_widths": trained,
        "radius_graph": rad,
        "targets": {
            "speedup_ge_25x_at_largest_N": {"value": paper["speedup_at_largest_N"], "N": paper["largest_N"],
                                            "met": paper["speedup_at_largest_N"] >= 25},
            "rollout_error_within_2x_of_gns": {"value": None if acc is None else acc["median"]["error_ratio/giorom_over_gns"],
                                               "met": err_ok},
            "giorom_time_le_2x_from_1e4_to_1e5": {"value": paper["giorom_time_ratio_largest_over_smallest_N"],
                                                  "met": paper["giorom_time_ratio_largest_over_smallest_N"] <= 2.0},
        },
        "wall_time_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
