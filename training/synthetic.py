"""A synthetic product catalog in the Kaggle *Fashion Product Images* layout.

Shirts are drawn with PIL so that colour, pattern and sleeve length are visible in the picture; other
attributes (fabric, fit, collar, ...) are recorded but not drawn, as in real catalogs where the photo
cannot tell them. Some product names contain unquoted commas, as in the real `styles.csv`.

    loom synthetic --out DIR --products N [--seed S] [--image-size 96x128]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from training.catalog import CSV_COLUMNS, IMAGES_DIR, STYLES_CSV, STYLES_DIR


# Colours far enough apart to be told from each other in a 64 px picture.
COLOURS = {
    "Red": (200, 30, 30),
    "Blue": (30, 60, 200),
    "Green": (30, 150, 50),
    "Black": (20, 20, 20),
    "Yellow": (235, 210, 40),
    "Pink": (240, 130, 180),
    "Purple": (120, 40, 150),
    "Orange": (240, 130, 20),
}
PATTERNS = ("Solid", "Striped", "Checked")
SLEEVES = ("Short Sleeves", "Long Sleeves", "Sleeveless")
FABRICS = ("Cotton", "Polyester", "Linen", "Viscose", "NA")
FITS = ("Regular Fit", "Slim Fit", "NA")
COLLARS = ("Spread Collar", "Button-Down Collar", "Mandarin Collar")
NECKS = ("Round Neck", "V Neck", "Polo Collar")
SLEEVE_STYLES = ("Regular Sleeves", "Roll-up Sleeves")
OTHER_TYPES = (("Jeans", "Bottomwear"), ("Watches", "Watches"), ("Casual Shoes", "Shoes"))
ARTICLE_TYPES = ("Shirts", "Tshirts", *(t for t, _ in OTHER_TYPES))
BACKGROUND = (238, 238, 238)


@dataclass
class SyntheticProduct:
    id: int
    article_type: str
    sub_category: str
    colour: str
    gender: str
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        kind = {"Shirts": "Shirt", "Tshirts": "T-shirt"}.get(self.article_type, self.article_type)
        pattern = self.attributes.get("Pattern", "")
        return f"Loom {self.gender} {self.colour} {pattern} {kind}".replace("  ", " ")


def draw_shirt(colour: str, pattern: str, sleeve: str, size: tuple[int, int] = (96, 128)) -> Image.Image:
    """Draw a front view of a shirt whose colour, pattern and sleeve length are visible."""
    w, h = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    body = (int(w * 0.30), int(h * 0.15), int(w * 0.70), int(h * 0.90))
    parts = [body]
    if sleeve == "Long Sleeves":
        parts += [(int(w * 0.10), int(h * 0.17), int(w * 0.30), int(h * 0.85)),
                  (int(w * 0.70), int(h * 0.17), int(w * 0.90), int(h * 0.85))]
    elif sleeve == "Short Sleeves":
        parts += [(int(w * 0.12), int(h * 0.17), int(w * 0.30), int(h * 0.38)),
                  (int(w * 0.70), int(h * 0.17), int(w * 0.88), int(h * 0.38))]
    for box in parts:
        draw.rectangle(box, fill=fill)
        _draw_pattern(draw, box, pattern, fill, w)
    # A neckline so that the picture reads as a garment.
    draw.ellipse((int(w * 0.42), int(h * 0.11), int(w * 0.58), int(h * 0.21)), fill=BACKGROUND)
    return image


def _draw_pattern(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], pattern: str,
                  fill: tuple[int, int, int], width: int) -> None:
    if pattern == "Solid":
        return
    x0, y0, x1, y1 = box
    contrast = (255, 255, 255) if sum(fill) < 450 else (20, 20, 20)
    step = max(4, width // 12)
    line = max(1, step // 3)
    for y in range(y0, y1, step):
        draw.rectangle((x0, y, x1, min(y + line, y1)), fill=contrast)
    if pattern == "Checked":
        for x in range(x0, x1, step):
            draw.rectangle((x, y0, min(x + line, x1), y1), fill=contrast)


def random_product(pid: int, rng: random.Random, other_share: float = 0.1) -> SyntheticProduct:
    """One catalog product; about `other_share` of them are not shirts (and get filtered out)."""
    gender = rng.choice(("Men", "Women"))
    colour = rng.choice(list(COLOURS))
    if rng.random() < other_share:
        article, sub = rng.choice(OTHER_TYPES)
        return SyntheticProduct(pid, article, sub, colour, gender, {})
    article = rng.choice(("Shirts", "Tshirts"))
    attributes = {
        "Pattern": rng.choice(PATTERNS),
        "Sleeve Length": rng.choice(SLEEVES),
        "Fabric": rng.choice(FABRICS),
        "Fit": rng.choice(FITS),
    }
    if article == "Shirts":
        attributes["Collar"] = rng.choice(COLLARS)
        attributes["Sleeve Styling"] = rng.choice(SLEEVE_STYLES) if attributes["Sleeve Length"] != "Sleeveless" else "NA"
    else:
        attributes["Neck"] = rng.choice(NECKS)
    return SyntheticProduct(pid, article, "Topwear", colour, gender, attributes)


def product_json(p: SyntheticProduct) -> dict:
    """The `styles/<id>.json` document, shaped like the real dataset's (only the fields Loom reads matter)."""
    return {
        "meta": {"code": 200, "requestId": f"synthetic-{p.id}"},
        "data": {
            "id": p.id,
            "productDisplayName": p.display_name,
            "baseColour": p.colour,
            "gender": p.gender,
            "articleType": {"id": 0, "typeName": p.article_type, "active": True},
            "subCategory": {"id": 0, "typeName": p.sub_category, "active": True},
            "articleAttributes": {"Body or Garment Size": "Garment Measurements in", **p.attributes},
        },
    }


