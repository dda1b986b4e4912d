"""The model artifact: the contract between training and inference (standard library only).

A model artifact is a folder (SageMaker tars it as `model.tar.gz`):

    MODEL_DIR/config.json, model.safetensors, processor + tokenizer files    save_pretrained
    MODEL_DIR/loom_manifest.json          what the server asks and how: schema, base model, LoRA, metrics
    MODEL_DIR/metrics.json                the same metrics as the manifest's "metrics"
    MODEL_DIR/evaluation/predictions.csv  one row per validation question
    MODEL_DIR/evaluation/calibration.csv  attribute,correct,confidence: what the thresholds were fitted on
    MODEL_DIR/evaluation/loss_history.csv step,loss,learning_rate
    MODEL_DIR/evaluation/report.html      the evaluation report and its figures

A CLIP artifact (`kind: "clip"`, for search) has the same layout with a different manifest: embedding
dimension, whether embeddings are L2-normalised, prompt templates and base model id; an index bundle may
sit beside the model in `MODEL_DIR/index/`. A manifest without "kind" is an attribute (BLIP-2) artifact.

    MODEL_DIR/index/index_manifest.json   embedder id + checksum, dimension, count
    MODEL_DIR/index/embeddings.npy        float32 (count x dimension), rows L2-normalised
    MODEL_DIR/index/products.jsonl        one {"id", "name", "attributes", "image"} per row, same order

A CLIP artifact built for zero-shot tagging and prompt building also holds, in its manifest, the attribute
schema ("schema": known values per attribute), "zero_shot" (prompt templates and product noun the tags
ensemble) and "calibration" (per-attribute tag thresholds, as the attribute model's; the records they were
fitted on in evaluation/calibration.csv), and beside the model its phrase tables:

    MODEL_DIR/phrases/tables.json         {"tables": [{"name", "phrases"}], "count", "dtype"}, tables in order
    MODEL_DIR/phrases/embeddings.npy      float16 (count x dimension), one row per phrase in that order

This module owns those names: everything else reads and writes the artifact through it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from loom.schema import AttributeSchema, SchemaError

MANIFEST_FILE = "loom_manifest.json"
MANIFEST_VERSION = 1
METRICS_FILE = "metrics.json"
EVALUATION_DIR = "evaluation"
PREDICTIONS_FILE = "predictions.csv"
CALIBRATION_FILE = "calibration.csv"
LOSS_HISTORY_FILE = "loss_history.csv"
REPORT_FILE = "report.html"
KIND_ATTRIBUTES = "attributes"  # the BLIP-2 attribute model; what a manifest without "kind" means
KIND_CLIP = "clip"
KINDS = (KIND_ATTRIBUTES, KIND_CLIP)
INDEX_DIR = "index"
INDEX_MANIFEST_FILE = "index_manifest.json"
INDEX_EMBEDDINGS_FILE = "embeddings.npy"
INDEX_PRODUCTS_FILE = "products.jsonl"
INDEX_VERSION = 1
PHRASES_DIR = "phrases"
PHRASE_TABLES_FILE = "tables.json"
PHRASE_EMBEDDINGS_FILE = "embeddings.npy"
# The metrics section of a CLIP model's zero-shot tags scored on a BLIP-2 artifact's validation questions.
CLIP_BASELINE_METRICS = "clip_zero_shot"


@dataclass(frozen=True)
class ArtifactPaths:
    """Where each file of an artifact lives."""

    root: Path

    @classmethod
    def of(cls, model_dir: str | Path) -> "ArtifactPaths":
        return cls(Path(model_dir))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def evaluation(self) -> Path:
        return self.root / EVALUATION_DIR

    @property
    def predictions(self) -> Path:
        return self.evaluation / PREDICTIONS_FILE

    @property
    def calibration_records(self) -> Path:
        return self.evaluation / CALIBRATION_FILE

    @property
    def loss_history(self) -> Path:
        return self.evaluation / LOSS_HISTORY_FILE

    @property
    def report(self) -> Path:
        return self.evaluation / REPORT_FILE


@dataclass(frozen=True)
class IndexPaths:
    """Where each file of an index bundle lives (a folder; `MODEL_DIR/index` when served by the endpoint)."""

    root: Path

    @classmethod
    def of(cls, index_dir: str | Path) -> "IndexPaths":
        return cls(Path(index_dir))

    @property
    def manifest(self) -> Path:
        return self.root / INDEX_MANIFEST_FILE

    @property
    def embeddings(self) -> Path:
        return self.root / INDEX_EMBEDDINGS_FILE

    @property
    def products(self) -> Path:
        return self.root / INDEX_PRODUCTS_FILE


@dataclass(frozen=True)
class PhrasePaths:
    """Where a CLIP artifact's phrase tables and their text embeddings live (`MODEL_DIR/phrases`)."""

    root: Path

    @classmethod
    def of(cls, model_dir: str | Path) -> "PhrasePaths":
        return cls(Path(model_dir) / PHRASES_DIR)

    @property
    def tables(self) -> Path:
        return self.root / PHRASE_TABLES_FILE

    @property
    def embeddings(self) -> Path:
        return self.root / PHRASE_EMBEDDINGS_FILE


