"""The data side of catalog-scale Batch Transform: JSON Lines records in, joined results out.

Pure functions over plain data (and local files), no AWS: `operations.batch_transform` moves what these
build to and from S3. The wire format is docs/endpoint-contract.md, `application/jsonlines`: one product
per line in (`{"id", "image"}`), one line per product out, with the `id` echoed, or `{"id", "error"}`.
Two tasks share it: `attributes` (the attribute model's answers; a CLIP model answers the same lines with
embeddings) and `tags` (a CLIP model's zero-shot tags: `"task": "tags"` on every line, answered
`{"id", "tags", "withheld"}`; ClipTagsRecord and ClipTagsResult in loom/openapi.json).
"""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from loom.clip_request import parse_tags
from loom.errors import StatusError

MB = 1024 * 1024
SHARD_SUFFIX = ".jsonl"
OUTPUT_SUFFIX = ".out"  # SageMaker names each output object <input object>.out
TASK_ATTRIBUTES = "attributes"  # lines without "task": attributes (BLIP-2) or embeddings (CLIP)
TASK_TAGS = "tags"              # lines with "task": "tags": a CLIP model's zero-shot tags
TASKS = (TASK_ATTRIBUTES, TASK_TAGS)


@dataclass(frozen=True)
class ProductImage:
    """A product id and a way to read its image bytes (called only when the record is built)."""

    id: str
    read: Callable[[], bytes]
    where: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)  # known_attributes, product_type, min_precision


@dataclass
class Shard:
    """One input file of the transform job: its name (the S3 object name) and the ids on its lines, in order."""

    name: str
    path: Path
    ids: list[str]


@dataclass
class ShardingReport:
    """What sharding did: records written, products skipped with the reason, shards by name."""

    records: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    shards: dict[str, list[str]] = field(default_factory=dict)


def encode_record(product_id: str, image: bytes, attributes: Sequence[str] | None = None,
                  facts: Mapping[str, Any] | None = None, fields: Mapping[str, Any] | None = None) -> bytes:
    """One input line: `{"id": ..., "image": <base64>[, "attributes": [...]]}` plus the job's `fields`
    (`task`, `labels`: the same on every line) and the product's facts (`known_attributes`, `product_type`,
    `min_precision`), and a newline."""
    record: dict[str, Any] = {"id": str(product_id), "image": base64.b64encode(image).decode("ascii")}
    if attributes:
        record["attributes"] = list(attributes)
    record.update({k: v for k, v in {**(fields or {}), **(facts or {})}.items() if v not in (None, {})})
    return json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"


def tag_fields(labels: Mapping[str, Sequence[str]] | None = None, min_probability: float | None = None,
               attributes: Sequence[str] | None = None) -> dict[str, Any]:
    """The fields every line of a tags job carries: `{"task": "tags"[, "labels": {attribute: [values]}]
    [, "min_probability": p]}` (`attributes` go on the line as for any task: `encode_record`).

    Checked with the endpoint's own rules (`loom.clip_request.parse_tags`) before a catalog is uploaded, so that
    a job never answers every line with the same 400; ValueError says what is wrong. Caller labels have no
    calibrated threshold: the endpoint withholds them as not_calibrated unless `min_probability` says when to
    state them.
    """
    fields: dict[str, Any] = {"task": TASK_TAGS}
    if labels:
        fields["labels"] = dict(labels)  # lists of values, as JSON gives them; parse_tags checks them
    if min_probability is not None:
        fields["min_probability"] = min_probability
    try:
        parse_tags({**fields, **({"attributes": list(attributes)} if attributes else {})})
    except StatusError as exc:
        raise ValueError(exc.message) from None
    return fields


def read_labels(path: str | Path) -> dict[str, Any]:
    """Candidate values per attribute for a tags job, from a JSON file `{"Pattern": ["Striped", ...], ...}`
    (`tag_fields` checks them)."""
    where = Path(path)
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: cannot read the labels file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f'{where}: labels must be a JSON object such as {{"Pattern": ["Striped", "Solid"]}}')
    return data


def max_record_bytes(max_payload_mb: int) -> int:
    """The largest line that fits in one request of MaxPayloadInMB (SageMaker never splits a record)."""
    if not 1 <= max_payload_mb <= 100:
        raise ValueError(f"MaxPayloadInMB must be 1..100, got {max_payload_mb}")
    return max_payload_mb * MB


def shard_name(index: int) -> str:
    return f"part-{index:05d}{SHARD_SUFFIX}"


