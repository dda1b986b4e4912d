"""Index bundles: embed a catalog into a search index bundle, and update a bundle without a rebuild.

The catalog is read with training/catalog.py (bad rows, JSON and images are skipped and counted, as in
`prepare`); photos are opened a batch at a time and each batch's vectors are appended to a file on disk,
so a 44,000-product catalog never sits in memory as images. `add` replaces products whose id is already
in the bundle. To serve a bundle, put it at MODEL_DIR/index of the CLIP artifact (loom.artifact.INDEX_DIR).
The `loom index` command (operations/index.py) runs these and pushes a bundle to OpenSearch.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from runtime.embedder import ClipEmbedder
from runtime.search_index import (ProductRow, SearchIndex, index_manifest, load_embeddings,
                                           write_bundle)
from training.catalog import DEFAULT_ARTICLE_TYPES, IMAGES_DIR, Product, read_catalog

DEFAULT_BATCH = 64


def product_row(product: Product) -> ProductRow:
    """The table row of a catalog product: every attribute found, plus its article type and gender."""
    attributes = dict(product.attributes)
    attributes.setdefault("articleType", product.article_type)
    if product.gender:
        attributes.setdefault("gender", product.gender)
    return ProductRow(product.id, product.display_name, attributes, f"{IMAGES_DIR}/{product.id}.jpg")


def embed_products(embedder: ClipEmbedder, products: Sequence[Product], batch: int = DEFAULT_BATCH,
                   progress: bool | None = None) -> tuple[np.ndarray, list[ProductRow], dict[str, int]]:
    """Embed the products' photos `batch` at a time; (embeddings, rows, skipped counts by reason).

    Vectors go to a temporary file as they are made: only one batch of images is open at a time.
    """
    rows: list[ProductRow] = []
    skipped = {"undecodable_image": 0}
    with tempfile.TemporaryFile() as spill:
        with tqdm(total=len(products), desc="embedding catalog", unit="product", file=sys.stderr,
                  disable=None if progress is None else not progress, mininterval=0.5) as bar:
            for start in range(0, len(products), batch):
                images, kept = [], []
                for product in products[start:start + batch]:
                    try:
                        with Image.open(product.image_path) as image:
                            images.append(image.convert("RGB"))
                        kept.append(product)
                    except (OSError, ValueError, SyntaxError):
                        skipped["undecodable_image"] += 1  # passed the header check, fails to decode
                if images:
                    spill.write(embedder.embed_images(images).tobytes())
                    rows += [product_row(p) for p in kept]
                bar.update(min(batch, len(products) - start))
        spill.seek(0)
        embeddings = np.frombuffer(spill.read(), dtype=np.float32).reshape(len(rows), embedder.dimension)
    return embeddings.copy(), rows, skipped


def read_products(catalog: Path, article_types: Iterable[str] | None, ids: set[str] | None = None):
    reading = read_catalog(catalog, article_types=article_types, attributes=None, require_attributes=False)
    products = [p for p in reading.products if ids is None or p.id in ids]
    return products, {k: v for k, v in reading.skipped.items() if v}


def build(catalog: Path, model: Path, out: Path, *, batch: int = DEFAULT_BATCH,
          article_types: Iterable[str] | None = DEFAULT_ARTICLE_TYPES, progress: bool | None = None) -> dict:
    """Embed a catalog into a new bundle at `out`; returns its manifest."""
    embedder = ClipEmbedder.load(model)
    products, skipped = read_products(catalog, article_types)
    embeddings, rows, embed_skipped = embed_products(embedder, products, batch, progress)
    skipped.update({k: v for k, v in embed_skipped.items() if v})
    manifest = index_manifest(embedder.model_info, embedder.dimension, len(rows), skipped=skipped,
                              catalog=str(catalog))
    write_bundle(out, embeddings, rows, manifest)
    return manifest


def add(index_dir: Path, catalog: Path, model: Path, *, ids: set[str] | None = None, batch: int = DEFAULT_BATCH,
        article_types: Iterable[str] | None = DEFAULT_ARTICLE_TYPES, progress: bool | None = None) -> dict:
    """Embed catalog products (all, or `ids`) and add them to a bundle, replacing rows with the same id."""
    embedder = ClipEmbedder.load(model)
    embeddings, rows, manifest = load_embeddings(index_dir)
    SearchIndex(embeddings, rows, manifest).check_embedder(embedder.model_info)
    products, skipped = read_products(catalog, article_types, ids)
    if ids is not None and len(products) < len(ids):
        missing = sorted(ids - {p.id for p in products})
        raise SystemExit(f"index add: products {missing[:10]} are not usable in {catalog} (skipped: {skipped})")
    new_embeddings, new_rows, _ = embed_products(embedder, products, batch, progress)
    fresh = {row.id for row in new_rows}
    keep = [i for i, row in enumerate(rows) if row.id not in fresh]
    replaced = len(rows) - len(keep)
    embeddings = np.concatenate([embeddings[keep], new_embeddings]).astype(np.float32, copy=False)
    rows = [rows[i] for i in keep] + new_rows
    manifest = index_manifest(embedder.model_info, embedder.dimension, len(rows),
                              **{k: v for k, v in manifest.items() if k in ("skipped", "catalog")})
    write_bundle(index_dir, embeddings, rows, manifest)
    return {**manifest, "added": len(new_rows) - replaced, "replaced": replaced}


MAX_REPORTED_LINES = 20  # line numbers kept per skip reason in the manifest (the counts are always complete)


def embedding_record(raw: bytes, dimension: int) -> tuple[str, str | None, np.ndarray | None]:
    """One Batch Transform output line -> (id, skip reason or None, unit vector or None). Never raises: a
    line that is not a JSON object with a string/integer id and `dimension` finite numbers is skipped."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        # ValueError covers JSONDecodeError (truncated line) and Python's int limit (> 4,300 digits);
        # RecursionError: deep nesting. Neither is a JSONDecodeError, so both are named here.
        return "", "malformed_line", None
    if not isinstance(record, dict):
        return "", "malformed_line", None
    pid = record.get("id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
        return "", "malformed_line", None
    pid = str(pid)
    if "error" in record:
        return pid, "batch_error", None
    values = record.get("embedding")
    if (not isinstance(values, list) or len(values) != dimension
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        return pid, "bad_embedding", None  # a string, a ragged or nested array, objects, the wrong size
    try:
        vector = np.asarray(values, dtype=np.float32)
    except (ValueError, OverflowError):
        return pid, "bad_embedding", None
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or not np.isfinite(norm) or norm == 0.0:
        return pid, "bad_embedding", None
    return pid, None, vector / np.float32(norm)


def import_embeddings(embeddings_jsonl: Path, catalog: Path, model: Path, out: Path, *,
                      article_types: Iterable[str] | None = DEFAULT_ARTICLE_TYPES) -> dict:
    """A bundle from Batch Transform output lines ({"id", "embedding"} or {"id", "error"}) and the catalog.

    The model is not loaded: its manifest gives the dimension and its weight files the checksum, so the
    bundle is tied to the weights that made the vectors. Bad lines are skipped and counted, never fatal:
    `malformed_line` (not JSON, not an object, no usable id, undecodable UTF-8, a number past Python's
    4,300-digit limit), `batch_error` (the job's {"id", "error"}), `bad_embedding` (not a list of
    `dimension` finite numbers, or a zero vector), `not_in_catalog`, `duplicate_id`. The manifest's
    `skipped` holds the counts and `skipped_lines` the first MAX_REPORTED_LINES line numbers of each reason.
    """
    from runtime.embedder import model_checksum
    from loom.artifact import read_clip_manifest

    manifest = read_clip_manifest(model)
    dimension = int(manifest["embedding_dimension"])
    products, skipped = read_products(catalog, article_types)
    by_id = {p.id: p for p in products}
    vectors, rows, seen = [], [], set()
    counts = {"malformed_line": 0, "batch_error": 0, "bad_embedding": 0, "not_in_catalog": 0, "duplicate_id": 0}
    lines: dict[str, list[int]] = {}
    with embeddings_jsonl.open("rb") as handle:  # bytes: one undecodable line must not stop the file
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            pid, reason, vector = embedding_record(raw, dimension)
            if reason is None:
                reason = "not_in_catalog" if pid not in by_id else "duplicate_id" if pid in seen else None
            if reason:
                counts[reason] += 1
                numbers = lines.setdefault(reason, [])
                if len(numbers) < MAX_REPORTED_LINES:
                    numbers.append(number)
                continue
            seen.add(pid)
            vectors.append(vector)
            rows.append(product_row(by_id[pid]))
    skipped.update({k: v for k, v in counts.items() if v})
    embedder = {"base_model": manifest["base_model"], "checksum": model_checksum(model)}
    result = index_manifest(embedder, dimension, len(rows), skipped=skipped, skipped_lines=lines,
                            catalog=str(catalog), source=str(embeddings_jsonl))
    write_bundle(out, np.asarray(vectors, dtype=np.float32).reshape(len(rows), dimension), rows, result)
    return result


def skipped_lines_text(result: dict) -> str:
    """'; malformed_line at lines 3, 7, ...' for the CLI (the first MAX_REPORTED_LINES of each reason)."""
    parts = []
    for reason, numbers in (result.get("skipped_lines") or {}).items():
        more = result["skipped"].get(reason, len(numbers)) - len(numbers)
        parts.append(f"{reason} at line{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
                     + (f" and {more} more" if more > 0 else ""))
    return "; ".join(parts)


def remove(index_dir: Path, ids: set[str]) -> dict:
    """Drop the rows whose id is in `ids`; unknown ids are an error (nothing is written)."""
    embeddings, rows, manifest = load_embeddings(index_dir)
    present = {row.id for row in rows}
    unknown = sorted(ids - present)
    if unknown:
        raise SystemExit(f"index remove: ids {unknown[:10]} are not in {index_dir}; nothing was removed")
    keep = [i for i, row in enumerate(rows) if row.id not in ids]
    manifest = {**manifest, "count": len(keep)}
    write_bundle(index_dir, np.ascontiguousarray(embeddings[keep]), [rows[i] for i in keep], manifest)
    return {**manifest, "removed": len(rows) - len(keep)}