def write_phrase_tables(model_dir: str | Path, tables: Mapping[str, list[str]], dtype: str) -> Path:
    """phrases/tables.json: the tables in order (the caller writes phrases/embeddings.npy in the same order)."""
    listed = [{"name": name, "phrases": list(phrases)} for name, phrases in tables.items()]
    return write_json(PhrasePaths.of(model_dir).tables, {
        "tables": listed, "count": sum(len(t["phrases"]) for t in listed), "dtype": dtype})


def read_phrase_tables(model_dir: str | Path) -> dict[str, list[str]] | None:
    """The tables of phrases/tables.json in order, or None when the artifact has none."""
    path = PhrasePaths.of(model_dir).tables
    if not path.is_file():
        return None
    data = read_json(path, missing=str(path))
    try:
        tables = {str(t["name"]): [str(p) for p in t["phrases"]] for t in data["tables"]}
    except (KeyError, TypeError) as exc:
        raise SchemaError(f"{path}: malformed phrase tables ({exc!r})") from None
    if sum(map(len, tables.values())) != data.get("count"):
        raise SchemaError(f"{path}: count {data.get('count')!r} is not the number of phrases listed")
    return tables


def write_zero_shot(model_dir: str | Path, schema: AttributeSchema, templates: list[str]) -> Path:
    """Put the attribute schema and the tag prompt templates into a CLIP artifact's manifest."""
    manifest = read_clip_manifest(model_dir)
    manifest["schema"] = schema.to_dict()
    manifest["zero_shot"] = {"templates": list(templates), "noun": schema.product_noun}
    return write_json(ArtifactPaths.of(model_dir).manifest, manifest)


def clip_schema(manifest: Mapping[str, Any]) -> AttributeSchema | None:
    """The attribute schema a CLIP manifest carries (None for a search-only artifact)."""
    return AttributeSchema.from_dict(manifest["schema"]) if "schema" in manifest else None


def index_dir_of(model_dir: str | Path) -> Path:
    """Where the endpoint looks for an index bundle inside a CLIP artifact."""
    return Path(model_dir) / INDEX_DIR


def is_artifact(model_dir: str | Path) -> bool:
    """True when the folder holds a Loom manifest."""
    return ArtifactPaths.of(model_dir).manifest.is_file()


def write_manifest(
    model_dir: str | Path,
    schema: AttributeSchema,
    *,
    base_model: str,
    lora: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `loom_manifest.json` into a model folder."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "base_model": base_model,
        "schema": schema.to_dict(),
        "lora": dict(lora or {}),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }
    return write_json(ArtifactPaths.of(model_dir).manifest, manifest)


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read a model folder's manifest; its "schema" entry is returned as an AttributeSchema."""
    path = ArtifactPaths.of(model_dir).manifest
    manifest = read_json(path, missing=f"{model_dir} is not a Loom model folder: {MANIFEST_FILE} is missing")
    version = manifest.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise SchemaError(f"{path}: manifest_version {version!r} is not supported (expected {MANIFEST_VERSION})")
    if manifest.get("kind", KIND_ATTRIBUTES) != KIND_ATTRIBUTES:
        raise SchemaError(f"{path}: this is a {manifest['kind']!r} artifact, not an attribute model; "
                          "read it with read_clip_manifest")
    if "schema" not in manifest:
        raise SchemaError(f"{path} has no attribute schema")
    manifest["schema"] = AttributeSchema.from_dict(manifest["schema"])
    return manifest


