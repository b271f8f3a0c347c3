"""The ``sparseforge`` command line.

::

    sparseforge list [methods]
    sparseforge run RECIPE [--preset smoke|quick|paper] [--set key=value ...]
                           [--out DIR] [--seed N] [--device cpu|cuda] [--resume]
                           [--checkpoint-steps N] [--checkpoint-seconds S]
    sparseforge report DIR
    sparseforge demo [--out DIR] [--preset quick] [--only RECIPE ...] [--threads N]

Bad input (unknown recipe, unknown ``--set`` key, wrong value type, a value outside its
documented range, a ``data_dir`` the dataset does not read, an unusable ``--out``, an
unreadable checkpoint) prints one line ``error: ...`` on stderr and exits with code 2. An
unexpected failure prints one line too and exits with code 1. ``--debug`` (anywhere on the
command line, or ``SPARSEFORGE_DEBUG=1``) prints the full traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .errors import PathError, UserError, one_line, os_error_message

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage otherwise)
        print(f"error: {message} (see `sparseforge --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sparseforge", description="Learning sparse neural networks: run the recipes, build reports.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"sparseforge {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def debug_flag(sp: argparse.ArgumentParser) -> None:  # also accepted after the subcommand
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback")

    ls = sub.add_parser("list", help="list the recipes (or `list methods`), one line each")
    ls.add_argument("what", nargs="?", default="recipes", choices=["recipes", "methods"])
    debug_flag(ls)
    r = sub.add_parser("run", help="run a recipe")
    r.add_argument("recipe")
    r.add_argument("--preset", default="quick", help="smoke | quick | paper (default: quick)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    r.add_argument("--out", default=None, help="run directory (default: runs/<recipe>-<preset>-<hash>)")
    r.add_argument("--seed", type=int, default=None, help="random seed in [0, 2**32 - 1]")
    r.add_argument("--device", default=None, choices=["cpu", "cuda"])
    r.add_argument("--resume", action="store_true", help="reuse finished stages and checkpoints in --out")
    r.add_argument("--checkpoint-steps", type=_positive_int, default=None, metavar="N",
                   help="mid-stage checkpoint every N training steps (default: by time only)")
    r.add_argument("--checkpoint-seconds", type=_positive_float, default=None, metavar="S",
                   help="mid-stage checkpoint at least every S seconds of training (default: 60)")
    debug_flag(r)
    rep = sub.add_parser("report", help="(re)build DIR/report.html")
    rep.add_argument("dir")
    debug_flag(rep)
    d = sub.add_parser("demo", help="every recipe at its quick preset + index.html")
    d.add_argument("--out", default="demo")
    d.add_argument("--preset", default="quick")
    d.add_argument("--only", action="append", default=None, metavar="RECIPE", help="run only these recipes")
    d.add_argument("--threads", type=_positive_int, default=1, help="CPU threads per recipe (default 1: small models)")
    debug_flag(d)
    return p


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import METHODS, RECIPES

    if args.what == "methods":
        from .registry import FAMILIES

        entries = METHODS.entries()
        width = max((len(e.name) for e in entries), default=0)
        for fam in sorted({str(e.meta.get("family", "")) for e in entries}):
            desc = FAMILIES.get(fam).description if fam in FAMILIES else ""
            print(f"{fam}: {desc}".rstrip(": "))
            for e in entries:
                if str(e.meta.get("family", "")) == fam:
                    print(f"  {e.name:<{width}}  {e.description}".rstrip())
            if fam == "compressor":
                print(f"  {'(scorers)':<{width}}  every scorer below is also a compressor: pruning at initialisation")
        return 0
    entries = RECIPES.entries()
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        print(f"{e.name:<{width}}  {e.obj.help}")
    return 0


def _check_out(text: str | None, option: str = "--out") -> None:
    if text is not None and text.strip() == "":
        raise PathError(f"{option} is an empty path; give it a folder name")


def _cmd_run(args: argparse.Namespace) -> int:
    _check_out(args.out)
    from .recipes import run_recipe

    path, summary = run_recipe(
        args.recipe,
        preset=args.preset,
        overrides=args.overrides,
        out=args.out,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        checkpoint_steps=args.checkpoint_steps,
        checkpoint_seconds=args.checkpoint_seconds,
    )
    from .engine.distributed import is_main_process

    if is_main_process():
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        print(f"run directory: {path}\nreport: {path / 'report.html'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    d = Path(args.dir)
    if not d.is_dir() or not (d / "config.json").is_file():
        raise UserError(f"{d}: not a run directory (no config.json); give the --out folder of a run")
    print(build_report(d))
    return 0


def _cmd_demo(args: argparse.Namespace, debug: bool) -> int:
    _check_out(args.out, "demo --out")
    from .config import PRESETS
    from .engine.run import ensure_dir
    from .registry import RECIPES
    from .report.html import DemoFailed, run_demo

    if args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    for n in args.only or []:
        RECIPES.get(n)  # one-line error for an unknown name, before anything runs
    ensure_dir(args.out, what="the demo folder", option="demo --out")
    try:
        index = run_demo(args.out, preset=args.preset, only=args.only, threads=args.threads, debug=debug)
    except DemoFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"demo index: {index}")
    return 0


def _describe(e: BaseException, args: argparse.Namespace) -> tuple[int, str]:
    """(exit code, one line) for an exception that reached the command line."""
    target = getattr(args, "recipe", None) or getattr(args, "dir", None) or ""
    what = f" (sparseforge {args.command}{' ' + target if target else ''})"
    if isinstance(e, UserError):
        return EXIT_USAGE, one_line(e)
    if isinstance(e, OSError):  # the file system: a path given on the command line, a full disk, ...
        return EXIT_USAGE, f"{os_error_message(e, 'cannot use')}{what}"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return EXIT_FAILURE, f"out of memory{what}: lower the sizes (batch_size, model dimensions) with --set"
    return EXIT_FAILURE, f"{type(e).__name__}: {one_line(e)}{what} — an unexpected failure; rerun with --debug for the traceback"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SPARSEFORGE_DEBUG", "") not in ("", "0")
    try:
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "demo":
            return _cmd_demo(args, debug)
    except KeyboardInterrupt:
        print("interrupted; finished stages and checkpoints are kept (rerun with --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the boundary: one line (the traceback with --debug)
        if debug:
            traceback.print_exc()
        code, msg = _describe(e, args)
        print(f"error: {msg}", file=sys.stderr)
        return code
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
