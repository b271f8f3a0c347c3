"""Benchmark: SST vs full rank, LoRA, ReLoRA*, GaLore (and our hybrid ReLoRA) on the byte-level LM.

Paper: Zhao et al., arXiv:2405.15481 — on OPT-125M at r = 64 the paper's gap reduction
(best of LoRA/ReLoRA* − SST) / (best of LoRA/ReLoRA* − full) is 67.6% (target here >= 50%).
Same seeds, steps, rank and data order for every method; prints ONE JSON object with:

* validation perplexity per method (median over seeds) and the gap reduction, the paper's version
  (over LoRA and ReLoRA*) and over every other low-rank method, both labelled;
* SST with the ICML sampling rule p = (1/k + sigma/sum sigma)/2 beside p ∝ sigma (``sst_mix``);
* memory: trainable parameters and optimizer-state bytes of the converted layers relative to full rank,
  against the paper's Γ = (r(m+n)+k)/(mn), and the peak memory of one training step (batch 16) of full,
  LoRA, GaLore and SST on the recipe's model and on a Hugging Face OPTForCausalLM of the same size;
* training step time relative to full rank (measured side by side in this process).

    python benchmarks/sst_lm.py                  # 2000 steps per method (the gap needs ~2000 at this size)
    python benchmarks/sst_lm.py --steps 600 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time

import torch

from sparseforge.data.text import WindowSampler, eval_windows, load_corpus
from sparseforge.engine import Run
from sparseforge.recipes import RECIPES
from sparseforge.recipes.sst_lm import ABLATIONS, PAPER_BASELINES, measure_step_memory, train_method
from sparseforge.spectral.metrics import gap_reduction

METHODS = ("full", "lora", "relora_star", "relora", "galore", "sst")
MEMORY_METHODS = ("full", "lora", "galore", "sst")


def memory(cfg, corpus) -> dict:
    """Peak bytes of one training step, and SST's relative to LoRA's (the same rank)."""
    batch = next(iter(WindowSampler(corpus.train, cfg.batch_size, cfg.seq_len, seed=0, batches_per_epoch=1)))
    peak = {m: measure_step_memory(cfg, m, batch, seed=0) for m in MEMORY_METHODS}
    ratio = peak["sst"] / peak["lora"] if peak["sst"] and peak["lora"] else None
    return {"peak_bytes": peak, "sst_vs_lora": ratio, "target_within": 0.10,
            "met": ratio is not None and abs(ratio - 1.0) <= 0.10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", nargs="*", default=[], help="extra sst-lm config overrides key=value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-mix", action="store_true", help="skip the ICML sampling-rule run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    rec = RECIPES.get("sst-lm")
    overrides = {"steps": str(args.steps), "eval_every": str(max(1, args.steps // 4)), "measure_memory": "false",
                 "eval_tokens": "16384", "final_eval_tokens": "10000000"}  # final eval: the whole validation stream
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    series = list(METHODS) + ([] if args.no_mix else ["sst_mix"])
    per_seed: dict[str, list[dict]] = {m: [] for m in series}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = rec.build_config("quick", overrides, seed=seed)
            corpus = load_corpus(cfg.corpus, max_bytes=cfg.max_bytes)
            val = eval_windows(corpus.val, cfg.seq_len, max_tokens=cfg.final_eval_tokens)
            run = Run(tmp, write=False)
            for m in series:
                method, variant = ("sst", ABLATIONS["mix"]) if m == "sst_mix" else (m, None)
                per_seed[m].append(train_method(cfg, run, corpus, val, method, m, variant=variant))

    def med(m: str, k: str) -> float:
        return statistics.median(r[k] for r in per_seed[m])

    ppl = {m: med(m, "val_ppl") for m in series}
    n = len(args.seeds)

    def gaps(baselines, sst="sst"):
        each = [gap_reduction(per_seed["full"][i]["val_ppl"], per_seed[sst][i]["val_ppl"],
                              {b: per_seed[b][i]["val_ppl"] for b in baselines}) for i in range(n)]
        return gap_reduction(ppl["full"], ppl[sst], {b: ppl[b] for b in baselines}), each

    others = [m for m in METHODS if m not in ("full", "sst")]
    g_paper, g_paper_seeds = gaps(PAPER_BASELINES)
    g_all, g_all_seeds = gaps(others)
    full_lin = med("full", "linear_optimizer_state_bytes")
    full_step = med("full", "step_time_ms")
    mem = memory(cfg, corpus)
    hf = memory(rec.build_config("quick", {**overrides, "model_type": "hf_opt"}, seed=0), corpus)
    out = {
        "benchmark": "sst_lm",
        "what": "byte-level OPT-style LM trained from scratch; same seeds/steps/rank/data for every method",
        "setting": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "batch_size": cfg.batch_size,
                    "seq_len": cfg.seq_len, "rank": cfg.resolved_rank, "steps": args.steps, "seeds": args.seeds,
                    "lr": {m: cfg.method_lr(m) for m in METHODS}, "full_linear_lr_scale": cfg.full_linear_lr_scale,
                    "sst_T3": cfg.sst_T3, "corpus_train_bytes": int(corpus.train.numel()), "torch_threads": args.threads},
        "val_ppl": {m: round(v, 4) for m, v in ppl.items()},
        "val_ppl_per_seed": {m: [round(r["val_ppl"], 4) for r in per_seed[m]] for m in series},
        "train_ppl_last_batch": {m: round(math.exp(med(m, "final_train_loss")), 3) for m in series},
        "gap_reduction_paper": {"value": g_paper, "per_seed": g_paper_seeds, "baselines": list(PAPER_BASELINES),
                                "paper_opt125m": 0.676, "target": 0.5,
                                "met": g_paper is not None and g_paper >= 0.5},
        "gap_reduction_all_baselines": {"value": g_all, "per_seed": g_all_seeds, "baselines": others,
                                        "note": "relora is our hybrid (0.99 moment pruning); relora_star the paper's "
                                                "full reset; whichever is stronger shows in val_ppl"},
        "gap_reduction_paper_icml_sampling": None if args.no_mix else gaps(PAPER_BASELINES, "sst_mix")[0],
        "gamma": {"analytic": med("sst", "analytic_gamma"),
                  "trainable_measured": med("sst", "linear_trainable_params") / med("full", "linear_trainable_params"),
                  "optimizer_state_measured": med("sst", "linear_optimizer_state_bytes") / full_lin,
                  "lora_analytic": med("lora", "analytic_gamma")},
        "optimizer_state_vs_full_linear_layers": {m: round(med(m, "linear_optimizer_state_bytes") / full_lin, 4)
                                                  for m in METHODS},
        "peak_memory_causal_lm": mem,
        "peak_memory_hf_opt": hf,
        "step_time_vs_full": {m: round(med(m, "step_time_ms") / full_step, 3) for m in series},
        "wall_time_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
