"""Turn a catalog folder into VQA training data: one question per attribute, split by product.

    loom prepare --catalog DIR --out DIR [--article-types Shirts Tshirts]
        [--attributes Fabric "Sleeve Length" ...] [--val-fraction 0.2] [--seed 0]

Writes into --out: vqa_train.csv and vqa_val.csv (columns id,Question,Answer; id names images/<id>.jpg
in the catalog), the attribute schema (attribute_schema.json: questions and the values seen in
training, with counts) and prepare_report.json (what was read, kept, skipped and why, the values merged,
and examples per attribute and value in each split). Values are normalised first: characters Flan-T5
cannot spell are replaced and case variants of one value are merged (`normalise_values`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from loom.errors import command_error
from loom.schema import (
    DEFAULT_ATTRIBUTES,
    PRODUCT_TYPE_ATTRIBUTE,
    SCHEMA_FILE,
    AttributeSchema,
    SchemaError,
)
from training.catalog import (
    DEFAULT_ARTICLE_TYPES,
    SKIP_REASONS,
    CatalogError,
    CatalogReading,
    Product,
    read_catalog,
)

TRAIN_FILE = "vqa_train.csv"
VAL_FILE = "vqa_val.csv"
REPORT_FILE = "prepare_report.json"
VQA_COLUMNS = ("id", "Question", "Answer")
# Characters Flan-T5's SentencePiece vocabulary cannot spell: they become <unk>, so a value holding one could
# never be generated, let alone match. Each is replaced by the nearest character it can spell.
UNSPELLABLE = {"{": "(", "}": ")", "<": "(", "~": "-"}
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 0
# An attribute applies to a product type when at least this share of that type's products carry it: a
# few mislabelled rows (a collar recorded on a T-shirt) do not make it apply.
MIN_APPLICABLE_SHARE = 0.05


def split_products(
    products: Sequence[Product], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[list[Product], list[Product]]:
    """Split products into (train, validation), each sorted by id; no product is in both.

    The same products and seed give the same split whatever their order. A product goes to validation
    only if every value it carries is still held by some product in train, so a rare value stays in
    train (a value seen once is never in validation); validation may then be slightly smaller than
    asked.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(products, key=_id_order)
    if len({p.id for p in ordered}) != len(ordered):
        raise ValueError("product ids must be unique to split by product")
    shuffled = list(ordered)
    random.Random(seed).shuffle(shuffled)
    in_train: dict[tuple[str, str], int] = {}
    for p in ordered:
        for pair in p.attributes.items():
            in_train[pair] = in_train.get(pair, 0) + 1
    target = round(val_fraction * len(ordered))
    val_ids: set[str] = set()
    for p in shuffled:
        if len(val_ids) >= target:
            break
        pairs = list(p.attributes.items())
        if all(in_train[pair] > 1 for pair in pairs):
            val_ids.add(p.id)
            for pair in pairs:
                in_train[pair] -= 1
    train = [p for p in ordered if p.id not in val_ids]
    val = [p for p in ordered if p.id in val_ids]
    return train, val


def spellable(value: str) -> str:
    """The value with the characters T5 cannot spell replaced (see UNSPELLABLE)."""
    return "".join(UNSPELLABLE.get(c, c) for c in value)


def normalise_values(products: Sequence[Product], attributes: Sequence[str]
                     ) -> tuple[list[Product], dict[str, list[dict[str, Any]]]]:
    """Products whose values T5 can spell and whose case variants are merged, and the merges made.

    Per attribute, values that differ only in case ("Navy Blue", "navy blue") become the most frequent
    spelling (ties: the first in sorted order): they are one value to a shopper, two to exact match.
    The merges are `{attribute: [{"from", "to", "products", "why"}]}`.
    """
    counts: dict[str, Counter] = {name: Counter() for name in attributes}
    for p in products:
        for name, value in p.attributes.items():
            if name in counts:
                counts[name][spellable(value)] += 1
    canonical: dict[tuple[str, str], str] = {}
    for name, spellings in counts.items():
        by_key: dict[str, list[str]] = {}
        for value in sorted(spellings):
            by_key.setdefault(value.casefold(), []).append(value)
        for variants in by_key.values():
            best = max(variants, key=lambda v: (spellings[v], [-ord(c) for c in v]))
            canonical.update({(name, v): best for v in variants})
    merges: dict[tuple[str, str, str], int] = Counter()
    out = []
    for p in products:
        values = {}
        for name, value in p.attributes.items():
            new = canonical.get((name, spellable(value)), value)
            if new != value:
                merges[(name, value, new)] += 1
            values[name] = new
        out.append(dataclasses.replace(p, attributes=values) if values != p.attributes else p)
    report: dict[str, list[dict[str, Any]]] = {}
    for (name, old, new), n in sorted(merges.items()):
        why = "spelling" if spellable(old) != old else "case"
        if why == "spelling" and spellable(old) != new:
            why = "spelling and case"
        report.setdefault(name, []).append({"from": old, "to": new, "products": n, "why": why})
    return out, report


