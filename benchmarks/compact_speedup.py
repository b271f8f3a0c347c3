"""Does physical compaction turn a FLOPs reduction into a real speed-up, and what does deployment add?

VGG-16 (CIFAR, BatchNorm), batch 64 at 32x32. In every conv layer the lowest-L2-norm 50% (and,
separately, 75%) of the filters are zeroed together with their BatchNorm gamma and beta, so each
removed channel is exactly zero. Measured side by side, interleaved in one process
(:func:`sparseforge.metrics.compare_latency`, so machine drift hits all alike):

* ``dense`` -- the full-width model;
* ``compacted`` -- :func:`sparseforge.compact` of the zeroed model (eager);
* ``deploy`` -- :func:`sparseforge.deploy` (``strategy="auto"``: it times eager, BatchNorm-folded
  and inductor-compiled candidates and keeps the fastest);
* ``native`` -- a VGG-16 built at the same widths (``width=1 - fraction``), eager and compiled;
* ``torch_pruning`` -- Torch-Pruning's ``DependencyGraph`` removing the same filters, eager and
  compiled (``[bench]`` extra).

Prints one JSON object: per fraction the FLOPs and latency of each, the FLOPs reduction, the
speedups, and the targets: compacted >= 0.97x the speed of the natively narrow model, deploy >=
1.4x (50%) / 1.8x (75%) faster than the compacted model; the original ``speedup_over_flops_reduction``
(>= 0.8) is kept.

    python benchmarks/compact_speedup.py [--repeats 10] [--threads 2] [--fractions 0.5 0.75]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

# On a shared machine, spinning OpenMP workers thrash as soon as another process holds a core
# (VGG-16 at 1/4 width, 2 threads: 490 ms vs 32 ms passive); set before torch starts its pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from sparseforge import metrics  # noqa: E402
from sparseforge.compaction import compact  # noqa: E402
from sparseforge.deployment import compile_available, deploy  # noqa: E402
from sparseforge.models import create_model  # noqa: E402

DEPLOY_TARGET = {0.5: 1.4, 0.75: 1.8}


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


def zeroed_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv name -> indices of its all-zero filters."""
    return {n: (m.weight.flatten(1) == 0).all(1).nonzero().flatten()
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}  # fmt: skip