def calibration_metrics(calibration: Mapping[str, Any]) -> dict[str, Any]:
    """The "calibration" section of an artifact's metrics: loom.calibration's dict (target, confidence, and per
    attribute the threshold, answers, precision, lower bound, coverage, reason) without the per-confidence
    evidence counts, which only the manifest keeps."""
    return {**{k: v for k, v in calibration.items() if k != "attributes"}, "attributes": {
        name: {k: v for k, v in a.items() if k != "evidence"} for name, a in calibration["attributes"].items()}}


def write_calibration(model_dir: str | Path, calibration: Mapping[str, Any],
                      records: Iterable[tuple[str, bool, float | None]]) -> Path:
    """Store thresholds (loom.calibration's dict) in the manifest, and the records they were fitted on.

    The metrics (manifest and metrics.json) get "calibration": the target, the confidence, and per attribute
    the threshold, the validation answers it rests on (`stated` of `examples`), the observed precision, its
    lower confidence bound, the coverage and, for an attribute never stated, the reason (the evidence stays
    in the manifest only).
    """
    paths = ArtifactPaths.of(model_dir)
    manifest = read_json(paths.manifest, missing=f"{model_dir} has no {MANIFEST_FILE}: write the manifest first")
    manifest["calibration"] = dict(calibration)
    write_json(paths.manifest, manifest)
    record_metrics(model_dir, "calibration", calibration_metrics(calibration))
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    with paths.calibration_records.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("attribute", "correct", "confidence"))
        for name, correct, confidence in records:
            writer.writerow((name, int(bool(correct)), "" if confidence is None else f"{confidence:.6f}"))
    return paths.manifest


def read_calibration_records(model_dir: str | Path) -> list[tuple[str, bool, float | None]]:
    """evaluation/calibration.csv as (attribute, correct, confidence or None); [] when absent."""
    path = ArtifactPaths.of(model_dir).calibration_records
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row["attribute"], row["correct"] == "1", float(row["confidence"]) if row["confidence"] else None)
                for row in csv.DictReader(handle)]


def read_calibration(model_dir: str | Path, manifest: Mapping[str, Any]) -> Any:
    """The manifest's thresholds as a loom.calibration.Calibration, or None for an artifact without calibration.

    A manifest written before thresholds came with a guarantee holds no evidence: it is refitted from
    evaluation/calibration.csv under the current rule, at its own target; without that file it is refused
    (SchemaError), rather than stating values on thresholds that were never shown to hold."""
    from loom.calibration import Calibration

    data = manifest.get("calibration")
    if not data:
        return None
    if isinstance(data, Mapping) and "confidence" not in data and isinstance(data.get("attributes"), Mapping):
        records = read_calibration_records(model_dir)
        if not records:
            raise SchemaError(f"{model_dir}: the manifest's calibration predates the evidence it must rest on and "
                              f"{EVALUATION_DIR}/{CALIBRATION_FILE} is missing: calibrate the artifact again")
        return Calibration.from_records(records, data)
    try:
        return Calibration.from_dict(data)
    except ValueError as exc:
        raise SchemaError(f"{ArtifactPaths.of(model_dir).manifest}: {exc}") from None


def manifest_kind(model_dir: str | Path) -> str:
    """The artifact's kind: "clip", or "attributes" when the manifest names none (every BLIP-2 artifact)."""
    path = ArtifactPaths.of(model_dir).manifest
    manifest = read_json(path, missing=f"{model_dir} is not a Loom model folder: {MANIFEST_FILE} is missing")
    kind = manifest.get("kind", KIND_ATTRIBUTES)
    if kind not in KINDS:
        raise SchemaError(f"{path}: kind {kind!r} is not one of {list(KINDS)}")
    return kind