def _id_order(product: Product) -> tuple[int, int, str]:
    return (0, int(product.id), "") if product.id.isdigit() else (1, 0, product.id)


def applicability(products: Sequence[Product], names: Sequence[str],
                  min_share: float = MIN_APPLICABLE_SHARE) -> dict[str, list[str]]:
    """{article type: the attributes (in `names` order) that at least `min_share` of its products carry}."""
    counts: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for p in products:
        totals[p.article_type] = totals.get(p.article_type, 0) + 1
        carried = counts.setdefault(p.article_type, {})
        for name in p.attributes:
            carried[name] = carried.get(name, 0) + 1
    return {
        article_type: [n for n in names if n != PRODUCT_TYPE_ATTRIBUTE
                       and counts[article_type].get(n, 0) >= min_share * totals[article_type]]
        for article_type in sorted(totals)
    }


def vqa_rows(products: Iterable[Product], schema: AttributeSchema) -> list[tuple[str, str, str]]:
    """(id, Question, Answer) for each present attribute of each product, in schema order."""
    rows = []
    for p in products:
        for name in schema.names:
            value = p.attributes.get(name)
            if value is not None:
                rows.append((p.id, schema.question(name), schema.format_answer(name, value)))
    return rows


def write_vqa_csv(path: Path, rows: Iterable[tuple[str, str, str]]) -> int:
    """Write rows under the header id,Question,Answer (csv-module quoting); the number of rows."""
    n = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(VQA_COLUMNS)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def split_summary(products: Sequence[Product], schema: AttributeSchema, examples: int) -> dict[str, Any]:
    """Products, examples, examples per attribute and per value (most frequent first) in one split."""
    per_value: dict[str, dict[str, int]] = {name: {} for name in schema.names}
    for p in products:
        for name, value in p.attributes.items():
            if name in per_value:
                per_value[name][value] = per_value[name].get(value, 0) + 1
    return {
        "products": len(products),
        "examples": examples,
        "per_attribute": {name: sum(v.values()) for name, v in per_value.items()},
        "per_value": {name: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for name, v in per_value.items()},
    }


@dataclasses.dataclass(frozen=True)
class PreparedCatalog:
    """A catalog read, its values normalised, its schema (known values = those in train) and its split."""

    reading: CatalogReading
    merges: dict[str, list[dict[str, Any]]]
    schema: AttributeSchema
    train: list[Product]
    val: list[Product]


