"""Phrase tables for prompt building: the catalog's own vocabulary first, then style tables.

The catalog's vocabulary is one table per attribute (`catalog-colour`, `catalog-pattern`, ...; article types
join the product type's table), so that `classic` interrogation takes the best value of each attribute;
the attributes CLIP was shown to tell on validation photos (those whose tag threshold was calibrated) come
first. A table is a text file, one phrase per line (`#` starts a comment). Loom ships four style tables
(training/search/phrases/: photography, lighting, mediums, movements); `loom clip-artifact --phrases DIR` adds or
replaces tables with a folder of `<name>.txt` files. Their text embeddings are computed when the artifact
is built and ship inside it, so nothing is downloaded when the endpoint runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

from runtime.zero_shot import EXCLUSIVE_TABLE_PREFIX
from loom.schema import PRODUCT_TYPE_ATTRIBUTE, AttributeSchema, attribute_label

BUILTIN_DIR = Path(__file__).resolve().parent / "phrases"
CATALOG_TABLE = "catalog"
MAX_PHRASES = 5000  # per table: its embeddings ship in the artifact
MAX_PHRASE_CHARS = 120
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class PhraseTableError(ValueError):
    """A phrase table file that cannot be used; the message names the file and line."""


def read_table(path: str | Path) -> list[str]:
    """The phrases of one file, in order, without blanks, comments or repeats."""
    path = Path(path)
    phrases: dict[str, None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = " ".join(line.split("#", 1)[0].split())
        if not text:
            continue
        if len(text) > MAX_PHRASE_CHARS:
            raise PhraseTableError(f"{path}:{number}: a phrase is at most {MAX_PHRASE_CHARS} characters")
        phrases[text] = None
    if not phrases:
        raise PhraseTableError(f"{path} holds no phrases")
    if len(phrases) > MAX_PHRASES:
        raise PhraseTableError(f"{path} holds {len(phrases)} phrases; the limit is {MAX_PHRASES}")
    return list(phrases)


def read_tables(folder: str | Path) -> dict[str, list[str]]:
    """Every `<name>.txt` of a folder as a table, by name (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhraseTableError(f"{folder} is not a folder of <name>.txt phrase tables")
    tables = {}
    for path in sorted(folder.glob("*.txt")):
        if not _NAME.match(path.stem):
            raise PhraseTableError(f"{path.name}: a table name is lower-case letters, digits, - and _ (at most 40)")
        tables[path.stem] = read_table(path)
    if not tables:
        raise PhraseTableError(f"{folder} holds no <name>.txt phrase tables")
    return tables


def table_name(attribute_label: str) -> str:
    """The catalog table of an attribute: "Sleeve Length" -> "catalog-sleeve-length"."""
    slug = re.sub(r"[^a-z0-9]+", "-", attribute_label.lower()).strip("-")
    return f"{EXCLUSIVE_TABLE_PREFIX}{slug}"[:40]  # the server names at most one phrase of such a table


def catalog_tables(schema: AttributeSchema, article_types: Iterable[str] = (),
                   first: Iterable[str] = ()) -> dict[str, list[str]]:
    """One table per attribute with known values (lower-cased); the attributes in `first` lead, then the rest
    in schema order. Article types go into the product type's table (made when the schema has none)."""
    types = [" ".join(t.split()).lower() for t in article_types if t.strip()]
    first = [n for n in first if n in schema]
    tables: dict[str, list[str]] = {}
    for name in [*first, *(n for n in schema.names if n not in first)]:
        phrases = [v.lower() for v in schema.attributes[name].values]
        if name == PRODUCT_TYPE_ATTRIBUTE:
            phrases = types + phrases
        if phrases:
            tables.setdefault(table_name(schema.attributes[name].label), []).extend(phrases)
    if types and PRODUCT_TYPE_ATTRIBUTE not in schema:
        tables[table_name(attribute_label(PRODUCT_TYPE_ATTRIBUTE))] = types
    return {name: list(dict.fromkeys(phrases)) for name, phrases in tables.items()}


def all_tables(schema: AttributeSchema, article_types: Iterable[str] = (),
               custom: Mapping[str, list[str]] | None = None, first: Iterable[str] = ()) -> dict[str, list[str]]:
    """The catalog tables first, then the built-in style tables; custom tables are added or replace one."""
    tables = {**catalog_tables(schema, article_types, first), **read_tables(BUILTIN_DIR)}
    tables.update(custom or {})
    return tables
