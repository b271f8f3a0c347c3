"""One-off check for refactors: run every recipe at a preset and compare summaries (not in the test suite).

    python tools/summary_snapshot.py run OUT.json [--preset quick] [--only r1,r2]
    python tools/summary_snapshot.py diff BEFORE.json AFTER.json

``run`` writes ``{recipe: summary}`` at one thread on CPU. ``diff`` compares two snapshots key by
key, skipping timing keys (latency, time, speed, per-second figures), and prints every difference
(and every key only one side has), so a refactor that should not change results shows none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

TIMING = re.compile(r"(latency|time|_ms|speedup|per_s|wall|seconds|_s$|_s/|throughput|step_ms|codes_per)", re.I)


def run(out: str, preset: str, only: list[str] | None) -> None:
    os.environ.setdefault("SPARSEFORGE_NO_PROGRESS", "1")
    from sparseforge.recipes import run_recipe
    from sparseforge.registry import RECIPES

    names = only or RECIPES.names()
    snap = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            _, summary = run_recipe(name, preset=preset, out=os.path.join(tmp, name), threads=1, report=False)
            snap[name] = json.loads(json.dumps(summary, default=str))
            print(f"{name}: {len(summary)} keys", file=sys.stderr)
    with open(out, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=True)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(a_path: str, b_path: str) -> int:
    a, b = json.load(open(a_path)), json.load(open(b_path))
    n_diff = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in {'after' if name in b else 'before'}")
            continue
        sa, sb = _flat(a[name]), _flat(b[name])
        keys = sorted(k for k in set(sa) | set(sb) if not TIMING.search(k))
        rows = []
        for k in keys:
            if k not in sa or k not in sb:
                rows.append(f"  {k}: {'(new)' if k not in sa else sa[k]} -> {'(gone)' if k not in sb else sb[k]}")
            elif sa[k] != sb[k]:
                rows.append(f"  {k}: {sa[k]} -> {sb[k]}")
        print(f"{name}: {len(keys)} non-timing keys, {len(rows)} differ")
        print("\n".join(rows)) if rows else None
        n_diff += len(rows)
    return 1 if n_diff else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--preset", default="quick")
    r.add_argument("--only", default=None)
    d = sub.add_parser("diff")
    d.add_argument("before")
    d.add_argument("after")
    args = p.parse_args()
    if args.cmd == "run":
        run(args.out, args.preset, args.only.split(",") if args.only else None)
    else:
        sys.exit(diff(args.before, args.after))
