"""Milliseconds per image to interrogate a photo on this machine, for the three modes side by side.

    OMP_NUM_THREADS=1 python scripts/bench_interrogate.py [--model CLIP_DIR] [--catalog DIR] [--images 60]

Each photo (a shopper's photo of a catalog product: cropped, rescaled, JPEG q70) goes through what the endpoint
does for `{"task": "interrogate"}` after decoding: the image embedding, then the ranking of the artifact's
phrase tables (and, for `best`, the text encoder on every candidate prompt). The modes take turns on the same
photo, so a busy machine slows them alike. Printed per mode: median and 90th percentile of the whole step and
of the ranking alone. Without --model a synthetic catalog and the tiny CLIP (a stand-in, ~1.5 min to train)
are built in a temporary folder first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from runtime.clip_service import ClipService
from runtime.zero_shot import MODES
from training.catalog import read_catalog
from training.search.search_eval import shopper_photo


def measure(service: ClipService, photos: list[Image.Image], max_terms: int = 6) -> dict[str, dict[str, float]]:
    """{mode: {"total_p50", "total_p90", "rank_p50", "rank_p90", "terms"}} in milliseconds per image."""
    total: dict[str, list[float]] = {m: [] for m in MODES}
    rank: dict[str, list[float]] = {m: [] for m in MODES}
    terms: dict[str, list[int]] = {m: [] for m in MODES}
    for photo in photos:
        for mode in MODES:
            started = time.perf_counter()
            vector = service.embedder.embed_images([photo])[0]
            embedded = time.perf_counter()
            result = service.zero_shot.interrogate(vector, mode, max_terms, None)
            done = time.perf_counter()
            total[mode].append((done - started) * 1000)
            rank[mode].append((done - embedded) * 1000)
            terms[mode].append(len(result["terms"]))

    def p90(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.9 * len(values)) - 1)]

    return {m: {"total_p50": statistics.median(total[m]), "total_p90": p90(total[m]),
                "rank_p50": statistics.median(rank[m]), "rank_p90": p90(rank[m]),
                "terms": statistics.mean(terms[m])} for m in MODES}


def shopper_photos(catalog: Path, count: int, seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    products = read_catalog(catalog, progress=False).products
    photos = []
    for product in rng.sample(products, min(count, len(products))):
        with Image.open(product.image_path) as image:
            photos.append(shopper_photo(image.convert("RGB"), rng))
    return photos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a CLIP artifact with phrase tables (default: build the tiny CLIP)")
    parser.add_argument("--catalog", type=Path, help="catalog whose photos to use (default: a synthetic one)")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--max-terms", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="loom-bench-interrogate-") as tmp:
        catalog = args.catalog
        if catalog is None:
            from training.synthetic import write_catalog

            catalog = Path(tmp) / "catalog"
            write_catalog(catalog, products=400, seed=5)
        model = args.model
        if model is None:
            from training.search.clip_model import build_tiny_clip

            model = Path(tmp) / "clip"
            print("building the tiny CLIP (a stand-in) ...", flush=True)
            build_tiny_clip(catalog, model, steps=500)
        service = ClipService.load(model, device="cpu")
        if not service.zero_shot.tables:
            raise SystemExit(f"{model} has no phrase tables: build it with loom clip-artifact or loom tiny-clip")
        photos = shopper_photos(catalog, args.images)
        service.warm_up()
        figures = measure(service, photos, args.max_terms)
    phrases = sum(len(t.phrases) for t in service.zero_shot.tables)
    print(f"{service.embedder.model_id}, {len(service.zero_shot.tables)} phrase tables ({phrases} phrases), "
          f"{len(photos)} photos, max_terms {args.max_terms}, {torch.get_num_threads()} torch thread(s)")
    print(f"{'mode':<8} {'ms/image p50':>13} {'p90':>8} {'ranking p50':>12} {'p90':>8} {'terms':>6}")
    for mode, f in figures.items():
        print(f"{mode:<8} {f['total_p50']:>13.2f} {f['total_p90']:>8.2f} {f['rank_p50']:>12.2f} "
              f"{f['rank_p90']:>8.2f} {f['terms']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
