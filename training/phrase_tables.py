"""Phrase tables for prompt building: the catalog's own vocabulary first, then style tables.

A table is a text file, one phrase per line (`#` starts a comment). Loom ships four style tables
(training/phrases/: photography, lighting, mediums, movements); `loom clip-artifact --phrases DIR` adds or
replaces tables with a folder of `<name>.txt` files. Their text embeddings are computed when the artifact
is built and ship inside it, so nothing is downloaded when the endpoint runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

from loom.schema import AttributeSchema

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


def catalog_table(schema: AttributeSchema, article_types: Iterable[str] = ()) -> list[str]:
    """The catalog's vocabulary: article types, then every known value of every attribute."""
    phrases: dict[str, None] = {" ".join(t.split()).lower(): None for t in article_types if t.strip()}
    for attribute in schema.attributes.values():
        for value in attribute.values:
            phrases[value.lower()] = None
    return list(phrases)


def all_tables(schema: AttributeSchema, article_types: Iterable[str] = (),
               custom: Mapping[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The catalog table first, then the built-in style tables, with custom tables added or replacing them."""
    tables = {CATALOG_TABLE: catalog_table(schema, article_types), **read_tables(BUILTIN_DIR)}
    tables.update(custom or {})
    return tables