def csv_row(p: SyntheticProduct, comma_in_name: bool) -> str:
    """One `styles.csv` line. Like the real file, names are not quoted even when they hold commas."""
    name = p.display_name + (", Pack of 1" if comma_in_name else "")
    master = "Apparel" if p.sub_category in ("Topwear", "Bottomwear") else "Accessories"
    fields = [str(p.id), p.gender, master, p.sub_category, p.article_type, p.colour,
              "Summer", "2016", "Casual", name]
    return ",".join(fields)


def write_catalog(out: str | Path, products: int, seed: int = 0, image_size: tuple[int, int] = (96, 128),
                  comma_share: float = 0.02, progress: bool = False) -> list[SyntheticProduct]:
    """Write `styles.csv`, `styles/<id>.json` and `images/<id>.jpg` for `products` products."""
    out = Path(out)
    (out / STYLES_DIR).mkdir(parents=True, exist_ok=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    items = [random_product(10000 + i, rng) for i in range(products)]
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="synthetic catalog", unit="product", file=sys.stderr)
    lines = [",".join(CSV_COLUMNS)]
    for p in iterator:
        lines.append(csv_row(p, rng.random() < comma_share))
        (out / STYLES_DIR / f"{p.id}.json").write_text(json.dumps(product_json(p)), encoding="utf-8")
        pattern = p.attributes.get("Pattern", "Solid")
        sleeve = p.attributes.get("Sleeve Length", "Long Sleeves")
        draw_shirt(p.colour, pattern, sleeve, image_size).save(out / IMAGES_DIR / f"{p.id}.jpg", quality=90)
    (out / STYLES_CSV).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return items


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 96x128, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("image size must be at least 16x16")
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="catalog folder to write")
    parser.add_argument("--products", type=int, default=1000, help="number of products (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=parse_size, default=(96, 128), help="WxH of each photo")
    args = parser.parse_args(argv)
    if args.products < 1:
        parser.error("--products must be at least 1")
    items = write_catalog(args.out, args.products, args.seed, args.image_size, progress=sys.stderr.isatty())
    shirts = sum(p.article_type in ("Shirts", "Tshirts") for p in items)
    print(f"wrote {len(items)} products ({shirts} shirts and t-shirts) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
