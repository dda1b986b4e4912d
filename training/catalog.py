"""Reading a product catalog in the Kaggle *Fashion Product Images* layout.

    CATALOG/styles.csv         id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName
    CATALOG/styles/<id>.json   {"data": {"baseColour": ..., "articleAttributes": {"Fabric": ..., ...}, ...}}
    CATALOG/images/<id>.jpg    the photo

`read_catalog` turns such a folder into `Product`s and counts every row it could not use, by reason.
One bad row, file or image never stops the reading; a folder that is not a catalog raises `CatalogError`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from loom.image_header import ImageError, inspect_image_file
from loom.schema import DEFAULT_ATTRIBUTES

DEFAULT_ARTICLE_TYPES = ("Shirts", "Tshirts")
# Values the catalog uses to mean "unknown".
_ABSENT = {"", "na", "n/a", "none", "null", "nan", "-"}

STYLES_CSV = "styles.csv"
STYLES_DIR = "styles"
IMAGES_DIR = "images"
CSV_COLUMNS = (
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
)
NAME_COLUMN = "productDisplayName"

# Why a row of styles.csv did not become a Product, in the order the checks run: a row is counted
# under the first reason that applies.
SKIP_REASONS = (
    "malformed_row",          # wrong number of fields that cannot be recovered, or an id that is not a number
    "duplicate_id",           # the id was already read from an earlier row (the first row wins)
    "filtered_article_type",  # articleType is not one of those asked for
    "missing_json",           # styles/<id>.json does not exist
    "bad_json",               # styles/<id>.json is not JSON, or has no "data" object
    "no_attributes",          # none of the attributes asked for has a value (all missing, empty or "NA")
    "missing_image",          # images/<id>.jpg does not exist
    "unreadable_image",       # images/<id>.jpg is empty, not an image, or truncated
)
# How many examples of each skip reason are kept for the report (the counts are always complete).
MAX_EXAMPLES_PER_REASON = 10
_TYPES = (str, int, float)


def is_absent(value: Any) -> bool:
    """True for values the catalog uses to mean 'unknown' (missing, empty, "NA", ...)."""
    if value is None:
        return True
    return str(value).strip().lower() in _ABSENT


def clean_value(value: Any) -> str | None:
    """The value as a trimmed string with inner whitespace collapsed, or None when it is absent."""
    if is_absent(value):
        return None
    return " ".join(str(value).split())


class CatalogError(ValueError):
    """A folder that is not a catalog, or a styles.csv whose header is not the catalog's."""


@dataclass(frozen=True)
class Product:
    """One usable catalog product: its photo and the present, cleaned values of the attributes asked for."""

    id: str
    article_type: str
    attributes: dict[str, str]
    image_path: Path
    display_name: str
    gender: str = ""


@dataclass(frozen=True)
class Skip:
    """A row that did not become a Product: where it is, which id (if any) and why."""

    reason: str
    line: int
    id: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "detail": self.detail}


@dataclass
class CatalogReading:
    """The products of a catalog and what was skipped (counts per reason, plus a few examples each)."""

    products: list[Product]
    rows_read: int = 0
    recovered_rows: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    examples: dict[str, list[Skip]] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, line: int, product_id: str, detail: str) -> None:
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES_PER_REASON:
            kept.append(Skip(reason, line, product_id, detail))


def check_catalog(catalog_dir: str | Path) -> Path:
    """The catalog folder as a Path; CatalogError when it lacks styles.csv, styles/ or images/."""
    root = Path(catalog_dir)
    if not root.is_dir():
        raise CatalogError(f"{root} is not a catalog: no such folder")
    missing = [
        label for label, ok in (
            (STYLES_CSV, (root / STYLES_CSV).is_file()),
            (f"{STYLES_DIR}/ (one <id>.json per product)", (root / STYLES_DIR).is_dir()),
            (f"{IMAGES_DIR}/ (one <id>.jpg per product)", (root / IMAGES_DIR).is_dir()),
        ) if not ok
    ]
    if missing:
        raise CatalogError(
            f"{root} is not a catalog in the Fashion Product Images layout: missing {', '.join(missing)}"
        )
    return root


