"""Benchmark: WGSEF on LeNet-5 / digits — accuracy drop at >= 50% filters removed, compacted speed-up.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921, claims 1, 2 and 4 (spec ``shared/methods/wgsef.md`` §5 (a), (b), (d)).
Runs the ``wgsef`` recipe (default: ``quick`` preset) for each seed and prints ONE JSON object
with the dense vs WGSEF accuracy (target drop <= 1 point), the fraction of filters removed,
and the measured CPU latency of the dense vs the compacted model (median, interleaved).

    python benchmarks/wgsef_lenet.py [--preset quick] [--seeds 0] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from sparseforge.recipes import run_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", nargs="*", default=[], dest="overrides")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            _, s = run_recipe("wgsef", preset=args.preset, overrides=list(args.overrides), out=d, seed=seed, report=False)
        runs.append({"seed": seed, "wall_s": round(time.perf_counter() - t0, 2), **{k: s.get(k) for k in (
            "dense_acc", "wgsef_acc", "acc_drop", "filters_removed_frac", "k_level_reached_before_projection",
            "layers_exactly_k_before_projection", "params_dense", "params_compact", "flops_reduction",
            "latency_ms_dense", "latency_ms_compact", "latency_speedup", "latency_batch", "group_lasso_acc")}})
    drop = statistics.mean(r["acc_drop"] for r in runs)
    out = {
        "benchmark": "wgsef_lenet",
        "what": "LeNet-5 on sklearn digits: dense vs WGSEF (exact, filter groups, 50% target) after compaction",
        "preset": args.preset,
        "seeds": args.seeds,
        "acc_drop_points_mean": drop,
        "filters_removed_frac_mean": statistics.mean(r["filters_removed_frac"] or 0 for r in runs),
        "latency_speedup_median": statistics.median(r["latency_speedup"] for r in runs),
        "target": {"acc_drop_max_points": 1.0, "filters_removed_min": 0.5},
        "target_met": drop <= 1.0 and all((r["filters_removed_frac"] or 0) >= 0.5 - 1e-9 for r in runs),
        "runs": runs,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
