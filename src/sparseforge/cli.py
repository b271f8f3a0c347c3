"""The ``sparseforge`` command line.

::

    sparseforge list
    sparseforge run RECIPE [--preset smoke|quick|paper] [--set key=value ...]
                           [--out DIR] [--seed N] [--device cpu|cuda] [--resume]
    sparseforge report DIR
    sparseforge demo [--out DIR] [--preset quick]

Bad input (unknown recipe, unknown ``--set`` key, wrong value type, missing data path)
prints one line ``error: ...`` on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage otherwise)
        print(f"error: {message} (see `sparseforge --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sparseforge", description="Learning sparse neural networks: run the recipes, build reports.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"sparseforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the recipes, one line each")
    r = sub.add_parser("run", help="run a recipe")
    r.add_argument("recipe")
    r.add_argument("--preset", default="quick", help="smoke | quick | paper (default: quick)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    r.add_argument("--out", default=None, help="run directory (default: runs/<recipe>-<preset>-<hash>)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--device", default=None, choices=["cpu", "cuda"])
    r.add_argument("--resume", action="store_true", help="reuse finished stages and checkpoints in --out")
    rep = sub.add_parser("report", help="(re)build DIR/report.html")
    rep.add_argument("dir")
    d = sub.add_parser("demo", help="every recipe at its quick preset + index.html")
    d.add_argument("--out", default="demo")
    d.add_argument("--preset", default="quick")
    d.add_argument("--only", action="append", default=None, metavar="RECIPE", help="run only these recipes")
    d.add_argument("--threads", type=int, default=1, help="CPU threads per recipe (default 1: small models)")
    return p


def _cmd_list() -> int:
    from .recipes import Recipe  # noqa: F401 - ensures the package is importable
    from .registry import RECIPES

    entries = RECIPES.entries()
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        print(f"{e.name:<{width}}  {e.obj.help}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .recipes import run_recipe

    path, summary = run_recipe(
        args.recipe,
        preset=args.preset,
        overrides=args.overrides,
        out=args.out,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
    )
    from .engine.distributed import is_main_process

    if is_main_process():
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        print(f"run directory: {path}\nreport: {path / 'report.html'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    d = Path(args.dir)
    if not (d / "config.json").exists():
        raise UserError(f"{d}: not a run directory (no config.json); give the --out folder of a run")
    print(build_report(d))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .report.html import DemoFailed, run_demo

    try:
        index = run_demo(args.out, preset=args.preset, only=args.only, threads=args.threads)
    except DemoFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"demo index: {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "demo":
            return _cmd_demo(args)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished stages and checkpoints are kept (rerun with --resume)", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