def prepare_products(
    catalog_dir: str | Path,
    *,
    article_types: Sequence[str] = DEFAULT_ARTICLE_TYPES,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
    ask_product_type: bool = True,
) -> PreparedCatalog:
    """Read and split a catalog exactly as `loom prepare` does, without writing anything.

    The schema records which attributes apply to each article type (`applicability`); with
    `ask_product_type` and more than one article type, the article type is one more attribute, first.
    Raises CatalogError for a folder that is not a catalog, SchemaError for a repeated attribute and
    ValueError for a val_fraction outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    attributes = list(attributes)
    article_types = list(article_types)
    AttributeSchema.from_names(attributes)  # refuses a repeated attribute before the catalog is read
    reading = read_catalog(catalog_dir, article_types=article_types, attributes=attributes, progress=progress)
    products, merges = normalise_values(reading.products, attributes)
    applies_to = applicability(products, attributes)
    if ask_product_type and len(article_types) > 1 and PRODUCT_TYPE_ATTRIBUTE not in attributes:
        attributes.insert(0, PRODUCT_TYPE_ATTRIBUTE)
        products = [replace(p, attributes={PRODUCT_TYPE_ATTRIBUTE: p.article_type, **p.attributes})
                    for p in products]
    schema = AttributeSchema.from_names(attributes)  # attribute order = the order asked for
    schema.applies_to = applies_to
    train, val = split_products(products, val_fraction, seed)
    train_counts = split_summary(train, schema, 0)["per_value"]
    for name, values in train_counts.items():  # known values = what the model is trained on
        for value, n in values.items():
            schema.count(name, value, n)
    return PreparedCatalog(reading, merges, schema, train, val)


def prepare(
    catalog_dir: str | Path,
    out_dir: str | Path,
    *,
    article_types: Sequence[str] = DEFAULT_ARTICLE_TYPES,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
    ask_product_type: bool = True,
) -> dict[str, Any]:
    """Read a catalog, write the VQA files, schema and report into out_dir; return the report.

    Reading, schema and split: `prepare_products`.
    """
    started = time.perf_counter()
    asked = list(attributes)
    article_types = list(article_types)
    prepared = prepare_products(catalog_dir, article_types=article_types, attributes=attributes,
                                val_fraction=val_fraction, seed=seed, progress=progress,
                                ask_product_type=ask_product_type)
    reading, merges, schema, train, val = (prepared.reading, prepared.merges, prepared.schema, prepared.train,
                                           prepared.val)
    attributes = schema.names

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train = write_vqa_csv(out / TRAIN_FILE, vqa_rows(train, schema))
    n_val = write_vqa_csv(out / VAL_FILE, vqa_rows(val, schema))
    schema.save(out / SCHEMA_FILE)

    train_summary = split_summary(train, schema, n_train)
    val_summary = split_summary(val, schema, n_val)
    warnings = [f"no kept product has a value for {name!r}" for name in attributes
                if not train_summary["per_attribute"][name] and not val_summary["per_attribute"][name]]
    if reading.products and val_fraction > 0 and not val:
        warnings.append("the validation split is empty: too few products, or every value is rare")
    report = {
        "catalog": str(Path(catalog_dir)),
        "out": str(out),
        "settings": {
            "article_types": article_types, "attributes": asked, "val_fraction": val_fraction, "seed": seed,
            "product_type_question": PRODUCT_TYPE_ATTRIBUTE in attributes and PRODUCT_TYPE_ATTRIBUTE not in asked,
        },
        "products": {
            "read": reading.rows_read,
            "kept": len(reading.products),
            "skipped": dict(reading.skipped),
            "skipped_total": reading.skipped_total,
            "recovered_rows": reading.recovered_rows,
        },
        "skipped_examples": {
            reason: [s.to_dict() for s in reading.examples.get(reason, [])]
            for reason in SKIP_REASONS if reading.examples.get(reason)
        },
        "merged_values": merges,
        "splits": {"train": train_summary, "validation": val_summary},
        "val_fraction_actual": round(len(val) / len(reading.products), 4) if reading.products else 0.0,
        "files": {"train": TRAIN_FILE, "validation": VAL_FILE, "schema": SCHEMA_FILE, "report": REPORT_FILE},
        "warnings": warnings,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def format_summary(report: dict[str, Any]) -> str:
    """A few lines for a person: what was read, kept and skipped, and the size of each split."""
    products = report["products"]
    lines = [
        f"read {products['read']} rows from {report['catalog']}/styles.csv "
        f"({products['recovered_rows']} recovered from unquoted commas): "
        f"kept {products['kept']}, skipped {products['skipped_total']}",
    ]
    skipped = {r: n for r, n in products["skipped"].items() if n}
    if skipped:
        lines.append("  skipped: " + ", ".join(f"{r} {n}" for r, n in skipped.items()))
    for label, key in (("train", "train"), ("val", "validation")):
        s = report["splits"][key]
        per_attr = ", ".join(f"{a} {n}" for a, n in s["per_attribute"].items())
        lines.append(f"  {label:5s} {s['products']} products, {s['examples']} examples ({per_attr})")
    for name, merged in report["merged_values"].items():
        lines.append(f"  merged {name}: " + ", ".join(f"{m['from']!r} -> {m['to']!r} ({m['products']}, {m['why']})"
                                                     for m in merged))
    lines += [f"  warning: {w}" for w in report["warnings"]]
    lines.append(f"wrote {', '.join(report['files'].values())} to {report['out']} in {report['elapsed_s']} s")
    return "\n".join(lines)


def _names(values: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """Names from the command line: several arguments, each possibly comma-separated."""
    if not values:
        return list(default)
    names = [n.strip() for v in values for n in v.split(",")]
    return [n for n in names if n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, type=Path, help="catalog folder (styles.csv, styles/, images/)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the VQA files into")
    parser.add_argument("--article-types", nargs="+", metavar="TYPE",
                        help=f"articleType values to keep (default: {' '.join(DEFAULT_ARTICLE_TYPES)})")
    parser.add_argument("--attributes", nargs="+", metavar="NAME",
                        help="attributes to ask about, in order; commas also separate "
                             f"(default: {','.join(DEFAULT_ATTRIBUTES)})")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help=f"share of products in validation, in [0, 1) (default {DEFAULT_VAL_FRACTION})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the split (default 0)")
    parser.add_argument("--no-product-type", action="store_true",
                        help="do not train the article type as a question nor record which attributes apply to it")
    args = parser.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    article_types = _names(args.article_types, DEFAULT_ARTICLE_TYPES)
    attributes = _names(args.attributes, DEFAULT_ATTRIBUTES)
    if not attributes or not article_types:
        parser.error("--attributes and --article-types need at least one name")
    try:
        report = prepare(args.catalog, args.out, article_types=article_types, attributes=attributes,
                         val_fraction=args.val_fraction, seed=args.seed,
                         ask_product_type=not args.no_product_type)
    except (CatalogError, SchemaError) as exc:
        return command_error(str(exc))
    print(format_summary(report))
    if not report["products"]["kept"]:
        return command_error("no usable product in the catalog; see prepare_report.json for why", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
