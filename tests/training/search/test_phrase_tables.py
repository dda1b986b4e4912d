"""Phrase tables: the catalog vocabulary first, the shipped style tables, custom tables, bad files refused."""

from __future__ import annotations

import pytest

from loom.schema import AttributeSchema
from training.search import phrase_tables as pt


def schema() -> AttributeSchema:
    s = AttributeSchema.from_names(["baseColour", "Pattern", "Sleeve Length", "Fabric"])
    s.count("baseColour", "Green")
    s.count("Pattern", "Striped")
    s.count("Sleeve Length", "Long Sleeves")
    return s


def test_the_catalog_tables_come_first_one_per_attribute_then_the_shipped_style_tables():
    tables = pt.all_tables(schema(), ["Shirts", "Tshirts"])
    assert list(tables)[:4] == ["catalog-colour", "catalog-pattern", "catalog-sleeve-length", "catalog-product-type"]
    assert tables["catalog-colour"] == ["green"] and tables["catalog-product-type"] == ["shirts", "tshirts"]
    assert "catalog-fabric" not in tables  # an attribute with no known value has no table
    assert list(tables)[4:8] == ["lighting", "mediums", "movements", "photography"]
    assert all(len(p) >= 5 for name, p in tables.items() if not name.startswith("catalog"))


def test_attributes_clip_can_tell_lead_the_catalog_tables():
    s = AttributeSchema.from_names(["articleType", "Fabric", "Pattern", "baseColour"])
    for name, value in [("articleType", "Shirts"), ("Fabric", "Cotton"), ("Pattern", "Striped"),
                        ("baseColour", "Green")]:
        s.count(name, value)
    tables = pt.catalog_tables(s, ["Shirts", "Tshirts"], first=["baseColour", "Pattern", "Unknown"])
    assert list(tables) == ["catalog-colour", "catalog-pattern", "catalog-product-type", "catalog-fabric"]
    assert tables["catalog-product-type"] == ["shirts", "tshirts"]  # article types and values, once each


def test_custom_tables_add_or_replace(tmp_path):
    (tmp_path / "lighting.txt").write_text("# mine\nneon glow\n\nneon glow\ncandle light  # warm\n")
    (tmp_path / "brands.txt").write_text("house brand\n")
    tables = pt.all_tables(schema(), custom=pt.read_tables(tmp_path))
    assert tables["lighting"] == ["neon glow", "candle light"] and tables["brands"] == ["house brand"]


@pytest.mark.parametrize("name, text, fragment", [
    ("empty.txt", "# nothing\n", "holds no phrases"),
    ("long.txt", "x" * 200 + "\n", ":1: a phrase is at most"),
    ("Bad Name.txt", "ok\n", "a table name is"),
])
def test_bad_tables_are_refused_with_the_file_and_line(tmp_path, name, text, fragment):
    (tmp_path / name).write_text(text)
    with pytest.raises(pt.PhraseTableError, match=fragment):
        pt.read_tables(tmp_path)
    with pytest.raises(pt.PhraseTableError, match="not a folder"):
        pt.read_tables(tmp_path / "missing")