def write_shards(
    products: Iterable[ProductImage],
    out_dir: str | Path,
    *,
    records_per_file: int,
    max_payload_mb: int,
    attributes: Sequence[str] | None = None,
    fields: Mapping[str, Any] | None = None,
    report: ShardingReport | None = None,
) -> Iterator[Shard]:
    """Write products as JSON Lines files of at most `records_per_file` lines; yield each file when complete.

    Reads and encodes one image at a time, so memory stays flat however large the catalog: the caller
    uploads each yielded file and may delete it. A product whose image cannot be read or whose record
    would exceed MaxPayloadInMB is skipped and listed in `report.skipped`; duplicate ids too. `fields` go
    on every line (`tag_fields`).
    """
    if records_per_file < 1:
        raise ValueError(f"records per file must be at least 1, got {records_per_file}")
    limit = max_record_bytes(max_payload_mb)
    report = report if report is not None else ShardingReport()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    index, ids, handle = 0, [], None
    try:
        for product in products:
            if product.id in seen:
                report.skipped.append({"id": product.id, "reason": "duplicate id", "where": product.where})
                continue
            try:
                image = product.read()
            except (OSError, ValueError) as exc:
                report.skipped.append({"id": product.id, "reason": f"unreadable image: {exc}", "where": product.where})
                continue
            if not image:
                report.skipped.append({"id": product.id, "reason": "empty image file", "where": product.where})
                continue
            line = encode_record(product.id, image, attributes, product.facts, fields)
            if len(line) > limit:
                report.skipped.append({
                    "id": product.id, "where": product.where,
                    "reason": f"record is {len(line) / MB:.1f} MB; MaxPayloadInMB is {max_payload_mb}",
                })
                continue
            seen.add(product.id)
            if handle is None:
                handle = (out / shard_name(index)).open("wb")
            handle.write(line)
            ids.append(product.id)
            report.records += 1
            if len(ids) == records_per_file:
                handle.close()
                handle = None
                yield _finish(out, index, ids, report)
                index, ids = index + 1, []
        if handle is not None:
            handle.close()
            handle = None
            yield _finish(out, index, ids, report)
    finally:
        if handle is not None:
            handle.close()


def _finish(out: Path, index: int, ids: list[str], report: ShardingReport) -> Shard:
    name = shard_name(index)
    report.shards[name] = ids
    return Shard(name, out / name, ids)


# ---------------------------------------------------------------------------------------------------
# Outputs


