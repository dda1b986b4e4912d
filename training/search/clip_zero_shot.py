"""The zero-shot part of a CLIP artifact, made once when the artifact is built (`loom tiny-clip`,
`loom clip-artifact`), so that the endpoint computes and downloads nothing for it at run time:

1. the attribute schema (known values per attribute) and the tag prompt templates, into the manifest;
2. tag thresholds: the validation products' photos are tagged through the served code path
   (`ClipService.tag_images`), each attribute's (correct, probability) records are calibrated with
   loom/calibration.py under the attribute model's rule (training/calibrate.py: the target precision shown
   with 95 % confidence by fixed-sequence binomial tests, so at least 59 stated photos at 0.95), and stored
   in the manifest with that evidence (records in evaluation/calibration.csv). An attribute whose photos do
   not show the target at any threshold states no tag (`not_enough_evidence`, as the attribute model says);
   an artifact built without validation photos states none either (`not_calibrated`);
3. the phrase tables (the catalog's vocabulary per attribute, the calibrated attributes first, then the
   built-in style tables, then custom ones) and their text embeddings, float16, in MODEL_DIR/phrases/.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from runtime.clip_service import ClipService
from runtime.zero_shot import DEFAULT_TEMPLATES
from loom.artifact import PhrasePaths, make_world_readable, write_phrase_tables, write_zero_shot
from loom.calibration import DEFAULT_TARGET_PRECISION
from loom.schema import AttributeSchema
from training.calibrate import calibrate_artifact
from training.catalog import Product
from training.search.phrase_tables import all_tables

PHRASE_DTYPE = "float16"  # halves the artifact's phrase embeddings; cosines move by < 1e-3
TAG_BATCH = 64
TEXT_BATCH = 256


def tag_records(service: ClipService, products: Sequence[Product]) -> list[tuple[str, bool, float]]:
    """(attribute, predicted == true value, probability of the predicted value) for every attribute each
    product carries, tagged as the endpoint tags (every schema attribute, its known values as candidates)."""
    records = []
    for start in range(0, len(products), TAG_BATCH):
        chunk = products[start:start + TAG_BATCH]
        images = []
        for product in chunk:
            with Image.open(product.image_path) as image:
                images.append(image.convert("RGB"))
        for product, answer in zip(chunk, service.tag_images(images), strict=True):
            for name, result in {**answer["tags"], **answer["withheld"]}.items():
                if name in product.attributes:
                    records.append((name, result["value"] == product.attributes[name], result["probability"]))
    return records


def sample_products(products: Sequence[Product], limit: int, seed: int = 0) -> list[Product]:
    """At most `limit` products, chosen at random but the same for the same products and seed, by id order."""
    ordered = sorted(products, key=lambda p: p.id)
    if len(ordered) <= limit:
        return ordered
    return sorted(random.Random(seed).sample(ordered, limit), key=lambda p: p.id)


def write_phrases(model_dir, tables: Mapping[str, list[str]], service: ClipService) -> int:
    """Embed every phrase verbatim with the artifact's text encoder; write the tables and embeddings."""
    phrases = [p for table in tables.values() for p in table]
    vectors = np.concatenate([service.embedder.embed_texts(phrases[i:i + TEXT_BATCH], templated=False)
                              for i in range(0, len(phrases), TEXT_BATCH)])
    paths = PhrasePaths.of(model_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    np.save(paths.embeddings, vectors.astype(PHRASE_DTYPE))
    write_phrase_tables(model_dir, tables, PHRASE_DTYPE)
    return len(phrases)


def build_zero_shot(model_dir, schema: AttributeSchema | None, *, validation: Sequence[Product] = (),
                    custom_tables: Mapping[str, list[str]] | None = None,
                    target_precision: float = DEFAULT_TARGET_PRECISION, device: str | None = None) -> dict[str, Any]:
    """Steps 1-3 of the module docstring on a saved CLIP artifact; returns a summary for the log.

    Without a schema there is nothing to calibrate: tags then need caller labels, and the phrase tables are
    the style and custom ones only."""
    if schema is None and validation:
        raise ValueError("validation photos need a schema to be tagged against")
    if schema is not None:
        write_zero_shot(model_dir, schema, list(DEFAULT_TEMPLATES))
    service = ClipService.load(model_dir, device=device)
    calibrated: dict[str, Any] = {}
    if validation:
        calibration = calibrate_artifact(model_dir, tag_records(service, validation), target_precision)
        calibrated = {name: a.threshold if a.threshold is not None else a.reason
                      for name, a in calibration.attributes.items()}
    first = [name for name, threshold in calibrated.items() if isinstance(threshold, float)]
    tables = all_tables(schema or AttributeSchema([]), schema.product_types if schema else (), custom_tables, first)
    count = write_phrases(model_dir, tables, service)
    make_world_readable(model_dir)
    return {"attributes": len(schema) if schema else 0, "validation_products": len(validation),
            "thresholds": calibrated or "not calibrated (no validation photos): every tag is withheld as "
                                        "not_calibrated unless the request gives labels and min_probability",
            "phrase_tables": list(tables), "phrases": count}
