"""Benchmark: the compare leaderboard at its quick preset (LeNet-5 on digits), 3 seeds, medians.

Every registered compressor on one network, one budget, one measurement path (``sparseforge run compare``).
Prints the table (accuracy, removed fraction, natural sparsity before the projection, params, non-zero params,
effective FLOPs, measured latency and speed-up, eager and deployed) as medians over seeds, and for each method
the highest level whose accuracy stays within 1 point of dense with its measured speed-up there. Target: the
best structured sparseforge method reaches a larger measured speed-up at that criterion than Torch-Pruning's
group-norm pruner on the same model (when the ``[bench]`` extra is installed).

    python benchmarks/compare.py [--seeds 0 1 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from sparseforge.recipes import run_recipe

METRICS = ("acc", "removed", "natural_sparsity", "params", "nonzero_params", "effective_flops", "latency_ms",
           "latency_spread_ms", "speedup", "deploy_speedup")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides")
    a = ap.parse_args()
    t0 = time.perf_counter()
    runs = []
    for seed in a.seeds:
        with tempfile.TemporaryDirectory() as d:
            _, s = run_recipe("compare", preset=a.preset, out=d, seed=seed, overrides=list(a.overrides), report=False)
        runs.append(s)
    keys = sorted({k for s in runs for k in s if k.split("/", 1)[0] in METRICS and k.count("/") == 2})
    table: dict[str, dict[str, dict[str, float]]] = {}
    for k in keys:
        metric, method, level = k.split("/")
        vals = [s[k] for s in runs if isinstance(s.get(k), (int, float))]
        if vals:
            table.setdefault(method, {}).setdefault(level, {})[metric] = statistics.median(vals)
    dense_acc = statistics.median(s["acc/dense"] for s in runs)
    best_level = {}
    for method, levels in table.items():
        ok = [(float(lv), v) for lv, v in levels.items() if v.get("acc", 0) >= dense_acc - 0.01]
        if ok:
            lv, v = max(ok, key=lambda t: t[0])
            best_level[method] = {"level": lv, "speedup": v.get("speedup"), "acc": v.get("acc"),
                                  "deploy_speedup": v.get("deploy_speedup")}
    structured = {m: v for m, v in best_level.items() if m in table and any(
        r.get("removed") is not None for r in table[m].values()) and m != "torch_pruning_groupnorm"
        and (m.endswith(("_filter", "_channel")))}
    best = max(structured.items(), key=lambda kv: (kv[1]["level"], kv[1]["speedup"] or 0)) if structured else None
    tp = best_level.get("torch_pruning_groupnorm")
    skipped = runs[0].get("skipped", {})
    out = {
        "benchmark": "compare",
        "what": "every registered compressor on LeNet-5 / digits: same budget, exact levels, same fine-tune, "
                "compaction and interleaved latency in one process; medians over seeds",
        "preset": a.preset, "seeds": a.seeds, "acc_dense": dense_acc, "table": table,
        "highest_level_within_1pt": best_level,
        "best_structured_sparseforge": best and {"method": best[0], **best[1]},
        "torch_pruning_groupnorm": tp if tp else (skipped.get("torch_pruning_groupnorm") or "below 1 point at every level"),
        "target": {"best_structured_speedup_gt_torch_pruning": None if not (best and tp) else
                   (best[1]["speedup"] or 0) > (tp["speedup"] or 0)},
        "winners_per_level": {k: runs[0][k] for k in runs[0] if k.startswith("winner_")},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