def image_path(catalog_dir: str | Path, product_id: str) -> Path:
    """Where the photo of a product lives in a catalog: images/<id>.jpg."""
    return Path(catalog_dir) / IMAGES_DIR / f"{product_id}.jpg"


# ---------------------------------------------------------------------------------------------------
# styles.csv


def styles_row(fields: Sequence[str], columns: Sequence[str] = CSV_COLUMNS) -> tuple[dict[str, str] | None, str]:
    """(row as {column: value}, "") or (None, why the row is malformed and cannot be recovered).

    Real copies of styles.csv hold product names with unquoted commas. A row with extra fields is
    recovered only when the extra fields can belong to nothing but the name: the name is the last
    column and the fields before it have their expected shapes (a numeric id, a year or nothing).
    """
    n, count = len(columns), len(fields)
    if count < n:
        return None, f"{count} fields, expected {n}"
    extra = count > n
    if extra:
        if columns[-1] != NAME_COLUMN:
            return None, f"{count} fields, expected {n}, and {NAME_COLUMN} is not the last column"
        fields = [*fields[: n - 1], ",".join(fields[n - 1:])]
    fields = [f.strip() for f in fields]
    row = dict(zip(columns, fields))
    if extra and "year" in row and not _looks_like_year(row["year"]):
        return None, (f"{count} fields, expected {n}; year is {row['year']!r}, so "
                      "the extra fields are not only in the name")
    if not row["id"].isdigit():
        return None, f"id {row['id'][:40]!r} is not a number"
    return row, ""


def _looks_like_year(text: str) -> bool:
    return text == "" or (text.isdigit() and len(text) == 4)


def read_styles(csv_path: str | Path) -> Iterator[tuple[int, list[str], dict[str, str] | None, str]]:
    """(line number, raw fields, row or None, why it is malformed) for each non-blank data row of a styles.csv.

    Each physical line is parsed on its own, so a stray quote in one name cannot swallow the rows
    after it (the catalog has no multi-line fields).
    """
    path = Path(csv_path)
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader([handle.readline()]), [])
        columns = tuple(h.strip() for h in header)
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise CatalogError(
                f"{path}: header lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}"
            )
        for line_number, text in enumerate(handle, start=2):
            fields = next(csv.reader([text.rstrip("\r\n")]), [])
            if not any(f.strip() for f in fields):
                continue
            yield line_number, fields, *styles_row(fields, columns)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


# ---------------------------------------------------------------------------------------------------
# styles/<id>.json


def product_attributes(
    document: Mapping[str, Any], row: Mapping[str, str], names: Iterable[str] | None
) -> dict[str, str]:
    """The present, cleaned values of the attributes `names` for one product.

    A name is looked up in data.articleAttributes, then in data itself (data.baseColour), then in the
    styles.csv row. With names None: every article attribute plus baseColour.
    """
    data = document["data"]
    article = data.get("articleAttributes")
    article = article if isinstance(article, Mapping) else {}
    if names is None:
        names = [*article, *(["baseColour"] if "baseColour" not in article else [])]
    values: dict[str, str] = {}
    for name in names:
        for source in (article, data, row):
            raw = source.get(name)
            value = clean_value(raw) if isinstance(raw, _TYPES) and not isinstance(raw, bool) else None
            if value is not None:
                values[name] = value
                break
    return values


def load_product_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(document, "") or (None, why): the document must be a JSON object holding a "data" object."""
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON: {exc}"
    except OSError as exc:
        return None, f"cannot read: {exc}"
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        return None, 'no "data" object'
    return document, ""


# ---------------------------------------------------------------------------------------------------
# images/<id>.jpg


def image_problem(path: Path) -> str | None:
    """Why the image cannot be used, or None when it looks whole: the one header check of loom.image_header
    (format, size, pixel limit, truncation), reading the file's first and last bytes, never its pixels."""
    try:
        inspect_image_file(path)
    except ImageError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read the image: {exc}"
    return None


