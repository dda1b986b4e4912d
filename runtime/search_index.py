"""The index bundle and the embedded search backend: exact cosine search with attribute filters (numpy).

A bundle (file names in loom/artifact.py) holds L2-normalised float32 embeddings, a JSON Lines product
table in the same row order, and a manifest naming the embedder (model id + weight checksum) that made
them. `SearchIndex` keeps everything in memory: a query is one float32 matrix-vector product over all rows,
filters are precomputed integer codes per attribute, and top-k is an `argpartition`.

Exact cosine over N x 512 float32 rows reads 2 KB per product per query: at 100k products that is 200 MB,
and a CPU core spends its time waiting on memory. From FAST_PATH_MIN_ROWS rows on, when torch is present
(it is in the inference image), a float16 copy scores every row at half the bytes and the best
max(SHORTLIST_FACTOR * k, SHORTLIST_MIN) rows are re-scored exactly in float32, so the returned scores are
exact cosines and the ranking equals the exact one unless float16 rounding (~1e-3) moves a true top-k row
below the shortlist (tests/runtime/test_search_index.py checks recall 1.0 against the exact path).
scripts/bench_search_index.py measures both paths; docs/search.md says when to move to OpenSearch.

Writes are atomic: a bundle on disk is always the old one or the new one, never new embeddings beside old
products (an interrupted `index add` or `remove`). `write_bundle` writes the new files under pending names
(`<name>.tmp`), then publishes the new manifest, which records each data file's size and sha256, under its
pending name in one `os.replace`: that is the commit point. It then moves the data files into place and the
manifest last (`settle_bundle`). A write interrupted before the commit leaves the old bundle (its stray
pending files are removed by the next write); one interrupted after it is the new bundle: the loader reads a
pending manifest's files from wherever they are, and the next write finishes the moves. The loader checks
every file against the manifest's checksums and refuses a bundle that does not match (a mix).
Bundles written before checksums existed (no "files" in the manifest) are checked by shape only.
A server decides with `has_bundle`, read-only: a committed bundle loads, settled or not; a folder with bundle
files and no committed manifest (a first write cut off before its commit) is refused, not served as no index.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from loom.artifact import INDEX_VERSION, IndexPaths, read_json, write_json
from loom.errors import StatusError
from loom.schema import SchemaError

BACKEND = "embedded"
FAST_PATH_MIN_ROWS = 50_000
SHORTLIST_FACTOR = 4
SHORTLIST_MIN = 64


class BundleError(SchemaError):
    """A bundle on disk that is missing, inconsistent or made by another model."""


@dataclass(frozen=True)
class ProductRow:
    """One product of the table: what a search result shows."""

    id: str
    name: str
    attributes: dict[str, str]
    image: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "attributes": self.attributes, "image": self.image}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProductRow":
        return cls(str(data["id"]), str(data.get("name", "")), dict(data.get("attributes") or {}),
                   str(data.get("image", "")))


def index_manifest(embedder_info: Mapping[str, Any], dimension: int, count: int, **extra: Any) -> dict[str, Any]:
    """The bundle manifest: who embedded it, the vector size and the row count."""
    return {"index_version": INDEX_VERSION, "embedder": {"base_model": embedder_info["base_model"],
                                                         "checksum": embedder_info["checksum"]},
            "dimension": int(dimension), "count": int(count), "metric": "cosine", "normalized": True,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def read_index_manifest(index_dir: str | Path) -> dict[str, Any]:
    paths = IndexPaths.of(index_dir)
    manifest = read_json(paths.manifest, missing=f"{index_dir} is not an index bundle: {paths.manifest.name} "
                                                 "is missing (build one with `loom index build`)")
    if manifest.get("index_version") != INDEX_VERSION:
        raise BundleError(f"{paths.manifest}: index_version {manifest.get('index_version')!r} is not supported")
    return manifest


def read_products(path: Path) -> list[ProductRow]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(ProductRow.from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    raise BundleError(f"{path} line {number}: not a product row ({exc})") from None
    return rows


PENDING_SUFFIX = ".tmp"


def pending(path: Path) -> Path:
    """Where a file of a write in progress (or committed but not yet moved) lives."""
    return path.with_name(path.name + PENDING_SUFFIX)


def file_digest(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, read in 1 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _data_files(paths: IndexPaths) -> dict[str, Path]:
    return {paths.embeddings.name: paths.embeddings, paths.products.name: paths.products}


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_bundle(index_dir: str | Path, embeddings: np.ndarray, products: Sequence[ProductRow],
                 manifest: Mapping[str, Any]) -> None:
    """Write a whole bundle atomically (module docstring): pending files, the manifest's commit, the moves."""
    paths = IndexPaths.of(index_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or len(embeddings) != len(products):
        raise ValueError(f"embeddings {embeddings.shape} {embeddings.dtype} do not match {len(products)} products")
    settle_bundle(paths.root)  # finish (or discard) an interrupted write before starting this one
    with pending(paths.embeddings).open("wb") as handle:
        np.save(handle, embeddings)
        handle.flush()
        os.fsync(handle.fileno())
    write_products(pending(paths.products), products)
    files = {name: file_digest(pending(path)) for name, path in _data_files(paths).items()}
    partial = _partial(paths)
    write_json(partial, {**manifest, "files": files})
    with partial.open("rb") as handle:  # on disk before the rename that commits it, as the data files are
        os.fsync(handle.fileno())
    os.replace(partial, pending(paths.manifest))  # the commit point: from here on the bundle is the new one
    _fsync_dir(paths.root)
    settle_bundle(paths.root)


def settle_bundle(index_dir: str | Path) -> None:
    """Finish an interrupted write: with a committed (pending) manifest, move its data files into place and
    the manifest last; without one, remove the unfinished write's pending files. Idempotent: an interruption
    here is finished by the next call."""
    paths = IndexPaths.of(index_dir)
    committed = pending(paths.manifest)
    if committed.exists():
        manifest = read_json(committed, missing=f"{committed} vanished")
        _resolve_files(paths, manifest, committed)  # every file present and matching, or BundleError
        for path in _data_files(paths).values():
            if pending(path).exists():
                os.replace(pending(path), path)
        os.replace(committed, paths.manifest)
        _fsync_dir(paths.root)
        return
    strays = [pending(path) for path in _data_files(paths).values()] + [_partial(paths)]
    for path in strays:
        if path.exists():
            path.unlink()


def has_bundle(index_dir: str | Path) -> bool:
    """Whether a server should load the bundle in `index_dir`, read-only (the model folder of an endpoint is
    not the server's to change, so nothing is settled or removed here): True for a committed bundle, settled
    or not (`load_embeddings` reads a pending manifest's files where they are); False for no bundle at all
    (no folder, or an empty one: the artifact serves without an index); BundleError for a folder that holds
    bundle files but no committed manifest, e.g. a first `index build` interrupted before its commit. That
    folder must not be served as "no index": search would answer 400 although the operator built one."""
    paths = IndexPaths.of(index_dir)
    if paths.manifest.is_file() or pending(paths.manifest).is_file():
        return True
    if not paths.root.exists():
        return False
    if not paths.root.is_dir():
        raise BundleError(f"{paths.root} is not a folder: an index bundle is a folder holding {paths.manifest.name}")
    found = sorted(p.name for p in paths.root.iterdir() if not p.name.startswith("."))
    if not found:
        return False
    unfinished = any(name.endswith((PENDING_SUFFIX, ".partial")) for name in found)
    reason = ("an index write was interrupted before it committed and no earlier bundle is there"
              if unfinished else f"it holds no {paths.manifest.name}")
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    raise BundleError(f"{paths.root} is not a usable index bundle: {reason} (found: {shown}). Rebuild it "
                      f"with `loom index build`, or remove the folder to serve this model without an index.")


def _partial(paths: IndexPaths) -> Path:
    """The new manifest while it is being written, before its rename to the pending name commits it."""
    return paths.manifest.with_name(paths.manifest.name + ".partial")


def _resolve_files(paths: IndexPaths, manifest: Mapping[str, Any], manifest_path: Path) -> dict[str, Path]:
    """Where each data file of `manifest` is, checked against its size and sha256; BundleError for a file that
    is missing or is not the one the manifest vouches for. A manifest without "files" (written before
    checksums) names the final paths unchecked."""
    files = manifest.get("files")
    if files is None:
        return _data_files(paths)
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: 'files' must map file names to their size and sha256")
    found = {}
    for name, path in _data_files(paths).items():
        expected = files.get(name)
        if not isinstance(expected, dict):
            raise BundleError(f"{manifest_path}: no checksum for {name}")
        # A committed write's file is under its pending name until settled; otherwise under its own.
        candidates = [pending(path), path] if manifest_path.name.endswith(PENDING_SUFFIX) else [path]
        for candidate in candidates:
            if candidate.exists() and file_digest(candidate) == {"bytes": expected.get("bytes"),
                                                                  "sha256": expected.get("sha256")}:
                found[name] = candidate
                break
        else:
            raise BundleError(f"{paths.root}: {name} is not the file {manifest_path.name} vouches for (size or "
                              "sha256 differs): the bundle mixes two writes; rebuild it or re-run the "
                              "interrupted command")
    return found


def write_products(path: Path, products: Iterable[ProductRow]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in products:
            handle.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_embeddings(index_dir: str | Path) -> tuple[np.ndarray, list[ProductRow], dict[str, Any]]:
    """(embeddings, products, manifest) of a bundle, checked against each other and against the manifest's
    checksums. Read-only: a committed but unsettled write is read from its pending files."""
    paths = IndexPaths.of(index_dir)
    committed = pending(paths.manifest)
    if committed.exists():
        manifest, where = read_json(committed, missing=f"{committed} vanished"), committed
        if manifest.get("index_version") != INDEX_VERSION:
            raise BundleError(f"{committed}: index_version {manifest.get('index_version')!r} is not supported")
    else:
        manifest, where = read_index_manifest(index_dir), paths.manifest
    count, dimension = manifest.get("count"), manifest.get("dimension")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (count, dimension)):
        raise BundleError(f"{where}: 'count' and 'dimension' must be whole numbers, got {count!r} and {dimension!r}")
    files = _resolve_files(paths, manifest, where)
    embeddings_file, products_file = files[paths.embeddings.name], files[paths.products.name]
    expected = (count, dimension)
    try:
        # The header first: a file whose header declares a huge shape is refused before any memory is taken.
        header = np.load(embeddings_file, mmap_mode="r", allow_pickle=False)
        shape, dtype = header.shape, header.dtype
        del header
    except (OSError, ValueError) as exc:
        raise BundleError(f"{paths.embeddings}: cannot read the embeddings ({exc})") from None
    if shape != expected or dtype != np.float32:
        raise BundleError(f"{paths.embeddings}: {shape} {dtype} embeddings do not match the manifest's "
                          f"{expected} float32")
    try:
        embeddings = np.load(embeddings_file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{paths.embeddings}: cannot read the embeddings ({exc})") from None
    products = read_products(products_file)
    if embeddings.dtype != np.float32 or embeddings.shape != expected or len(products) != manifest["count"]:
        raise BundleError(f"{paths.root}: embeddings {embeddings.shape} {embeddings.dtype} and {len(products)} "
                          f"products do not match the manifest's {expected} float32")
    return embeddings, products, manifest


class SearchIndex:
    """An in-memory index bundle: `search(vector, k, filters)` -> [(row, cosine score)], best first."""

    backend = BACKEND

    def __init__(self, embeddings: np.ndarray, products: Sequence[ProductRow], manifest: Mapping[str, Any],
                 fast_path: bool | None = None):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._half = None  # the float16 copy of the fast path (a torch tensor), or None
        if fast_path or (fast_path is None and len(self.embeddings) >= FAST_PATH_MIN_ROWS):
            self._half = _half_copy(self.embeddings)
        self.products = list(products)
        self.manifest = dict(manifest)
        self.dimension = self.embeddings.shape[1]
        # Per attribute: a code per row (-1 where the product lacks it) and the code of each value.
        self._codes: dict[str, np.ndarray] = {}
        self._values: dict[str, dict[str, int]] = {}
        for row_number, product in enumerate(self.products):
            for field, value in product.attributes.items():
                codes = self._codes.setdefault(field, np.full(len(self.products), -1, dtype=np.int32))
                codes[row_number] = self._values.setdefault(field, {}).setdefault(value, len(self._values[field]))

    @classmethod
    def load(cls, index_dir: str | Path) -> "SearchIndex":
        return cls(*load_embeddings(index_dir))

    @property
    def size(self) -> int:
        return len(self.products)

    @property
    def filter_fields(self) -> list[str]:
        return sorted(self._codes)

    def check_embedder(self, embedder_info: Mapping[str, Any]) -> None:
        """Refuse a bundle made by other weights: its vectors would not share the query's space."""
        made_by = self.manifest.get("embedder", {})
        if made_by.get("checksum") != embedder_info.get("checksum"):
            raise BundleError(f"the index was embedded by {made_by.get('base_model')} ({made_by.get('checksum')}), "
                              f"not by this model ({embedder_info.get('checksum')}): rebuild it with `loom index "
                              "build`")

    def filter_mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Rows matching every filter exactly (a list value means any of them); None when no filters."""
        if not filters:
            return None
        mask = np.ones(self.size, dtype=bool)
        for field, wanted in filters.items():
            if field not in self._codes:
                raise StatusError(400, f"unknown filter field {field!r}; this index can filter on "
                                       f"{self.filter_fields}")
            values = self._values[field]
            codes = [values[v] for v in ([wanted] if isinstance(wanted, str) else wanted) if v in values]
            mask &= np.isin(self._codes[field], np.asarray(codes, dtype=np.int32))
        return mask

    def search(self, vector: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
               ) -> list[tuple[ProductRow, float]]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise StatusError(400, f"the query vector has {query.shape[0]} dimensions, the index {self.dimension}")
        mask = self.filter_mask(filters)
        if self._half is not None:
            return self._search_shortlist(query, k, mask)
        scores = self.embeddings @ query  # float32 throughout: a float64 operand would promote (40x slower)
        if mask is not None:
            scores = np.where(mask, scores, np.float32(-np.inf))
            k = min(k, int(mask.sum()))
        k = min(k, self.size)
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < self.size else np.arange(self.size)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.products[i], float(scores[i])) for i in top]

    def _search_shortlist(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[ProductRow, float]]:
        import torch

        rough = self._half @ torch.from_numpy(query).to(torch.float16)
        if mask is not None:
            rough[torch.from_numpy(~mask)] = -torch.inf
            k = min(k, int(mask.sum()))
        k = min(k, self.size)
        if k <= 0:
            return []
        shortlist = torch.topk(rough, min(self.size, max(SHORTLIST_FACTOR * k, SHORTLIST_MIN))).indices.numpy()
        if mask is not None:
            shortlist = shortlist[mask[shortlist]]
        exact = self.embeddings[shortlist] @ query
        order = np.argsort(-exact, kind="stable")[:k]
        return [(self.products[shortlist[i]], float(exact[i])) for i in order]


def _half_copy(embeddings: np.ndarray):
    try:
        import torch
    except ImportError:  # the exact float32 path serves alone
        return None
    return torch.from_numpy(embeddings).to(torch.float16)
