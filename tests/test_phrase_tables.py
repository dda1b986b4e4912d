"""Phrase tables: the catalog vocabulary first, the shipped style tables, custom tables, bad files refused."""

from __future__ import annotations

import pytest

from loom.schema import AttributeSchema
from training import phrase_tables as pt


def schema() -> AttributeSchema:
    s = AttributeSchema.from_names(["baseColour", "Pattern"])
    s.count("baseColour", "Green")
    s.count("Pattern", "Striped")
    return s


def test_the_catalog_table_comes_first_then_the_shipped_style_tables():
    tables = pt.all_tables(schema(), ["Shirts", "Tshirts"])
    assert list(tables)[0] == "catalog" and tables["catalog"] == ["shirts", "tshirts", "green", "striped"]
    assert {"photography", "lighting", "mediums", "movements"} <= set(tables)
    assert all(len(p) >= 5 for name, p in tables.items() if name != "catalog")


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
