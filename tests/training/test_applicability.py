"""Applicability: which attributes each article type carries, from the catalog; the product type as a question."""

from __future__ import annotations

import csv

import pytest

from loom.schema import PRODUCT_TYPE_ATTRIBUTE, AttributeSchema, SchemaError
from training.prepare import TRAIN_FILE, VAL_FILE, prepare
from training.synthetic import write_catalog


def test_prepare_records_applicability_and_asks_the_product_type_first(tmp_path):
    write_catalog(tmp_path / "catalog", 120, seed=4, image_size=(32, 32))
    report = prepare(tmp_path / "catalog", tmp_path / "out", article_types=["Shirts", "Tshirts"], progress=False)
    schema = AttributeSchema.load(tmp_path / "out")
    assert schema.names[0] == PRODUCT_TYPE_ATTRIBUTE and schema.type_attribute == PRODUCT_TYPE_ATTRIBUTE
    assert report["settings"]["product_type_question"] is True
    # The synthetic catalog gives shirts collars and sleeve styling, T-shirts necks (training/synthetic.py).
    assert set(schema.applies_to) == {"Shirts", "Tshirts"}
    assert "Collar" in schema.applies_to["Shirts"] and "Collar" not in schema.applies_to["Tshirts"]
    assert "Neck" in schema.applies_to["Tshirts"] and "Neck" not in schema.applies_to["Shirts"]
    assert not schema.applies("Neck", "Shirts") and schema.applies("baseColour", "Tshirts")
    assert schema.applies_to_every_type("Pattern") and not schema.applies_to_every_type("Collar")
    assert set(schema.attributes[PRODUCT_TYPE_ATTRIBUTE].values) == {"Shirts", "Tshirts"}
    for name in (TRAIN_FILE, VAL_FILE):
        with (tmp_path / "out" / name).open() as handle:
            rows = list(csv.DictReader(handle))
        by_product: dict[str, list[str]] = {}
        for row in rows:
            by_product.setdefault(row["id"], []).append(row["Answer"])
        # Every product's first question is its type, and its other answers apply to that type.
        for answers in by_product.values():
            kind = schema.parse_answer(answers[0])
            assert kind[0] == PRODUCT_TYPE_ATTRIBUTE
            assert all(schema.applies(schema.parse_answer(a)[0], kind[1]) for a in answers[1:])


def test_one_article_type_asks_no_type_question(tmp_path):
    write_catalog(tmp_path / "catalog", 60, seed=2, image_size=(32, 32))
    prepare(tmp_path / "catalog", tmp_path / "out", article_types=["Tshirts"], attributes=["Neck", "baseColour"],
            progress=False)
    schema = AttributeSchema.load(tmp_path / "out")
    assert schema.names == ["Neck", "baseColour"] and schema.type_attribute is None
    assert schema.applies_to == {"Tshirts": ["Neck", "baseColour"]}


def test_product_type_names_match_loosely():
    schema = AttributeSchema.from_names([PRODUCT_TYPE_ATTRIBUTE, "Neck"])
    schema.applies_to = {"Shirts": [], "Tshirts": ["Neck"]}
    assert schema.match_product_type("t-shirt") == "Tshirts"
    assert schema.match_product_type("SHIRTS") == "Shirts"
    assert schema.match_product_type("shirt") == "Shirts"
    assert schema.match_product_type("dress") is None


def test_schemas_without_applicability_load_and_apply_everything():
    old = {"product_noun": "shirt", "attributes": [{"name": "Neck", "question": "q?", "values": {"V Neck": 3}}]}
    schema = AttributeSchema.from_dict(old)
    assert schema.applies_to is None and schema.type_attribute is None and schema.product_types == []
    assert schema.applies("Neck", "Shirts") and "applies_to" not in schema.to_dict()
    with pytest.raises(SchemaError, match="applies_to names attributes"):
        AttributeSchema.from_dict({**old, "applies_to": {"Shirts": ["Collar"]}})
    with pytest.raises(SchemaError, match="type_attribute"):
        AttributeSchema.from_dict({**old, "type_attribute": "articleType"})
