"""Requests to a CLIP artifact on `POST /invocations`: embed texts or images, and search the index bundle.

    {"task": "embed", "texts": ["green shirt", ...]}       -> {"embeddings": [[...], ...], "dimension": N, "normalized": true}
    {"task": "embed", "image": "<base64>"}                  -> the same, one embedding
    {"task": "search", "text": "..." | "image": "<base64>", "k": 1-50, "filters": {"baseColour": "Green"}}
        -> {"results": [{"id", "score", "name", "attributes"}], "index": {"backend": "embedded", "size": N}}
    Content-Type image/*: the image's embedding.  JSON Lines ({"id", "image"} per line): one
    {"id", "embedding"} (or {"id", "error"}) per line, in order, for Batch Transform.

Texts are wrapped in the artifact's first prompt template, as search queries are. Scores are cosine
similarities. Every bad input is a 4xx with {"error": ...} (loom.errors.StatusError). The server's
serve.py loads a `ClipService` when the manifest's kind is "clip"; app.py hands it the request here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flask import Response

from inference.server.embedder import ClipEmbedder
from inference.server.images import ImageError, decode_image
from inference.server.request_parsing import JSONLINES_TYPES
from loom.base64_image import decode_base64_image
from inference.server.search_index import SearchIndex
from loom.artifact import IndexPaths, index_dir_of
from loom.errors import StatusError
from loom.search_request import check_fields, check_filters, check_k, check_one_query, check_text

log = logging.getLogger("loom.serve")

MAX_TEXTS = 64
EMBED_BATCH = 16
EMBED_KEYS = {"task", "texts", "image"}
SEARCH_KEYS = {"task", "text", "image", "k", "filters"}


class ClipService:
    """A loaded CLIP artifact and, when the artifact holds one, its index bundle."""

    kind = "clip"

    def __init__(self, embedder: ClipEmbedder, index: SearchIndex | None):
        if index is not None:
            index.check_embedder(embedder.model_info)
        self.embedder, self.index = embedder, index

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> "ClipService":
        embedder = ClipEmbedder.load(model_dir, device=device)
        index_dir = index_dir_of(model_dir)
        index = SearchIndex.load(index_dir) if IndexPaths.of(index_dir).manifest.is_file() else None
        log.info("CLIP %s, %d-d, index: %s", embedder.model_id, embedder.dimension,
                 f"{index.size} products" if index else "none")
        return cls(embedder, index)

    @property
    def model_info(self) -> dict[str, Any]:
        return self.embedder.model_info

    def warm_up(self) -> None:
        self.embedder.warm_up()

    # -------------------------------------------------------------------------------------------
    def answer(self, request: Any, max_image_pixels: int) -> dict[str, Any]:
        """Answer one JSON request object (embed or search)."""
        if not isinstance(request, dict):
            raise StatusError(400, 'the request must be a JSON object such as {"task": "search", "text": "..."}')
        task = request.get("task")
        if task == "embed":
            return self.embed(request, max_image_pixels)
        if task == "search":
            return self.search(request, max_image_pixels)
        raise StatusError(400, f"'task' must be \"embed\" or \"search\" for this CLIP model, got {task!r}")

    def embed(self, request: Mapping[str, Any], max_image_pixels: int) -> dict[str, Any]:
        check_fields(request, EMBED_KEYS, "task 'embed'")
        check_one_query(request, "texts")
        if "texts" in request:
            texts = request["texts"]
            if not isinstance(texts, list) or not 1 <= len(texts) <= MAX_TEXTS:
                raise StatusError(400, f"'texts' must be a list of 1 to {MAX_TEXTS} strings")
            vectors = self.embedder.embed_texts([check_text(t, "texts[]") for t in texts])
        else:
            vectors = self.embedder.embed_images([_image(request["image"], max_image_pixels)])
        return self.embeddings(vectors)

    def embeddings(self, vectors: np.ndarray) -> dict[str, Any]:
        return {"embeddings": [[round(float(v), 7) for v in row] for row in vectors],
                "dimension": self.embedder.dimension, "normalized": True}

    def search(self, request: Mapping[str, Any], max_image_pixels: int) -> dict[str, Any]:
        check_fields(request, SEARCH_KEYS, "task 'search'")
        if self.index is None:
            raise StatusError(400, "this endpoint has no index bundle (MODEL_DIR/index): search is not available; "
                                   "use {\"task\": \"embed\"} and an OpenSearch index instead")
        check_one_query(request)
        k = check_k(request.get("k"))
        filters = check_filters(request.get("filters"))
        self.index.filter_mask(filters)  # unknown fields are refused before any model work
        if "text" in request:
            vector = self.embedder.embed_texts([check_text(request["text"])])[0]
        else:
            vector = self.embedder.embed_images([_image(request["image"], max_image_pixels)])[0]
        found = self.index.search(vector, k, filters)
        return {"results": [{"id": row.id, "score": round(score, 6), "name": row.name,
                             "attributes": row.attributes} for row, score in found],
                "index": {"backend": self.index.backend, "size": self.index.size}}

    def embed_lines(self, body: bytes, max_image_pixels: int) -> list[dict[str, Any]]:
        """One result per JSON Lines record ({"id", "image"}), in order; a bad line gets its own error."""
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            raise StatusError(400, 'the JSON Lines body holds no records: one {"id", "image"} object per line')
        results: list[dict[str, Any] | None] = [None] * len(lines)
        pending: list[tuple[int, Any, Any]] = []

        def flush() -> None:
            vectors = self.embedder.embed_images([image for _, _, image in pending])
            for (index, record_id, _), vector in zip(pending, vectors, strict=True):
                results[index] = {"id": record_id, "embedding": [round(float(v), 7) for v in vector]}
            pending.clear()

        for number, line in enumerate(lines):
            record_id = None
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "image" not in record:
                    raise StatusError(400, 'each line must be an object with "image" (base64) and an optional "id"')
                record_id = record.get("id")
                pending.append((number, record_id, _image(record["image"], max_image_pixels)))
            except (ValueError, StatusError) as exc:  # json.JSONDecodeError is a ValueError
                results[number] = {"id": record_id, "error": f"line {number + 1}: {getattr(exc, 'message', exc)}"}
            if len(pending) >= EMBED_BATCH:
                flush()
        if pending:
            flush()
        return results  # type: ignore[return-value]


def _image(value: Any, max_image_pixels: int):
    try:
        return decode_image(decode_base64_image(value), max_image_pixels)
    except ImageError as exc:
        raise StatusError(400, str(exc)) from None


def answer_clip_request(service: ClipService, content_type: str, body: bytes, max_image_pixels: int) -> Response:
    """The HTTP answer to one `POST /invocations` for a CLIP artifact (called by app.py)."""
    try:
        if content_type in JSONLINES_TYPES:
            lines = [json.dumps(r, ensure_ascii=False) for r in service.embed_lines(body, max_image_pixels)]
            return Response("\n".join(lines) + "\n", status=200, mimetype="application/jsonlines")
        if content_type.startswith("image/") or content_type == "application/x-image":
            try:
                image = decode_image(body, max_image_pixels)
            except ImageError as exc:
                raise StatusError(400, str(exc)) from None
            result = service.embeddings(service.embedder.embed_images([image]))
        else:
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise StatusError(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
            result = service.answer(request, max_image_pixels)
    except StatusError as exc:
        return Response(json.dumps(exc.body()), status=exc.status, mimetype="application/json")
    return Response(json.dumps(result, ensure_ascii=False), status=200, mimetype="application/json")
