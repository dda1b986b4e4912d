"""Time `training.prepare` on a synthetic catalog the size of the real dataset (44,000 products).

    python scripts/bench_prepare.py [--products 44000] [--image-size 48x64] [--catalog DIR]

Writes the catalog into a temporary folder (or reuses --catalog when it already holds one), then runs
`python -m training.prepare` in a child process and prints its wall time and peak RSS. The catalog was
just written, so its files are in the page cache: the figure is for a warm cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.synthetic import parse_size, write_catalog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=44_000)
    parser.add_argument("--image-size", type=parse_size, default=(48, 64))
    parser.add_argument("--catalog", type=Path, help="reuse (or create) this catalog folder instead of a temp one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        catalog = args.catalog or Path(tmp) / "catalog"
        if not (catalog / "styles.csv").is_file():
            started = time.perf_counter()
            write_catalog(catalog, args.products, seed=0, image_size=args.image_size, progress=sys.stderr.isatty())
            print(f"synthetic catalog: {args.products} products in {time.perf_counter() - started:.1f} s")
        out = Path(tmp) / "prepared"
        started = time.perf_counter()
        # A child process, so that its peak RSS is prepare's alone (not the catalog writer's).
        subprocess.run([sys.executable, "-m", "training.prepare", "--catalog", str(catalog), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        report = json.loads((out / "prepare_report.json").read_text())
    products = report["products"]
    examples = sum(s["examples"] for s in report["splits"].values())
    print(f"prepare: read {products['read']} rows, kept {products['kept']} products, {examples} examples")
    print(f"prepare: wall {wall:.1f} s, peak RSS {peak_mib:.0f} MiB "
          f"({products['read'] / wall:.0f} rows/s; warm page cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