# ---------------------------------------------------------------------------------------------------


def read_catalog(
    catalog_dir: str | Path,
    *,
    article_types: Iterable[str] | None = DEFAULT_ARTICLE_TYPES,
    attributes: Iterable[str] | None = DEFAULT_ATTRIBUTES,
    require_attributes: bool = True,
    progress: bool | None = None,
) -> CatalogReading:
    """Read the products of a catalog folder, skipping and counting the rows that cannot be used.

    article_types None keeps every type; attributes None keeps every attribute found. With
    require_attributes False a product with no attribute values is kept (for inference on a catalog).
    progress None shows a bar only on a terminal.
    """
    root = check_catalog(catalog_dir)
    wanted_types = None if article_types is None else set(article_types)
    names = None if attributes is None else list(attributes)
    reading = CatalogReading(products=[])
    seen: set[str] = set()
    csv_path = root / STYLES_CSV
    rows = read_styles(csv_path)
    bar = tqdm(
        total=max(0, _count_lines(csv_path) - 1), desc="reading catalog", unit="row", file=sys.stderr,
        disable=None if progress is None else not progress, mininterval=0.5,
    )
    with bar:
        for line, fields, row, why in rows:
            bar.update(1)
            reading.rows_read += 1
            if row is None:
                reading.skip("malformed_row", line, _raw_id(fields), why)
                continue
            pid = row["id"]
            if len(fields) > len(row):  # extra fields were folded into the name
                reading.recovered_rows += 1
            if pid in seen:
                reading.skip("duplicate_id", line, pid, "id already read from an earlier row")
                continue
            seen.add(pid)
            if wanted_types is not None and row["articleType"] not in wanted_types:
                reading.skip("filtered_article_type", line, pid, f"articleType {row['articleType']!r}")
                continue
            product = _read_product(root, line, row, names, require_attributes, reading)
            if product is not None:
                reading.products.append(product)
    return reading


def _read_product(
    root: Path, line: int, row: dict[str, str], names: list[str] | None, require_attributes: bool,
    reading: CatalogReading,
) -> Product | None:
    pid = row["id"]
    json_path = root / STYLES_DIR / f"{pid}.json"
    if not json_path.is_file():
        reading.skip("missing_json", line, pid, f"no {STYLES_DIR}/{pid}.json")
        return None
    document, why = load_product_json(json_path)
    if document is None:
        reading.skip("bad_json", line, pid, f"{STYLES_DIR}/{pid}.json: {why}")
        return None
    values = product_attributes(document, row, names)
    if require_attributes and not values:
        reading.skip("no_attributes", line, pid, "every attribute asked for is missing, empty or NA")
        return None
    photo = image_path(root, pid)
    if not photo.is_file():
        reading.skip("missing_image", line, pid, f"no {IMAGES_DIR}/{pid}.jpg")
        return None
    problem = image_problem(photo)
    if problem is not None:
        reading.skip("unreadable_image", line, pid, f"{IMAGES_DIR}/{pid}.jpg: {problem}")
        return None
    name = row["productDisplayName"] or str(document["data"].get("productDisplayName") or "")
    return Product(
        id=pid, article_type=row["articleType"], attributes=values, image_path=photo,
        display_name=" ".join(name.split()), gender=row["gender"],
    )


def _raw_id(fields: Sequence[str]) -> str:
    return fields[0].strip()[:40] if fields else ""


__all__ = [
    "CSV_COLUMNS", "SKIP_REASONS", "CatalogError", "CatalogReading", "Product", "Skip", "check_catalog",
    "image_path", "image_problem", "load_product_json", "product_attributes",
    "read_catalog", "read_styles", "styles_row",
]
