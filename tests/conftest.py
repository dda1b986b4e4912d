"""Shared fixtures: a synthetic catalog and a small, untrained model artifact in the real format."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

pytest_plugins = ["fixtures_training"]


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory) -> Path:
    """A 240-product synthetic catalog in the Kaggle layout (written once per test session)."""
    from training.synthetic import write_catalog

    out = tmp_path_factory.mktemp("catalog")
    write_catalog(out, products=240, seed=7)
    return out


@pytest.fixture(scope="session")
def untrained_artifact(tmp_path_factory) -> Path:
    """A model folder in the artifact format (model + processor + manifest) holding an untrained tiny BLIP-2.

    Its answers are meaningless; it is for tests of loading, batching, equivalence and the HTTP contract.
    """
    from inference.schema import DEFAULT_ATTRIBUTES, AttributeSchema, write_manifest
    from training import synthetic, tiny_base

    schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
    for value in synthetic.COLOURS:
        schema.count("baseColour", value)
    for value in synthetic.PATTERNS:
        schema.count("Pattern", value)
    for value in synthetic.SLEEVES:
        schema.count("Sleeve Length", value)
    values = {name: list(schema.attributes[name].values) for name in schema.names}
    processor = tiny_base.build_processor(tiny_base.vocabulary_texts(schema, values))
    model = tiny_base.build_model(processor, seed=3)
    out = tmp_path_factory.mktemp("untrained_artifact")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_manifest(out, schema, base_model=tiny_base.TINY_BASE_ID, extra={"name": "untrained-tiny"})
    return out
