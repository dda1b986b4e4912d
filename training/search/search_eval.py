"""How well search finds products: the issue's targets, measured on an index bundle and its CLIP artifact.

- text R-precision: a query naming colour, pattern and sleeve length ("green striped long sleeves");
  relevant = the products with the same three values; R = how many there are.
- one-attribute precision@10: "<colour> shirt"; relevant = that baseColour.
- photo R-precision: a catalog photo cropped, resized and re-encoded as JPEG (a shopper's photo);
  relevant = products with the same three values.

    loom search-eval --model CLIP_DIR [--index INDEX_DIR] --catalog DIR
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.embedder import ClipEmbedder
from runtime.search_index import SearchIndex
from loom.artifact import index_dir_of

LABELS = ("baseColour", "Pattern", "Sleeve Length")


def label_of(attributes: dict[str, str]) -> tuple[str | None, ...]:
    return tuple(attributes.get(name) for name in LABELS)


def shopper_photo(image: Image.Image, rng: random.Random) -> Image.Image:
    """A catalog photo as a shopper might send it: cropped up to 12% a side, rescaled, JPEG quality 70."""
    w, h = image.size
    box = (rng.randint(0, w // 8), rng.randint(0, h // 8), w - rng.randint(0, w // 8), h - rng.randint(0, h // 8))
    scale = rng.uniform(0.7, 2.0)
    photo = image.crop(box).resize((max(16, int(w * scale)), max(16, int(h * scale))))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _precision(index: SearchIndex, vector: np.ndarray, relevant: set[str], k: int) -> float:
    found = index.search(vector, k)
    return sum(row.id in relevant for row, _ in found) / k


def evaluate(embedder: ClipEmbedder, index: SearchIndex, catalog: Path, photos: int = 100, seed: int = 0) -> dict:
    """The three figures (mean and worst query) on a bundle; `catalog` supplies the photos."""
    by_label: dict[tuple, set[str]] = {}
    by_colour: dict[str, set[str]] = {}
    for row in index.products:
        label = label_of(row.attributes)
        if None not in label:
            by_label.setdefault(label, set()).add(row.id)
            by_colour.setdefault(label[0], set()).add(row.id)
    text = [_precision(index, embedder.embed_texts([" ".join(label).lower()])[0], ids, len(ids))
            for label, ids in sorted(by_label.items())]
    colour = [_precision(index, embedder.embed_texts([f"{c.lower()} shirt"])[0], ids, 10)
              for c, ids in sorted(by_colour.items()) if len(ids) >= 10]
    rng = random.Random(seed)
    rows = [r for r in index.products if None not in label_of(r.attributes)]
    photo = []
    for row in rng.sample(rows, min(photos, len(rows))):
        with Image.open(Path(catalog) / row.image) as image:
            query = shopper_photo(image.convert("RGB"), rng)
        ids = by_label[label_of(row.attributes)]
        photo.append(_precision(index, embedder.embed_images([query])[0], ids, len(ids)))

    def summary(values: list[float]) -> dict:
        return {"mean": round(float(np.mean(values)), 4), "worst": round(float(np.min(values)), 4),
                "queries": len(values)}

    return {"text_r_precision": summary(text), "colour_precision_at_10": summary(colour),
            "photo_r_precision": summary(photo), "index_size": index.size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom search-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--index", type=Path, help="bundle folder (default MODEL/index)")
    parser.add_argument("--catalog", required=True, type=Path)
    parser.add_argument("--photos", type=int, default=100)
    args = parser.parse_args(argv)
    embedder = ClipEmbedder.load(args.model)
    index = SearchIndex.load(args.index or index_dir_of(args.model))
    print(json.dumps(evaluate(embedder, index, args.catalog, args.photos), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