@torch.no_grad()
def trained_bn_stats_(model: nn.Module) -> None:
    """Non-trivial BN statistics, as after training."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def _compiled(model: nn.Module, x: torch.Tensor) -> nn.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = deploy(model, x, strategy="compile", compact=False)
    return d if d.strategy == "compile" else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75], help="fractions of filters zeroed")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    dev = torch.device(args.device)
    can_compile, why = compile_available()
    can_compile = can_compile and not args.no_compile
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from compact_zoo import torch_pruning as prune_with_tp

    try:
        import torch_pruning as _tp

        tp_version = _tp.__version__
    except ImportError:
        prune_with_tp, tp_version = None, None

    dense = create_model(args.model).eval()
    trained_bn_stats_(dense)
    dense = dense.to(dev)
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    models: dict[str, nn.Module] = {"dense": dense}
    info: dict[str, dict] = {}
    for f in args.fractions:
        key = f"{int(round(f * 100))}%"
        pruned = create_model(args.model).eval().to(dev)
        pruned.load_state_dict(dense.state_dict())
        zeroed = zero_lowest_filters_(pruned, f)
        small = compact(pruned, x[:2])
        with torch.no_grad():
            err = float((pruned(x[:8]) - small(x[:8])).abs().max())
        models[key] = small
        row: dict = {"fraction_zeroed": f, "filters_zeroed": zeroed, "params": metrics.count_params(small),
                     "max_abs_diff": err}  # fmt: skip
        dep = deploy(pruned, x, repeats=max(3, args.repeats // 2), warmup=1) if can_compile else None
        if dep is not None:
            models[f"{key} deploy"] = dep
            with torch.no_grad():
                row["deploy"] = {"strategy": dep.strategy, "candidates_ms": dep.timings_ms,
                                 "max_abs_diff": float((pruned(x[:8]) - dep(x[:8])).abs().max())}  # fmt: skip
        native = create_model(args.model, width=1.0 - f).eval()
        trained_bn_stats_(native)
        native = native.to(dev)
        models[f"{key} native"] = native
        row["native"] = {"width": 1.0 - f, "params": metrics.count_params(native)}
        if can_compile:
            nc = _compiled(native, x)
            if nc is not None:
                models[f"{key} native compiled"] = nc
        if prune_with_tp is not None:
            try:
                tpm, _ = prune_with_tp(pruned, x, zeroed_filters(pruned))
                with torch.no_grad():
                    row["torch_pruning"] = {"params": metrics.count_params(tpm),
                                            "max_abs_diff": float((pruned(x[:8]) - tpm(x[:8])).abs().max())}
                models[f"{key} torch_pruning"] = tpm
                if can_compile:
                    tc = _compiled(tpm, x)
                    if tc is not None:
                        models[f"{key} torch_pruning compiled"] = tc
            except Exception as exc:  # noqa: BLE001 - reported in the JSON
                row["torch_pruning"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        info[key] = row

    flops = {k: metrics.flops(m, x) for k, m in models.items()}
    lat = metrics.compare_latency(models, x, repeats=args.repeats, warmup=args.warmup)

    result: dict = {
        "benchmark": "compact_speedup",
        "what": f"{args.model}: dense vs compacted (eager), deploy path, natively narrow model and Torch-Pruning "
                "(eager and compiled) after zeroing the lowest-norm filters of every conv; latencies interleaved",
        "model": args.model,
        "input": [args.batch, 3, 32, 32],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
        "torch_pruning": tp_version or "not installed (pip install 'sparseforge[bench]')",
        "compile": "inductor, freezing" if can_compile else f"unavailable: {why or '--no-compile'}",
        "machine": platform.machine(),
        "repeats": args.repeats,
        "dense": {"params": metrics.count_params(dense), "flops": flops["dense"], "latency_ms": lat["dense"]},
    }
    targets = {}
    for key, d in info.items():
        reduction = flops["dense"] / flops[key]
        speedup = lat["dense"] / lat[key]
        row = {**d, "flops": flops[key], "latency_ms": lat[key], "flops_reduction": reduction,
               "latency_speedup": speedup, "speedup_over_flops_reduction": speedup / reduction}  # fmt: skip
        nat = lat[f"{key} native"]
        row["native"].update({"flops": flops[f"{key} native"], "latency_ms": nat})
        row["compacted_speed_vs_native"] = nat / lat[key]
        if f"{key} native compiled" in lat:
            row["native"]["latency_ms_compiled"] = lat[f"{key} native compiled"]
        if f"{key} deploy" in lat:
            row["deploy"]["latency_ms"] = lat[f"{key} deploy"]
            row["deploy"]["speedup_over_compacted"] = lat[key] / lat[f"{key} deploy"]
        if f"{key} torch_pruning" in lat:
            row["torch_pruning"].update({"flops": flops[f"{key} torch_pruning"], "latency_ms": lat[f"{key} torch_pruning"]})
            if f"{key} torch_pruning compiled" in lat:
                row["torch_pruning"]["latency_ms_compiled"] = lat[f"{key} torch_pruning compiled"]
        result[key] = row
        targets[f"{key}: compacted >= 0.97x native speed"] = {"value": row["compacted_speed_vs_native"],
                                                              "met": row["compacted_speed_vs_native"] >= 0.97}
        frac = d["fraction_zeroed"]
        if "deploy" in row and "speedup_over_compacted" in row["deploy"] and frac in DEPLOY_TARGET:
            v = row["deploy"]["speedup_over_compacted"]
            targets[f"{key}: deploy >= {DEPLOY_TARGET[frac]}x compacted"] = {"value": v, "met": v >= DEPLOY_TARGET[frac]}
    result["target_ratio"] = 0.8
    result["targets"] = targets
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
