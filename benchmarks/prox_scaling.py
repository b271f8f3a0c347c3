# ruff: noqa: B023  (lambdas are called inside the loop that defines them)
"""Benchmark: cost of the WGSEF prox vs. group lasso as the number of groups m grows.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
arXiv:2212.12921, claim 3 (spec ``shared/methods/wgsef.md`` §5(e), "Benchmark definitions").

Two levels, float32 on CPU, median over repeats after a warm-up, side by side in one process:

* ``vector``: ``sef_prox(x, k, γ)`` on a 1-D x of length m, by ``method="select"`` and
  ``method="sort"``, and the group-lasso prox of the same x (singleton groups = soft threshold).
* ``tensor``: the tensor-level step ``GroupEnvelope.prox_`` (exact, select) vs ``GroupLasso.prox_``
  on a weight (m, 1, 3, 3) with ``grouping="filter"`` (m groups of 9 entries). Both pay for group
  norms and the lift; the envelope adds its scalar selection.

Reports the fitted log-log slope of each method over m (target for select ≤ 1.1) and the ratio
envelope/select ÷ group lasso at m = 1e6 (target ≤ 3x). Prints ONE JSON object.

    python benchmarks/prox_scaling.py [--max-m 1e7] [--min-m 1e3] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch


def _median_time(fn, repeats: int, budget_s: float = 20.0) -> float:
    fn()  # warm-up
    times = []
    t_start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s and len(times) >= 2:
            break
    return statistics.median(times)


def _slope(ms: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(ms), np.log(ts), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-m", type=float, default=1e3)
    ap.add_argument("--max-m", type=float, default=1e7, help="largest m (lower it to save time/memory)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = stable on a shared CPU)")
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of groups kept (k = keep * m)")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--tensor-max-m", type=float, default=None, help="largest m for the tensor level (default: max-m)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sparseforge.prox import GroupEnvelope, GroupLasso, sef_prox

    exps = np.arange(math.log10(args.min_m), math.log10(args.max_m) + 1e-9, 0.5)
    ms = [int(round(10**e)) for e in exps]
    g = torch.Generator().manual_seed(0)
    vec: dict[str, list[float]] = {"select": [], "sort": [], "group_lasso": []}
    ten: dict[str, list[float]] = {"envelope_select": [], "envelope_sort": [], "group_lasso": []}
    tmax = args.tensor_max_m or args.max_m
    ms_t = [m for m in ms if m <= tmax]
    for m in ms:
        k = max(1, int(args.keep * m))
        reps = args.repeats if m < 3e6 else max(2, args.repeats // 2)
        x = torch.randn(m, generator=g)
        vec["select"].append(_median_time(lambda: sef_prox(x, k, args.gamma, method="select"), reps))
        vec["sort"].append(_median_time(lambda: sef_prox(x, k, args.gamma, method="sort"), reps))
        gl = GroupLasso("element", 1.0)
        vec["group_lasso"].append(_median_time(lambda: gl.prox_(x.clone(), args.gamma), reps))
        if m in ms_t:
            w0 = torch.randn(m, 1, 3, 3, generator=g)
            w = w0.clone()
            ops = {
                "envelope_select": GroupEnvelope(k, "filter", 1.0, exact=True, method="select"),
                "envelope_sort": GroupEnvelope(k, "filter", 1.0, exact=True, method="sort"),
                "group_lasso": GroupLasso("filter", 1.0),
            }
            for name, op in ops.items():
                # γ small enough that the input is not already k-sparse after one call; restore each time
                ten[name].append(_median_time(lambda: (w.copy_(w0), op.prox_(w, 0.05)), reps))
            del w0, w
    i6 = ms.index(10**6) if 10**6 in ms else None
    it6 = ms_t.index(10**6) if 10**6 in ms_t else None
    out = {
        "benchmark": "prox_scaling",
        "what": "median seconds of one prox call vs number of groups m (float32, CPU)",
        "threads": args.threads,
        "keep_fraction": args.keep,
        "m": ms,
        "vector": {
            "median_s": vec,
            "loglog_slope": {k: _slope(ms, v) for k, v in vec.items()},
            "ratio_select_over_group_lasso_at_1e6": (vec["select"][i6] / vec["group_lasso"][i6]) if i6 is not None else None,
        },
        "tensor": {
            "m": ms_t,
            "group_size": 9,
            "median_s": ten,
            "loglog_slope": {k: _slope(ms_t, v) for k, v in ten.items()} if len(ms_t) > 1 else None,
            "ratio_envelope_select_over_group_lasso_at_1e6": (
                ten["envelope_select"][it6] / ten["group_lasso"][it6]) if it6 is not None else None,
        },
        "targets": {"select_slope_max": 1.1, "ratio_at_1e6_max": 3.0},
    }
    out["select_slope"] = out["vector"]["loglog_slope"]["select"]
    out["ratio_at_1e6"] = out["tensor"]["ratio_envelope_select_over_group_lasso_at_1e6"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
