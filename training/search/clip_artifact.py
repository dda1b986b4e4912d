"""`loom clip-artifact`: turn a real CLIP checkpoint into a Loom CLIP artifact.

    loom clip-artifact --base openai/clip-vit-base-patch32 --out DIR [--catalog DIR | --schema FILE] [--phrases DIR]
    loom clip-artifact --base ./my-clip-folder --out DIR ...
    loom clip-artifact --base s3://bucket/prefix/ --out DIR ...

The checkpoint is loaded with `CLIPModel` and its own tokenizer and image processor, saved with
`save_pretrained`, given a `kind: "clip"` manifest (dimension = the model's projection size) and checked:
one text and one image must embed to vectors of that size and norm 1 before the folder counts as made.
A Hugging Face id needs network access (or a warm HF cache); an S3 prefix is downloaded with boto3 first.

Then its zero-shot part (training/search/clip_zero_shot.py): the attribute schema (`--schema`, the
attribute_schema.json `loom prepare` writes, or made from `--catalog` exactly as `loom prepare` makes it),
tag thresholds calibrated on the photos of the catalog's validation products (only with `--catalog`; without
it every tag is withheld as `not_calibrated`), and the phrase tables with their text embeddings (catalog
vocabulary, built-in style tables, `--phrases DIR` adding or replacing tables).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from loom.artifact import write_clip_manifest
from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, AttributeSchema
from training.catalog import DEFAULT_ARTICLE_TYPES

DEFAULT_CALIBRATION_PRODUCTS = 2000

DEFAULT_TEMPLATES = ["a photo of a {}"]


def download_s3_prefix(uri: str, target: Path) -> Path:
    """Copy every object under an s3://bucket/prefix into `target` (flat checkpoint folders only)."""
    import boto3

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = boto3.client("s3")
    found = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix):].lstrip("/")
            if not name or name.endswith("/"):
                continue
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(destination))
            found += 1
    if not found:
        raise SystemExit(f"clip-artifact: nothing under {uri}")
    return target


def make_clip_artifact(base: str, out: Path, prompt_templates: list[str] | None = None,
                       base_model_id: str | None = None) -> dict:
    """Load `base` (folder or model id), save it as a CLIP artifact in `out`, check it; returns the manifest."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    image_processor = AutoImageProcessor.from_pretrained(base)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    write_clip_manifest(out, base_model=base_model_id or base, dimension=int(model.config.projection_dim),
                        prompt_templates=prompt_templates or DEFAULT_TEMPLATES, normalized=True)
    check_artifact(out)
    from loom.artifact import read_clip_manifest

    return read_clip_manifest(out)


def check_artifact(model_dir: Path) -> None:
    """Embed one text and one image through the serving code; raise if sizes or norms are wrong."""
    import numpy as np
    from PIL import Image

    from runtime.embedder import ClipEmbedder

    embedder = ClipEmbedder.load(model_dir, device="cpu")
    vectors = np.concatenate([embedder.embed_texts(["a shirt"]),
                              embedder.embed_images([Image.new("RGB", (64, 64), (200, 30, 30))])])
    if vectors.shape != (2, embedder.dimension) or not np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4):
        raise SystemExit(f"clip-artifact: {model_dir} embeds to {vectors.shape}, expected 2 x {embedder.dimension} "
                         "unit vectors")


def zero_shot_inputs(args: argparse.Namespace) -> tuple[AttributeSchema | None, list, dict | None]:
    """(schema, validation products, custom tables) from the flags; every mistake is reported before the
    checkpoint is loaded."""
    from training.search.clip_zero_shot import sample_products
    from training.search.phrase_tables import read_tables
    from training.prepare import prepare_products

    custom = read_tables(args.phrases) if args.phrases else None
    schema = AttributeSchema.load(args.schema) if args.schema else None
    validation: list = []
    if args.catalog:
        names = ([n for n in schema.names if n != PRODUCT_TYPE_ATTRIBUTE] if schema is not None
                 else list(DEFAULT_ATTRIBUTES))
        prepared = prepare_products(args.catalog, article_types=args.article_types, attributes=names)
        schema = schema or prepared.schema
        validation = sample_products(prepared.val, args.calibration_products)
        if not validation:
            raise SystemExit(f"clip-artifact: {args.catalog} has no validation products to calibrate tags on")
    return schema, validation, custom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom clip-artifact", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a CLIP model id, a local save_pretrained folder or s3://")
    parser.add_argument("--out", required=True, type=Path, help="artifact folder to write")
    parser.add_argument("--template", action="append", dest="templates",
                        help="query prompt template with one {} (repeatable; default 'a photo of a {}')")
    parser.add_argument("--schema", type=Path, help="attribute_schema.json from `loom prepare` (file or its folder)")
    parser.add_argument("--catalog", type=Path,
                        help="catalog (Kaggle layout): the schema when --schema is absent, and the validation "
                             "products whose photos calibrate the tag thresholds")
    parser.add_argument("--article-types", type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
                        default=list(DEFAULT_ARTICLE_TYPES), help="with --catalog (default: Shirts,Tshirts)")
    parser.add_argument("--calibration-products", type=int, default=DEFAULT_CALIBRATION_PRODUCTS,
                        help=f"at most this many validation photos are tagged (default {DEFAULT_CALIBRATION_PRODUCTS})")
    parser.add_argument("--phrases", type=Path, help="folder of <name>.txt phrase tables to add or replace")
    parser.add_argument("--device", help="where to embed while building (default: cuda when available)")
    args = parser.parse_args(argv)
    for template in args.templates or []:
        if template.count("{}") != 1:
            parser.error(f"--template must hold exactly one {{}}: {template!r}")
    if args.calibration_products < 1:
        parser.error("--calibration-products must be at least 1")
    try:
        schema, validation, custom = zero_shot_inputs(args)
    except (ValueError, OSError) as exc:  # a bad phrase table, schema file or catalog, before any model work
        parser.error(str(exc))
    if args.base.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="loom-clip-") as tmp:
            local = download_s3_prefix(args.base, Path(tmp))
            manifest = make_clip_artifact(str(local), args.out, args.templates, base_model_id=args.base)
    else:
        manifest = make_clip_artifact(args.base, args.out, args.templates)
    print(f"CLIP artifact written to {args.out}: {manifest['base_model']}, "
          f"{manifest['embedding_dimension']}-d, templates {manifest['prompt_templates']}")
    from training.search.clip_zero_shot import build_zero_shot

    summary = build_zero_shot(args.out, schema, validation=validation, custom_tables=custom, device=args.device)
    print(f"zero-shot: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
