"""Benchmark (slow): grokking-ticket ablations at the paper's regime (MLP 500/48, p = 67, 40% train, wd 1).

Paper: Minegishi, Iwasawa & Matsuo, arXiv 2310.19470. Each experiment is the ``grokking-tickets`` recipe at its
``paper`` preset in its own process (one thread, two at a time), seed 1 by default:

* ``nowd``: without weight decay, as a controlled experiment: tickets at several k, a dense network and random
  masks at the same k, all at wd 0 for the full budget (no cap, no early stop); final test accuracy and
  t_gen@95/99. The paper: at the critical rate (k = 0.81) a ticket generalises without weight decay.
* ``pai``: SynFlow as the paper runs it (100 rounds, data-free) beside the authors' code (one round on the real
  batch), scored at initialisation; and SNIP / SynFlow scored on the trained network (``pai_score_at=final``).
* ``timing``: the pruning time: masks taken at t_mem, the transition (test 0.33), t_gen, 1.5x and 2x t_gen.
  The paper: tickets taken before generalisation do not accelerate.

    python benchmarks/grokking_ablations.py [--seed 1] [--nowd-steps 10000] [--processes 2] [--only nowd,timing]
"""

from __future__ import annotations

import argparse
import json
import time

from _parallel import run_recipes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nowd-rates", default="0.6,0.7,0.75,0.81,0.85")
    ap.add_argument("--nowd-steps", type=int, default=10000, help="the full budget of every wd-0 run")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--only", default="nowd,pai_init,pai_final,timing",
                    help="comma-separated experiments to run (each is about 20-60 minutes at one thread)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    s = f"seeds={a.seed}"
    cap = ["early_stop=true", "early_stop_at=0.99", "budget_rel=3"]
    jobs = [
        ("nowd", "grokking-tickets", [s, "variants=dense,nowd", "ticket_source=converged", f"nowd_rates={a.nowd_rates}",
                                      f"ticket_steps={a.nowd_steps}"]),
        ("pai_init", "grokking-tickets", [s, "variants=dense,ticket,synflow,synflow_repo,snip", "ticket_source=converged",
                                          *cap]),
        ("pai_final", "grokking-tickets", [s, "variants=dense,snip,synflow", "ticket_source=converged",
                                           "pai_score_at=final", *cap]),
        ("timing", "grokking-tickets", [s, "variants=dense,timing", "ticket_source=final", "checkpoint_every=500", *cap]),
    ]
    only = set(a.only.split(","))
    unknown = only - {tag for tag, _, _ in jobs}
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(sorted(unknown))}; choose from nowd, pai_init, pai_final, timing")
    res = run_recipes([j for j in jobs if j[0] in only], processes=a.processes)
    res = {tag: res.get(tag, {"error": "not run (--only)"}) for tag, _, _ in jobs}
    keys = ("t_gen", "t_gen99", "t_mem", "final_test_acc", "cap", "reached", "capped", "steps_run", "source_step")

    def table(r):
        if "error" in r:
            return r
        names = sorted({k.split("/", 1)[1] for k in r if k.startswith("t_gen/")})
        return {v: {k: r.get(f"{k}/{v}") for k in keys} for v in names}

    out = {"benchmark": "grokking_ablations", "seed": a.seed,
           "setting": "paper preset: MLP 500/48, p = 67, 40% train, lr 1e-3, wd 1 (wd 0 in nowd), k = 0.6",
           "nowd": {"rates": a.nowd_rates, "full_budget_steps": a.nowd_steps, "table": table(res["nowd"]),
                    "note": "every wd-0 run trains the full budget; none is capped or stopped early"},
           "pai_score_at_init": table(res["pai_init"]),
           "pai_score_at_final": table(res["pai_final"]),
           "timing": {"table": table(res["timing"]), "skipped": res["timing"].get("skipped", {}),
                      "note": "source_step per variant: the dense step each mask was taken at"},
           "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