def parse_output_lines(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """The records of a `.out` file; blank lines (AssembleWith=Line adds some) are skipped.

    A line that is not a JSON object becomes `{"id": None, "error": ...}` so that it is reported, not lost.
    """
    for number, raw in enumerate(lines, 1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = text.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield {"id": None, "error": f"output line {number} is not JSON ({exc.msg}): {text[:80]!r}"}
            continue
        if not isinstance(record, dict):
            yield {"id": None, "error": f"output line {number} is not a JSON object: {text[:80]!r}"}
            continue
        yield record


def join_shard(ids: Sequence[str], outputs: Sequence[Mapping[str, Any]],
               task: str = TASK_ATTRIBUTES) -> list[dict[str, Any]]:
    """One result per input id, in input order, from the output records of the same shard.

    Output lines echo their id; a line without one (a line the server could not parse) is matched by
    position, which the contract keeps (one output line per input line, same order). An id with no
    output line gets an error; output ids that were not in the shard are reported as errors too.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    positional = len(outputs) == len(ids)
    stray: list[dict[str, Any]] = []
    for position, record in enumerate(outputs):
        rid = record.get("id")
        if rid is None and positional:
            rid = ids[position]
        if rid is None:
            stray.append({"id": None, "error": record.get("error", "output line without an id")})
            continue
        rid = str(rid)
        if rid in by_id:
            stray.append({"id": rid, "error": "more than one output line for this id"})
            continue
        by_id[rid] = record
    results = []
    for pid in ids:
        record = by_id.pop(pid, None)
        results.append(_tag_result(pid, record) if task == TASK_TAGS else _result(pid, record))
    stray += [{"id": rid, "error": "output line for an id that is not in this input file"} for rid in by_id]
    return results + stray


def _result(pid: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    if record is None:
        return {"id": pid, "error": "no output line for this product"}
    if record.get("error") is not None:
        return {"id": pid, "error": str(record["error"])}
    result = {
        "id": pid,
        "attributes": dict(record.get("attributes") or {}),
        "confidence": dict(record.get("confidence") or {}),
        "raw": dict(record.get("raw") or {}),
        "unknown_values": list(record.get("unknown_values") or []),
        # A CLIP model's line (docs/search.md): its embedding, for `loom index import`.
        **({"embedding": list(record["embedding"])} if "embedding" in record else {}),
    }
    # Abstention fields (servers with calibration): what was withheld, who stated what, merchant conflicts.
    result.update({key: record[key] for key in ("withheld", "sources", "conflicts", "product_type") if key in record})
    return result


def _tag_result(pid: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    if record is None or record.get("error") is not None:
        return _result(pid, record)
    tags, withheld = record.get("tags"), record.get("withheld")
    if not isinstance(tags, dict) or not isinstance(withheld, dict):
        return {"id": pid, "error": 'the output line has no "tags" and "withheld" objects: '
                                    "is the model a CLIP artifact that answers task tags?"}
    return {"id": pid, "tags": dict(tags), "withheld": dict(withheld)}


def summarise(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of answered products and errors."""
    counts = {"answered": 0, "errors": 0}
    for row in results:
        counts["errors" if "error" in row else "answered"] += 1
    return counts


def summarise_conflicts(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Per attribute, how many products' merchant value the model confidently contradicts (most first)."""
    counts: dict[str, int] = {}
    for row in results:
        for conflict in row.get("conflicts", []):
            counts[conflict["attribute"]] = counts.get(conflict["attribute"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarise_tags(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per attribute, how many products it was stated for, and how many it was withheld from by reason."""
    stated: dict[str, int] = {}
    withheld: dict[str, int] = {}
    for row in results:
        for name in row.get("tags", {}):
            stated[name] = stated.get(name, 0) + 1
        for name, entry in row.get("withheld", {}).items():
            key = f"{name} ({entry.get('reason', 'no reason given')})"
            withheld[key] = withheld.get(key, 0) + 1
    return {"stated": stated, "withheld": dict(sorted(withheld.items(), key=lambda kv: (-kv[1], kv[0])))}


def read_known_attributes(path: str | Path) -> dict[str, dict[str, str]]:
    """Merchant facts from a CSV: an `id` column and one column per attribute; empty cells are not facts."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise ValueError(f"{path}: the known-attributes CSV needs an 'id' column and one column per attribute")
        known = {}
        for row in reader:
            facts = {k: " ".join(v.split()) for k, v in row.items() if k != "id" and v and v.strip()}
            if facts:
                known[row["id"].strip()] = facts
        return known


def attribute_columns(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Attribute names in the order they first appear (answers, then confidences of unparsed answers)."""
    names: dict[str, None] = {}
    for row in results:
        for name in (*row.get("attributes", {}), *row.get("confidence", {})):
            names.setdefault(name, None)
    return list(names)


def write_results(results: Sequence[Mapping[str, Any]], path: str | Path,
                  attributes: Sequence[str] | None = None, task: str = TASK_ATTRIBUTES) -> Path:
    """Write results as CSV (`.csv`: id, one column per attribute, `<name> confidence` columns, unknown
    values, raw answers, error, and descriptions when there are some; for tags `write_tag_csv`'s columns)
    or JSON Lines (any other suffix: one result object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        with path.open("w", encoding="utf-8") as out:
            for row in results:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return path
    if task == TASK_TAGS:
        return write_tag_csv(results, path, attributes)
    names = list(attributes) if attributes else attribute_columns(results)
    described = any("description" in row or "description_error" in row for row in results)
    abstained = any(row.get("withheld") or row.get("conflicts") for row in results)
    header = ["id", *names, *(f"{n} confidence" for n in names), "unknown_values", "raw", "error"]
    header += ["withheld", "conflicts"] if abstained else []
    header += ["description", "description_error"] if described else []
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in results:
            attrs, conf = row.get("attributes", {}), row.get("confidence", {})
            writer.writerow([
                row["id"] if row.get("id") is not None else "",
                *(attrs.get(n, "") for n in names),
                *(_confidence(conf.get(n)) for n in names),
                ";".join(row.get("unknown_values", [])),
                json.dumps(row["raw"], ensure_ascii=False) if row.get("raw") else "",
                row.get("error", ""),
                *([json.dumps(row.get("withheld") or {}, ensure_ascii=False),
                   json.dumps(row.get("conflicts") or [], ensure_ascii=False)] if abstained else []),
                *([row.get("description", ""), row.get("description_error", "")] if described else []),
            ])
    return path


def write_tag_csv(results: Sequence[Mapping[str, Any]], path: Path, attributes: Sequence[str] | None = None) -> Path:
    """Tags as CSV: id; per attribute the stated value (empty when withheld), `<name> probability` (of the most
    probable value, stated or not) and `<name> withheld` (the reason, empty when stated); error."""
    names = list(attributes) if attributes else list(dict.fromkeys(
        name for row in results for name in (*row.get("tags", {}), *row.get("withheld", {}))))
    header = ["id", *names, *(f"{n} probability" for n in names), *(f"{n} withheld" for n in names), "error"]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in results:
            tags, withheld = row.get("tags", {}), row.get("withheld", {})
            writer.writerow([
                row["id"] if row.get("id") is not None else "",
                *(tags.get(n, {}).get("value", "") for n in names),
                *(_confidence((tags.get(n) or withheld.get(n) or {}).get("probability")) for n in names),
                *(withheld.get(n, {}).get("reason", "") for n in names),
                row.get("error", ""),
            ])
    return path


def _confidence(value: Any) -> str:
    return "" if value is None else f"{float(value):.4f}"
