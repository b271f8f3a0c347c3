"""Check a demo folder as a reader would, and take screenshots (``make report-check``).

    python tools/report_check.py [DEMO_DIR] [--width 1280] [--height 2400] [--out DIR]

1. Structural check of every page below DEMO_DIR (the index and each report): the markup
   parses, every image decodes, every local link resolves (:mod:`sparseforge.report.check`).
2. Screenshots: each page rendered by a headless Chromium (``chromium``, ``chromium-browser``,
   ``google-chrome``, ``google-chrome-stable`` or ``chrome`` on the PATH, or Playwright's Chromium
   when the ``playwright`` package is installed) into DEMO_DIR/screenshots/<page>.png, so a person
   can look. Without a browser it says so and skips this step (exit code 0).

Exit code 1 when the structural check finds a problem or a page fails to render; 2 when
DEMO_DIR holds no page (run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> tuple[str, str] | None:
    """("binary", path) for a Chromium on the PATH, ("playwright", "") when only Playwright has one, or None."""
    for b in BROWSERS:
        p = shutil.which(b)
        if p:
            return "binary", p
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None
    return "playwright", ""


def _shot_binary(browser: str, page: Path, png: Path, width: int, height: int) -> str | None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", page.resolve().as_uri()]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return "timed out"
    if not png.exists() or png.stat().st_size == 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"no screenshot (exit {r.returncode}: {tail[0]})"
    return None


def _shot_playwright(page: Path, png: Path, width: int, height: int) -> str | None:
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch()
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(page.resolve().as_uri())
            tab.screenshot(path=str(png), full_page=True)
            browser.close()
    except Error as e:  # e.g. the browser itself was never downloaded
        return str(e).splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", nargs="?", default="demo", help="demo folder (default: demo)")
    ap.add_argument("--out", default=None, help="screenshot folder (default: DEMO/screenshots)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sparseforge.report.check import check_tree

    root = Path(args.demo)
    pages = sorted(root.rglob("*.html")) if root.is_dir() else []
    if not pages:
        print(f"report-check: no .html page under {root}; run `make demo` first", file=sys.stderr)
        return 2
    res = check_tree(root)
    print(f"report-check: {res['pages']} pages, {res['images']} images, {res['links']} links checked")
    for p in res["problems"]:
        print(f"  problem: {p}")
    failed = bool(res["problems"])
    found = find_browser()
    if found is None:
        print("report-check: no headless Chromium found (looked for " + ", ".join(BROWSERS)
              + " and the playwright package); skipping screenshots. Install one (e.g. `apt-get install "
              "chromium`) to get them.")
        return 1 if failed else 0
    kind, browser = found
    shots = Path(args.out) if args.out else root / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for page in pages:
        rel = page.relative_to(root)
        png = shots / ("__".join(rel.with_suffix("").parts) + ".png")
        err = (_shot_binary(browser, page, png, args.width, args.height) if kind == "binary"
               else _shot_playwright(page, png, args.width, args.height))
        if err:
            failed = True
            print(f"  {rel}: {err}")
        else:
            print(f"  {rel} -> {png}")
    print(f"report-check: screenshots in {shots}" + ("" if not failed else " (with problems, see above)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
