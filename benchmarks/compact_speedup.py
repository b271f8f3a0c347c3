"""Does physical compaction turn a FLOPs reduction into a real speed-up?

VGG-16 (CIFAR, full width, BatchNorm), batch 64 at 32x32. In every conv layer the lowest-L2-norm
50% (and, separately, 75%) of the filters are zeroed together with their BatchNorm gamma and beta,
so each removed channel is exactly zero and :func:`sparseforge.compact` can remove it with the
next layer's input slice. Dense and compacted models are timed in one interleaved loop
(:func:`sparseforge.metrics.compare_latency`) so machine drift hits all alike.

Prints one JSON object: per fraction, dense and compacted FLOPs and median latency, the FLOPs
reduction (dense / compacted), the latency speedup (dense / compacted) and their ratio
speedup / reduction (target >= 0.8 on CPU).

    python benchmarks/compact_speedup.py [--repeats 10] [--threads N] [--fractions 0.5 0.75]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from sparseforge import metrics
from sparseforge.compact import compact
from sparseforge.models import create_model


@torch.no_grad()
def zero_lowest_filters_(model: nn.Module, fraction: float) -> int:
    """Zero the lowest-norm ``fraction`` of filters in every Conv2d and their BN gamma/beta.

    Returns:
        The number of filters zeroed.
    """
    total = 0
    mods = list(model.modules())
    for i, conv in enumerate(mods):
        if not isinstance(conv, nn.Conv2d):
            continue
        k = int(round(fraction * conv.out_channels))
        idx = conv.weight.flatten(1).norm(dim=1).argsort()[:k]  # (k,) lowest-norm filters
        conv.weight[idx] = 0
        if conv.bias is not None:
            conv.bias[idx] = 0
        bn = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight[idx] = 0
            bn.bias[idx] = 0
        total += k
    return total


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75], help="fractions of filters zeroed")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    dense = create_model(args.model).eval()
    # Non-trivial BN statistics, as after training.
    with torch.no_grad():
        for m in dense.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(args.batch, 3, 32, 32)
    models: dict[str, nn.Module] = {"dense": dense}
    info: dict[str, dict] = {}
    for f in args.fractions:
        pruned = create_model(args.model).eval()
        pruned.load_state_dict(dense.state_dict())
        zeroed = zero_lowest_filters_(pruned, f)
        small = compact(pruned, x[:2])
        with torch.no_grad():
            err = float((pruned(x[:8]) - small(x[:8])).abs().max())
        key = f"{int(round(f * 100))}%"
        models[key] = small
        info[key] = {
            "fraction_zeroed": f,
            "filters_zeroed": zeroed,
            "params": metrics.count_params(small),
            "max_abs_diff": err,
        }
    dev = torch.device(args.device)
    models = {k: m.to(dev) for k, m in models.items()}
    x = x.to(dev)
    flops = {k: metrics.flops(m, x) for k, m in models.items()}
    lat = metrics.compare_latency(models, x, repeats=args.repeats, warmup=args.warmup)

    result: dict = {
        "benchmark": "compact_speedup",
        "what": f"{args.model} dense vs compacted after zeroing the lowest-norm filters of every conv",
        "model": args.model,
        "input": [args.batch, 3, 32, 32],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "repeats": args.repeats,
        "dense": {"params": metrics.count_params(dense), "flops": flops["dense"], "latency_ms": lat["dense"]},
    }
    for key, d in info.items():
        reduction = flops["dense"] / flops[key]
        speedup = lat["dense"] / lat[key]
        result[key] = {
            **d,
            "flops": flops[key],
            "latency_ms": lat[key],
            "flops_reduction": reduction,
            "latency_speedup": speedup,
            "speedup_over_flops_reduction": speedup / reduction,
        }
    result["target_ratio"] = 0.8
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
