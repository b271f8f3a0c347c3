"""Benchmark: do grokking tickets generalise faster than dense (and than the controls)? What does a mask cost?

Paper: Minegishi, Iwasawa & Matsuo, "Grokking Tickets: Lottery Tickets Accelerate Grokking"
(arXiv 2310.19470) reports about 4x faster generalisation of the k = 0.6 ticket for the MLP.

Prints ONE JSON object:
- ``t_gen``: per variant, the per-seed t_gen (first eval step with test accuracy >= 0.95; null = not
  reached within the budget) and the median over seeds; variants dense, ticket, dense_l1, dense_l2,
  random, snip, grasp, synflow;
- ``ratio_dense_over_ticket``: median dense t_gen / median ticket t_gen (target >= 2; paper ~4);
- ``step_time``: wall-clock seconds per full-batch AdamW step of masked (k = 0.6) vs dense training
  of the same model, measured side by side (interleaved blocks, median over blocks), and their ratio
  (target <= 1.2); masked with :func:`sparseforge.masks.attach` (what the recipe uses).

Setting: the recipe's ``quick`` size (d_emb 128, 50% train, lr 3e-3, wd 1, p = 67), one thread.
Usage: ``python benchmarks/grokking_speedup.py [--seeds 1,2,3] [--variants ...] [--budget-rel 1.25]``.
Default runtime ~3-5 min on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def _median(xs: list[int | None]) -> float | None:
    v = sorted(float("inf") if x is None else float(x) for x in xs)
    m = statistics.median(v) if v else float("inf")
    return None if m == float("inf") else m


def step_time(cfg, seed: int, *, blocks: int, steps_per_block: int) -> dict[str, float]:
    from sparseforge.data import modular_arithmetic
    from sparseforge.masks import attach
    from sparseforge.models.grokking import float64_cross_entropy
    from sparseforge.pruning import prunable_params, ticket_mask
    from sparseforge.recipes.grokking_tickets import build_model

    md = modular_arithmetic(cfg.p, cfg.op, cfg.frac_train, seed)
    x, y = md.train_pairs, md.train_labels
    torch.manual_seed(seed)
    dense = build_model(cfg, md.num_classes)
    masked = build_model(cfg, md.num_classes)  # sparseforge.masks.attach (what the recipe uses)
    masked.load_state_dict(dense.state_dict())
    names = list(prunable_params(masked))
    masks = ticket_mask(masked, cfg.pruning_rate, names=names)

    def opt_for(m):
        return torch.optim.AdamW(m.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    od, om = opt_for(dense), opt_for(masked)
    ms = attach(masked, masks, optimizer=om)

    def block(m, opt) -> float:
        t0 = time.perf_counter()
        for _ in range(steps_per_block):
            loss = float64_cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / steps_per_block

    runs = [("dense", dense, od), ("masked", masked, om)]
    for _, m, o in runs:
        block(m, o)  # warm-up
    times: dict[str, list[float]] = {k: [] for k, _, _ in runs}
    for i in range(blocks):  # interleaved, rotating order so machine drift hits all alike
        for k, m, o in runs[i % 2:] + runs[: i % 2]:
            times[k].append(block(m, o))
    zeros = all(bool((p.detach()[~masks[n]] == 0).all()) for n, p in masked.named_parameters())
    ms.detach()
    d, m = (statistics.median(times[k]) for k in ("dense", "masked"))
    return {"dense_s_per_step": d, "masked_s_per_step": m, "ratio_masked_over_dense": m / d,
            "blocks": blocks, "steps_per_block": steps_per_block, "masked_weights_stayed_zero": zeros}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--variants", default="dense,ticket,dense_l1,dense_l2,random,snip,grasp,synflow")
    ap.add_argument("--budget-rel", type=float, default=1.25,
                    help="cap non-dense runs at this multiple of the dense t_gen (not reached = null)")
    ap.add_argument("--synflow-rounds", type=int, default=100)
    ap.add_argument("--timing-blocks", type=int, default=10)
    ap.add_argument("--timing-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    from sparseforge.recipes.grokking_tickets import GrokkingTicketsConfig, run_seed

    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    cfg = GrokkingTicketsConfig(d_emb=128, frac_train=0.5, lr=3e-3, steps=4000, ticket_steps=4000, eval_every=10,
                                early_stop=True, checkpoint_every=100, ticket_source="post_gen",
                                budget_rel=a.budget_rel, variants=a.variants, synflow_rounds=a.synflow_rounds)
    t0 = time.perf_counter()
    per: dict[str, list] = {}
    extra: dict[str, list] = {"norm_ratio_l1": [], "norm_ratio_l2": [], "ticket_source_step": []}
    for s in seeds:
        out = run_seed(cfg, s, None)
        for v, r in out["variants"].items():
            per.setdefault(v, []).append(r["t_gen"])
        extra["ticket_source_step"].append(out["ticket_source_step"])
        for v in ("dense_l1", "dense_l2"):
            if v in out["variants"]:
                extra[f"norm_ratio_{v[-2:]}"].append(round(out["variants"][v]["norm_ratio"], 4))
    train_s = time.perf_counter() - t0
    med = {v: _median(ts) for v, ts in per.items()}
    d, t = med.get("dense"), med.get("ticket")
    res = {
        "benchmark": "grokking_speedup",
        "setting": {"p": cfg.p, "op": cfg.op, "frac_train": cfg.frac_train, "model": "mlp", "d_emb": cfg.d_emb,
                    "d_hidden": cfg.d_hidden, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                    "pruning_rate": cfg.pruning_rate, "threshold": cfg.threshold, "eval_every": cfg.eval_every,
                    "budget_rel": a.budget_rel, "seeds": seeds, "threads": a.threads},
        "t_gen": {v: {"per_seed": per[v], "median": med[v]} for v in per},
        "ratio_dense_over_ticket": (d / t) if (d is not None and t) else None,
        "target_ratio": 2.0,
        "paper_ratio": 4.0,
        **extra,
        "step_time": step_time(cfg, seeds[0], blocks=a.timing_blocks, steps_per_block=a.timing_steps),
        "target_step_time_ratio": 1.2,
        "train_wall_s": round(train_s, 1),
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