def write_clip_manifest(
    model_dir: str | Path,
    *,
    base_model: str,
    dimension: int,
    prompt_templates: list[str],
    normalized: bool = True,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the manifest of a CLIP artifact (checked as `read_clip_manifest` will check it)."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": KIND_CLIP,
        "base_model": base_model,
        "embedding_dimension": dimension,
        "normalized": normalized,
        "prompt_templates": list(prompt_templates),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }
    _check_clip_manifest(manifest, "the CLIP manifest to write")
    return write_json(ArtifactPaths.of(model_dir).manifest, manifest)


def read_clip_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read and check a CLIP artifact's manifest; SchemaError says what is wrong."""
    path = ArtifactPaths.of(model_dir).manifest
    manifest = read_json(path, missing=f"{model_dir} is not a Loom model folder: {MANIFEST_FILE} is missing")
    _check_clip_manifest(manifest, str(path))
    return manifest


def _check_clip_manifest(manifest: Mapping[str, Any], where: str) -> None:
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise SchemaError(f"{where}: manifest_version {manifest.get('manifest_version')!r} is not supported "
                          f"(expected {MANIFEST_VERSION})")
    if manifest.get("kind") != KIND_CLIP:
        raise SchemaError(f"{where}: kind is {manifest.get('kind', KIND_ATTRIBUTES)!r}, not {KIND_CLIP!r}")
    dimension = manifest.get("embedding_dimension")
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise SchemaError(f"{where}: embedding_dimension must be a positive integer, got {dimension!r}")
    if not isinstance(manifest.get("normalized"), bool):
        raise SchemaError(f"{where}: normalized must be true or false")
    templates = manifest.get("prompt_templates")
    if (not isinstance(templates, list) or not templates
            or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates)):
        raise SchemaError(f"{where}: prompt_templates must be a non-empty list of strings with one {{}} each")
    if not isinstance(manifest.get("base_model"), str) or not manifest["base_model"]:
        raise SchemaError(f"{where}: base_model must name the model the weights come from")


def write_metrics(model_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """metrics.json of a model folder."""
    return write_json(ArtifactPaths.of(model_dir).metrics, metrics)


def record_metrics(model_dir: str | Path, key: str, value: Mapping[str, Any]) -> None:
    """Add (or replace) one section of an artifact's metrics, in the manifest's "metrics" and in metrics.json
    (when the evaluation wrote one)."""
    paths = ArtifactPaths.of(model_dir)
    manifest = read_json(paths.manifest, missing=f"{model_dir} has no {MANIFEST_FILE}: write the manifest first")
    manifest.setdefault("metrics", {})[key] = dict(value)
    write_json(paths.manifest, manifest)
    if paths.metrics.is_file():
        write_metrics(model_dir, {**read_metrics(model_dir), key: dict(value)})


def read_metrics(model_dir: str | Path) -> dict[str, Any]:
    """metrics.json of a model folder; a clear error when the evaluation has not run."""
    return read_json(ArtifactPaths.of(model_dir).metrics,
                     missing=f"{model_dir} has no {METRICS_FILE}; run the evaluation first")


def read_json(path: Path, *, missing: str) -> dict[str, Any]:
    """A JSON object from a file; SchemaError with `missing` when absent, or with the reason when malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"{path} holds a JSON {type(data).__name__}, expected an object")
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | READABLE_FILE)
    return path


READABLE_FILE = 0o444  # r--r--r-- added to every file of an artifact
TRAVERSABLE_DIR = 0o555  # r-xr-xr-x added to every folder


def make_world_readable(model_dir: str | Path) -> Path:
    """Let every user read every file of an artifact and enter every folder (write bits are left alone).

    safetensors writes `model.safetensors` with mode 0600 whatever the umask, `tar` keeps the mode in
    `model.tar.gz`, and the inference image serves as a non-root user: without this, a root-produced
    artifact cannot be read there ("Permission denied", /ping 500, CreateEndpoint fails).
    """
    root = Path(model_dir)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(path.stat().st_mode | (TRAVERSABLE_DIR if path.is_dir() else READABLE_FILE))
    return root
