"""Benchmark: Sparsey single-trial learning on digits, recall, familiarity, sequence capacity.

Paper: Rinkus & Leveille, arXiv 1710.07829. Published reference (sparsey.com, not the paper):
MNIST, 2-level model, one pass over 200 images per class, 91% test accuracy, 220 s on one thread.
Prints ONE JSON object. Measured with the ``sparsey`` recipe's digits model (edge input, level 1 of
12x12 macs with 5x5 RFs, Q=16, K=10, band 0.08-0.3, freeze 0.2, V*=0.9, fewest-links tie order,
plus a top mac Q=4, K=64, lambda_U=10 over all of level 1), one pass over 1,000 digits, 797 test:

- test accuracy of every read-out on level-1 codes vs 1-NN / 3-NN on raw binary pixels (medians
  over ``--seeds``); learning time of one pass on one thread, for the whole model, for level 1 alone,
  and for level 1 with the settings before the fixes (sampled ties, priority order, band 0.1-0.3),
  all side by side in this process (ratios), and per item for the first vs the last 100 items;
  recognition throughput (codes per second at batch 1 and 256);
- recall of learned codes just after learning and at the end (over items stored with G < 1), and
  the same for level 1 with the settings before the fixes;
  the new-user check (default ``SparseyConfig``: learn one item, present it at once) on random
  sparse 16x16 patterns and binarised digits, before and after the tie-break fix;
- top-mac familiarity of stored vs novel vs random images (ROC AUC);
- the sequence capacity curve (recall vs stored sequences of 6 random sparse frames), before and
  after the fixes, for both tie orders and for twice the cells per CM.

Usage: ``python benchmarks/sparsey.py [--seeds 0 1 2 3 4] [--threads 1] [--timing-only]`` (about 3.5
minutes on the shared 2-core machine; ``--timing-only`` about 40 s).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace

import torch

from sparseforge.recipes.sparsey import BEFORE_FIX, SparseyRecipeConfig, image_model
from sparseforge.sdr import Sparsey, SparseyConfig
from sparseforge.sdr import evaluate as E
from sparseforge.sdr.preprocess import digits_binary, digits_edges
from sparseforge.sdr.readout import pixel_knn_accuracy

CAPACITY = {"before": BEFORE_FIX, "priority": {"tie_order": "priority"}, "default": {}, "K16": {"K": 16}}


def _learn_time(net: Sparsey, x: torch.Tensor) -> tuple[float, list[float]]:
    per = []
    for i in range(len(x)):  # one presentation per item
        t = time.perf_counter()
        net.learn(x[i : i + 1])
        per.append(time.perf_counter() - t)
    return sum(per), per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--capacity-seeds", type=int, default=3)
    ap.add_argument("--timing-only", action="store_true", help="only the side-by-side learning times")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    t_start = time.perf_counter()
    acc: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {"model": [], "level1": [], "level1_before_fix": []}
    first, last, other, before_fix, codes_per_s = [], [], {}, {}, {}
    for seed in args.seeds:
        cfg = SparseyRecipeConfig(seed=seed)
        before = SparseyRecipeConfig(seed=seed, tie_order="priority", band=(0.1, 0.3))
        xtr, ytr, xte, yte = digits_edges(seed, per_class=cfg.train_per_class)
        nets = {"model": image_model(cfg, (16, 16)), "level1": image_model(cfg, (16, 16), top=False),
                "level1_before_fix": _before(before)}  # fmt: skip
        for name, net in nets.items():
            total, per = _learn_time(net, xtr)  # side by side, same items
            times[name].append(total)
            if name == "model":
                first.append(statistics.mean(per[:100]))
                last.append(statistics.mean(per[-100:]))
        if args.timing_only:
            continue
        rb = E.image_memory(_before(before), xtr, ytr, xte, yte, seed=seed, kinds=("count", "nn_overlap", "svm"))
        for k in ("acc_count", "acc_nn_overlap", "acc_svm", "recall_now_items", "recall_end_items",
                  "recall_end_L1_stored", "cm_match_end_L1_stored"):  # fmt: skip
            before_fix.setdefault(k, []).append(rb["summary"][k])
        net = image_model(cfg, (16, 16))
        r = E.image_memory(net, xtr, ytr, xte, yte, seed=seed)
        if seed == args.seeds[0]:  # recognition throughput (codes per second) of the learned model
            for bs in (1, 256):
                n = 64 if bs == 1 else 512
                t = time.perf_counter()
                for i in range(0, n, bs):
                    net.encode_levels(xte[i : i + bs])
                codes_per_s[f"batch_{bs}"] = round(n / (time.perf_counter() - t), 1)
        for k, v in r["acc"].items():
            acc.setdefault(k, []).append(v)
        acc.setdefault("knn_pixels_k1", []).append(r["knn_pixels"])
        acc.setdefault("knn_pixels_k3", []).append(pixel_knn_accuracy(xtr, ytr, xte, yte, k=3))
        s = r["summary"]
        for k in ("recall_now_items", "recall_end_items", "recall_end_L1_stored", "cm_match_end_L1_stored",
                  "recall_end_top", "recall_end_top_stored", "familiarity_G_seen", "familiarity_G_novel", "familiarity_G_random",
                  "familiarity_auc_seen_vs_novel", "familiarity_auc_seen_vs_random"):  # fmt: skip
            other.setdefault(k, []).append(s[k])
    tmed = {k: round(statistics.median(v), 3) for k, v in times.items()}
    if args.timing_only:
        print(json.dumps({"benchmark": "sparsey learning time, one pass over 1,000 digits, side by side", "threads": args.threads,
                          "seeds": args.seeds, "learn_time_s_median": tmed,
                          "learn_time_s_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
                          "ratio_model_to_level1_before_fix": round(tmed["model"] / tmed["level1_before_fix"], 3),
                          "targets": {"learn_time_model<2s": tmed["model"] < 2.0}}))  # fmt: skip
        return
    med = {k: round(statistics.median(v), 4) for k, v in acc.items()}
    # a new user's check: default SparseyConfig, learn one item, present it again at once
    probe = E.recall_probe({"before": SparseyConfig(**BEFORE_FIX), "after": SparseyConfig()},
                           {"random_sparse": E.random_sparse(200, (16, 16), 26, seed=0), "digits_binary": digits_binary(0)[0][:200]})  # fmt: skip
    capacity = {
        k: [{kk: round(v, 4) for kk, v in row.items()} for row in
            E.sequence_capacity(SparseyConfig(**kw), n_sequences=(1, 5, 10, 20, 40), seeds=tuple(range(args.capacity_seeds)))]
        for k, kw in CAPACITY.items()
    }  # fmt: skip
    now = {f"{r['data']}/{r['config']}": round(r["recall_now"], 4) for r in probe}
    out = {
        "benchmark": "sparsey single-trial learning on scikit-learn digits (edge input, 16x16), recall, familiarity, "
        "sequence capacity",
        "setup": {"train_items": 1000, "test_items": 797, "seeds": args.seeds, "threads": args.threads,
                  "model": "L1 12x12 macs 5x5 RF Q=16 K=10 band 0.08-0.3 freeze 0.2 V*=0.9 fewest-links ties + top mac "
                           "Q=4 K=64 lambda_U=10 (readouts on L1 codes)",
                  "machine": platform.processor() or platform.machine()},  # fmt: skip
        "test_acc_median": med,
        "test_acc_all": {k: [round(x, 4) for x in v] for k, v in acc.items()},
        "ratio_svm_to_1nn_pixels": round(med["svm"] / med["knn_pixels_k1"], 4),
        "learn_time_s_median": tmed,
        "learn_time_s_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_learn_time_model_to_level1_before_fix": round(tmed["model"] / tmed["level1_before_fix"], 3),
        "ratio_learn_time_level1_to_level1_before_fix": round(tmed["level1"] / tmed["level1_before_fix"], 3),
        "per_item_ms_first100_vs_last100": [round(1e3 * statistics.median(first), 3), round(1e3 * statistics.median(last), 3)],
        "codes_per_s": codes_per_s,
        "recall_and_familiarity_median": {k: round(statistics.median(v), 4) for k, v in other.items()},
        "level1_before_fix_median": {k: round(statistics.median(v), 4) for k, v in before_fix.items()},
        "new_user_recall_now": now,
        "new_user_recall_end": {f"{r['data']}/{r['config']}": round(r["recall_end"], 4) for r in probe},
        "sequence_capacity": capacity,
        "targets": {
            "svm>=0.95": med["svm"] >= 0.95,
            "nn_overlap>=0.85": med["nn_overlap"] >= 0.85,
            "learn_time_model<2s": tmed["model"] < 2.0,
            "recall_now_digits_model>=0.9": statistics.median(other["recall_now_items"]) >= 0.9,
            "new_user_recall_now_random>=0.9": now["random_sparse/after"] >= 0.9,
            "new_user_recall_now_digits>=0.9": now["digits_binary/after"] >= 0.9,
        },
        "published_reference": "MNIST 91% after one pass over 200/class in 220 s, one thread (sparsey.com)",
        "wall_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    print(json.dumps(out))


def _before(cfg: SparseyRecipeConfig) -> Sparsey:
    """Level 1 as it was before the fixes: sampled ties, frozen macs drawing from rho, priority order."""
    return Sparsey(replace(image_model(cfg, (16, 16), top=False).config, **BEFORE_FIX))


if __name__ == "__main__":
    main()
