"""The README's pictures, taken from the real pages by Debian's headless Chromium (`make screenshots`).

    python scripts/screenshots.py [--out docs/images] [--demo-work runs/demo] [--search-work .cache/search-demo]

- docs/images/report.png: the top of the evaluation report `loom demo` writes into its model artifact
  (runs/demo/opt_ml/model/evaluation/report.html; `loom demo --no-search --no-page` runs first when missing);
- docs/images/search.png: the search page of `loom search-demo` against the `serve` program with its cached
  tiny CLIP, with a text query and an attribute filter typed in as a shopper would (`loom search-demo
  --no-serve` builds the model first when missing).

Everything runs on 127.0.0.1 or from files; the PNGs are reduced to a 256-colour palette to stay small.
The browser driver is the one the browser tests use (tests/headless_chromium.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from headless_chromium import HeadlessChromium  # noqa: E402

MAX_PNG_BYTES = 300_000
SEARCH_QUERY = "striped shirt"
SEARCH_FILTER = ("Sleeve Length", "Long Sleeves")


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        sys.exit("screenshots: Debian's chromium is not installed (apt-get install chromium)")
    return binary


def loom(*args: str) -> None:
    print("+ loom " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "operations.cli", *args], cwd=ROOT, check=True)


def save_small(png: Path) -> int:
    """Rewrite a screenshot as a 256-colour palette PNG; its size in bytes."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)
    size = png.stat().st_size
    if size > MAX_PNG_BYTES:
        sys.exit(f"screenshots: {png} is {size} bytes, over the {MAX_PNG_BYTES} budget")
    return size


def report_screenshot(browser_binary: str, demo_work: Path, out: Path, profile: Path) -> Path:
    from loom.artifact import ArtifactPaths

    report = ArtifactPaths.of(demo_work / "opt_ml" / "model").report
    if not report.is_file():
        loom("demo", "--no-search", "--no-page", "--workdir", str(demo_work))
    with HeadlessChromium(browser_binary, profile, width=1100, height=1250) as browser:
        browser.open(report.resolve().as_uri())
        browser.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        return browser.screenshot(out / "report.png")


def search_screenshot(browser_binary: str, search_work: Path, out: Path, profile: Path) -> Path:
    from inference.server.local_server import LocalServer
    from loom.artifact import IndexPaths, index_dir_of, is_artifact
    from operations.search_demo import SearchPage, facets_of
    from training.search.clip_model import TINY_CLIP_VERSION

    model = search_work / f"tiny-clip-v{TINY_CLIP_VERSION}-900"  # search-demo's default --steps
    if not is_artifact(model) or not IndexPaths.of(index_dir_of(model)).products.is_file():
        loom("search-demo", "--no-serve", "--work", str(search_work))
    with LocalServer(model, log_path=search_work / "screenshot-serve.log") as server:
        server.wait_ready(300)
        page = SearchPage(search_work / "catalog", server.url,
                          facets=facets_of(IndexPaths.of(index_dir_of(model)).products)).start()
        try:
            with HeadlessChromium(browser_binary, profile, width=1100, height=900) as browser:
                browser.open(page.url + "/")
                browser.click("#add-filter")
                browser.type_text(SEARCH_FILTER[0])
                browser.click(".filter .filter-values")
                browser.type_text(SEARCH_FILTER[1])
                browser.click("#query")
                browser.type_text(SEARCH_QUERY)
                browser.press_enter()
                status = browser.wait_for(
                    "(s => /results from/.test(s) && [...document.querySelectorAll('.product img')]"
                    ".every(i => i.complete && i.naturalWidth > 0) && s)(document.getElementById('status').textContent)")
                print(f"  search page: {status}")
                return browser.screenshot(out / "search.png")
        finally:
            page.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--demo-work", type=Path, default=ROOT / "runs" / "demo", help="loom demo's --workdir")
    parser.add_argument("--search-work", type=Path, default=ROOT / ".cache" / "search-demo",
                        help="loom search-demo's --work (its cached tiny CLIP and catalog)")
    parser.add_argument("--only", choices=("report", "search"), help="take one of the two")
    args = parser.parse_args(argv)
    binary = chromium_binary()
    args.out.mkdir(parents=True, exist_ok=True)
    taken = {}
    with tempfile.TemporaryDirectory() as profiles:
        if args.only in (None, "report"):
            taken["report"] = report_screenshot(binary, args.demo_work.resolve(), args.out, Path(profiles) / "r")
        if args.only in (None, "search"):
            taken["search"] = search_screenshot(binary, args.search_work.resolve(), args.out, Path(profiles) / "s")
    for name, png in taken.items():
        print(f"{name}: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png} ({save_small(png)} bytes)")
    print(json.dumps({name: str(png) for name, png in taken.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
