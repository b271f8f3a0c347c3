"""Compaction of third-party architectures: sparseforge vs Torch-Pruning on a zoo built from configs.

Every model of :mod:`sparseforge.compaction.zoo` (Hugging Face ``transformers`` models built from
small configs with random weights -- ResNet basic and bottleneck, RegNet, MobileNetV1/V2,
ConvNeXt, ViT, BERT, OPT, GPT-2, EfficientNet -- and two small models of ours for DenseNet-style
``cat`` and EfficientNet-style squeeze-excite) gets BatchNorm statistics and biases as after
training, then half of its dense conv filters and transformer MLP neurons zeroed (weights only:
the channels are "dead but biased"). Then

* **sparseforge**: ``sparseforge.compact(model, inputs)``;
* **Torch-Pruning** (``[bench]`` extra): its ``DependencyGraph`` removes exactly the zeroed
  channels of each zeroed layer (for channels its group couples to other zeroed layers, the ones
  zeroed in all of them, as sparseforge requires), with the layers whose removal would change the
  model's output shape protected (``ignored_layers``, as a Torch-Pruning user would);
* **ideal**: :func:`sparseforge.compaction.structural_bound` -- the parameters left if every zeroed
  channel went with its coupled slices, exact or not.

Per model: success, max |Δ| to the zeroed model (example batch and a batch of another size),
parameters after, and the latency speedup over the zeroed model (interleaved medians, one process).
Prints one JSON object.

    python benchmarks/compact_zoo.py [--threads 2] [--batch 16] [--repeats 10] [--models resnet_basic vit ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
import warnings
from typing import Any

# On a shared machine, spinning OpenMP workers thrash as soon as another process holds a core
# (VGG-16 at 1/4 width, 2 threads: 490 ms vs 32 ms passive); set before torch starts its pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from sparseforge import metrics  # noqa: E402
from sparseforge.compaction import compact, structural_bound, zoo  # noqa: E402

EXACT = 1e-5


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0]


@torch.no_grad()
def max_diff(a: nn.Module, b: nn.Module, inputs: dict) -> float:
    """Max |a - b| of the first output (inf when its shape changed)."""
    ya, yb = _first(a(**inputs)), _first(b(**inputs))
    return float((ya - yb).abs().max()) if ya.shape == yb.shape else float("inf")


def _call(model: nn.Module, example: Any) -> Any:
    with torch.no_grad():
        return model(**example) if isinstance(example, dict) else model(example)


def _shapes(out: Any) -> list[tuple[int, ...]]:
    from torch.utils import _pytree as pytree

    return [tuple(t.shape) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def output_layers(model: nn.Module, example: Any, zeroed: dict[str, torch.Tensor]) -> set[str]:
    """Zeroed layers whose removal Torch-Pruning would carry into the model's output shape.

    Found with Torch-Pruning itself: each layer's group is pruned alone on a copy and the output
    shapes compared. A Torch-Pruning user protects these (``ignored_layers``), as we do.
    """
    import torch_pruning as tp

    ref = _shapes(_call(model, example))
    hit = set()
    for name, idx in zeroed.items():
        m = copy.deepcopy(model)
        layer = m.get_submodule(name)
        dg = tp.DependencyGraph().build_dependency(m, example_inputs=example, verbose=False)
        pruner = dg.get_pruner_of_module(layer)
        if pruner is None:
            continue
        try:
            dg.get_pruning_group(layer, pruner.prune_out_channels, idxs=idx.tolist()).prune()
            if _shapes(_call(m, example)) != ref:
                hit.add(name)
        except Exception:  # noqa: BLE001 - this layer alone cannot be pruned; the main pass reports it
            continue
    return hit


def torch_pruning(model: nn.Module, example: Any, zeroed: dict[str, torch.Tensor]) -> tuple[nn.Module, str]:
    """Torch-Pruning removing exactly the zeroed channels, outputs protected. Returns ``(pruned copy, note)``."""
    import torch_pruning as tp

    protected = output_layers(model, example, zeroed)
    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    dg = tp.DependencyGraph().build_dependency(m, example_inputs=example, verbose=False)
    zero = {mods[n]: set(v.tolist()) for n, v in zeroed.items()}
    done: set[nn.Module] = {mods[n] for n in protected}
    skipped = [f"{len(protected)} layers feeding the output kept"] if protected else []
    for name, idx in zeroed.items():
        layer = mods[name]
        if layer in done:
            continue
        pruner = dg.get_pruner_of_module(layer)
        if pruner is None:
            skipped.append(f"{name} ({type(layer).__name__}: no pruner)")
            continue
        fn = pruner.prune_out_channels
        keep = set(idx.tolist())
        group = dg.get_pruning_group(layer, fn, idxs=sorted(keep))
        for item in group.items:  # channels coupled to another producer: only those zeroed there too
            target = item.dep.target.module
            if target is layer or not dg.is_out_channel_pruning_fn(item.dep.handler):
                continue
            dense_conv = isinstance(target, nn.Conv2d) and target.groups == 1  # depthwise convs carry channels
            if dense_conv or isinstance(target, nn.Linear) or type(target).__name__ == "Conv1D":
                if target in done and target in {mods[n] for n in protected}:
                    keep = set()  # coupled to a protected output layer
                done.add(target)
                zs = zero.get(target, set())
                keep &= {int(r) for i, r in zip(item.idxs, item.root_idxs) if int(i) in zs}
        done.add(layer)
        if keep:
            dg.get_pruning_group(layer, fn, idxs=sorted(keep)).prune()
    return m.eval(), "; ".join(skipped)


def run_model(name: str, *, batch: int, repeats: int, warmup: int, with_tp: bool) -> dict:
    model, inputs = zoo.build(name)
    zoo.randomize_(model)
    zeroed = zoo.zero_channels_(model)
    ex, other, timed = inputs(2), inputs(3, seed=7), inputs(batch, seed=3)
    row: dict[str, Any] = {
        "hf": zoo.ZOO[name].hf,
        "params_dense": metrics.count_params(model),
        "channels_zeroed": int(sum(v.numel() for v in zeroed.values())),
    }
    t0 = time.perf_counter()
    try:
        row["params_ideal"] = structural_bound(model, ex)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        row["params_ideal"] = None
        row["ideal_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    models: dict[str, nn.Module] = {"zeroed": model}
    sides: dict[str, dict] = {}
    t0 = time.perf_counter()
    try:
        small, rep = compact(model, ex, return_report=True)
        d = max(max_diff(model, small, ex), max_diff(model, small, other))
        sides["sparseforge"] = {"ok": True, "max_abs_diff": d, "exact": d <= EXACT, "params": metrics.count_params(small),
                                "kept_alive": sum(len(v) for v in rep.kept_alive().values()),
                                "seconds": time.perf_counter() - t0}
        models["sparseforge"] = small
    except Exception as exc:  # noqa: BLE001
        sides["sparseforge"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    if with_tp:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruned, note = torch_pruning(model, ex, zeroed)
            d = max(max_diff(model, pruned, ex), max_diff(model, pruned, other))
            sides["torch_pruning"] = {"ok": True, "max_abs_diff": d if d != float("inf") else None, "exact": d <= EXACT,
                                      "params": metrics.count_params(pruned), "seconds": time.perf_counter() - t0}
            if d == float("inf"):
                sides["torch_pruning"]["output_shape_changed"] = True  # it also removed channels of the output
            if note:
                sides["torch_pruning"]["skipped"] = note
            models["torch_pruning"] = pruned
        except Exception as exc:  # noqa: BLE001
            sides["torch_pruning"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    lat = metrics.compare_latency(models, timed, repeats=repeats, warmup=warmup)
    row["latency_ms_zeroed"] = lat["zeroed"]
    for k, side in sides.items():
        if k in lat:
            side["latency_ms"] = lat[k]
            side["latency_speedup"] = lat["zeroed"] / lat[k]
    row.update(sides)
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help=f"zoo models (default: all of {', '.join(zoo.names())})")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--batch", type=int, default=16, help="batch size of the latency measurement")
    p.add_argument("--repeats", type=int, default=10, help="timed interleaved rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    try:
        import torch_pruning

        tp_version = torch_pruning.__version__
    except ImportError:
        tp_version = None
    names = args.models or zoo.names()
    rows = {}
    for name in names:
        rows[name] = run_model(name, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                               with_tp=tp_version is not None)

    def count(side: str, key: str) -> int:
        return sum(1 for r in rows.values() if r.get(side, {}).get(key))

    n = len(rows)
    sf_exact, tp_ok, tp_exact = count("sparseforge", "exact"), count("torch_pruning", "ok"), count("torch_pruning", "exact")
    result = {
        "benchmark": "compact_zoo",
        "what": "zeroed half of the dense conv filters / MLP neurons; sparseforge.compact vs Torch-Pruning removing "
                "the same zeroed channels; exact means max |delta| <= 1e-5 on the example batch and a batch of 3",
        "torch": torch.__version__,
        "torch_pruning": tp_version or "not installed (pip install 'sparseforge[bench]')",
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "machine": platform.machine(),
        "latency_batch": args.batch,
        "repeats": args.repeats,
        "models": rows,
        "summary": {
            "models": n,
            "sparseforge_exact": sf_exact,
            "torch_pruning_runs": tp_ok,
            "torch_pruning_exact": tp_exact,
        },
        "targets": {"exact compaction on every zoo model": {"value": f"{sf_exact}/{n}", "met": sf_exact == n}},
        "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
