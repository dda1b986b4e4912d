"""Requests to a CLIP artifact on `POST /invocations`: embed, search the index bundle, and the zero-shot tasks.

    {"task": "embed", "texts": ["green shirt", ...]}       -> {"embeddings": [[...], ...], "dimension": N, "normalized": true}
    {"task": "embed", "image": "<base64>"}                  -> the same, one embedding
    {"task": "search", "text": "..." | "image": "<base64>", "k": 1-50, "filters": {"baseColour": "Green"}}
        -> {"results": [{"id", "score", "name", "attributes"}], "index": {"backend": "embedded", "size": N}}
    {"image": "<base64>", "prompt": [...]}, {"task": "tags", ...}, {"task": "interrogate", ...}: runtime/tagging.py
    Content-Type image/*: the image's embedding.  JSON Lines for Batch Transform, one answer per line in order:
    {"id", "image"} -> {"id", "embedding"}; {"id", "image", "task": "tags", "attributes"?, "labels"?} ->
    {"id", "tags", "withheld"}; a bad line -> {"id", "error"}. Images of a body are embedded in batches.

Texts are wrapped in the artifact's first prompt template, as search queries are. Scores are cosine
similarities. Every bad input is a 4xx with {"error": ...} (loom.errors.StatusError). The server's
serve.py loads a `ClipService` when the manifest's kind is "clip"; inference/server/clip_invocations.py
turns an HTTP body into the calls here; training tags and evaluates through the same class.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from runtime.tagging import TagPlan, ZeroShot, parse_prompts
from runtime.embedder import ClipEmbedder
from runtime.images import ImageError, decode_image
from loom.base64_image import decode_base64_image
from runtime.search_index import SearchIndex, has_bundle
from runtime.zero_shot import DEFAULT_TEMPLATES
from loom.artifact import index_dir_of
from loom.clip_request import parse_interrogate, parse_tags
from loom.errors import StatusError
from loom.json_limits import error_text, loads_request
from loom.search_request import check_fields, check_filters, check_k, check_one_query, check_text

log = logging.getLogger("loom.serve")

MAX_TEXTS = 64
EMBED_BATCH = 16
# A JSON Lines request embeds its pending images once they hold this many pixels, even before EMBED_BATCH:
# decoded images are kept at full size (the index was built from full-size decodes), so this bounds the
# memory a request holds to about two images at the pixel limit (docs/endpoint-contract.md, "Image limits").
PENDING_PIXELS = 2 * 4096 * 4096
EMBED_KEYS = {"task", "texts", "image"}
SEARCH_KEYS = {"task", "text", "image", "k", "filters"}
TASKS = ("embed", "search", "tags", "interrogate")
# A JSON Lines request stops starting lines when less than this is left before its deadline, so that the
# lines done so far are answered (with an error line for each other) before the server's 504.
LINE_MARGIN_S = 0.5


class ClipService:
    """A loaded CLIP artifact: its embedder, its zero-shot side and, when the artifact holds one, its index."""

    kind = "clip"

    def __init__(self, embedder: ClipEmbedder, index: SearchIndex | None, zero_shot: ZeroShot | None = None):
        if index is not None:
            index.check_embedder(embedder.model_info)
        self.embedder, self.index = embedder, index
        self.zero_shot = zero_shot or ZeroShot(embedder, None, DEFAULT_TEMPLATES, "", None, None)

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> "ClipService":
        embedder = ClipEmbedder.load(model_dir, device=device)
        index_dir = index_dir_of(model_dir)
        # A committed bundle (settled or not) is loaded; a half-written first one stops the start-up with its
        # folder named (BundleError) instead of serving "no index" (runtime/search_index.py has_bundle).
        index = SearchIndex.load(index_dir) if has_bundle(index_dir) else None
        zero_shot = ZeroShot.load(model_dir, embedder)
        log.info("CLIP %s, %d-d, index: %s, %s", embedder.model_id, embedder.dimension,
                 f"{index.size} products" if index else "none", zero_shot.summary)
        return cls(embedder, index, zero_shot)

    @property
    def model_info(self) -> dict[str, Any]:
        return self.embedder.model_info

    def warm_up(self) -> None:
        self.embedder.warm_up()
        self.zero_shot.warm_up()

    # -------------------------------------------------------------------------------------------
    def answer(self, request: Any, max_image_pixels: int) -> dict[str, Any] | list[list[float]]:
        """Answer one JSON request object: a task, or the post's prompt form (no task)."""
        if not isinstance(request, dict):
            raise StatusError(400, 'the request must be a JSON object such as {"task": "search", "text": "..."}')
        if "task" not in request and "prompt" in request:
            return self.prompt_probabilities(request, max_image_pixels)
        task = request.get("task")
        handlers = {"embed": self.embed, "search": self.search, "tags": self.tags, "interrogate": self.interrogate}
        if not isinstance(task, str) or task not in handlers:
            raise StatusError(400, f"'task' must be one of {', '.join(TASKS)} for this CLIP model, got {task!r} "
                                   '(or send {"image", "prompt": [...]} without a task for prompt probabilities)')
        return handlers[task](request, max_image_pixels)

    def prompt_probabilities(self, request: Mapping[str, Any], max_image_pixels: int) -> list[list[float]]:
        """The post's form: [[one probability per prompt, in order]] for the one image."""
        prompts = parse_prompts(request)
        vectors = self.embedder.embed_images([_image(_required_image(request), max_image_pixels)])
        return self.zero_shot.prompt_probabilities(vectors, prompts)

    def tags(self, request: Mapping[str, Any], max_image_pixels: int) -> dict[str, Any]:
        plan = self.zero_shot.plan(*parse_tags(request))  # refused before any image work
        image = _image(_required_image(request), max_image_pixels)
        return self.zero_shot.tag(self.embedder.embed_images([image]), plan)[0]

    def tag_images(self, images: list[Image.Image], attributes: list[str] | None = None,
                   labels: dict[str, list[str]] | None = None, min_probability: float | None = None
                   ) -> list[dict[str, Any]]:
        """{"tags", "withheld"} for each image, exactly as `{"task": "tags"}` answers; StatusError(400) for a
        request the endpoint would refuse (unknown attributes, empty or too many labels, ...)."""
        request = {"task": "tags", "attributes": attributes, "labels": labels, "min_probability": min_probability}
        plan = self.zero_shot.plan(*parse_tags({k: v for k, v in request.items() if v is not None}))
        if not all(isinstance(image, Image.Image) for image in images):
            raise TypeError("tag_images takes PIL images")
        vectors = [self.embedder.embed_images([i.convert("RGB") for i in images[start:start + EMBED_BATCH]])
                   for start in range(0, len(images), EMBED_BATCH)]
        return self.zero_shot.tag(np.concatenate(vectors) if vectors else np.zeros((0, self.embedder.dimension)),
                                  plan)

    def interrogate(self, request: Mapping[str, Any], max_image_pixels: int) -> dict[str, Any]:
        mode, max_terms, caption = parse_interrogate(request)
        self.zero_shot.check_tables()  # before any image work
        image = _image(_required_image(request), max_image_pixels)
        return self.zero_shot.interrogate(self.embedder.embed_images([image])[0], mode, max_terms, caption)

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

    def answer_lines(self, body: bytes, max_image_pixels: int,
                     time_left: Callable[[], float] | None = None) -> list[dict[str, Any]]:
        """One result per JSON Lines record, in order: an embedding, or tags for a line with "task": "tags";
        a bad line gets its own error, whatever its reading raised. Images are embedded EMBED_BATCH (or
        PENDING_PIXELS) at a time whatever the lines ask. `time_left` (the admission's): when less than
        LINE_MARGIN_S is left, no more lines are started and each line not answered gets an error line."""
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            raise StatusError(400, 'the JSON Lines body holds no records: one {"id", "image"} object per line')
        results: list[dict[str, Any] | None] = [None] * len(lines)
        pending: list[tuple[int, Any, Any, TagPlan | None]] = []
        plans: dict[str, TagPlan] = {}

        def flush() -> None:
            vectors = self.embedder.embed_images([image for _, _, image, _ in pending])
            for (index, record_id, _, plan), vector in zip(pending, vectors, strict=True):
                if plan is None:
                    results[index] = {"id": record_id, "embedding": [round(float(v), 7) for v in vector]}
                else:
                    results[index] = {"id": record_id, **self.zero_shot.tag(vector[None], plan)[0]}
            pending.clear()

        ids: dict[int, Any] = {}
        for number, line in enumerate(lines):
            if time_left is not None and time_left() < LINE_MARGIN_S:
                pending.clear()  # not embedded: answered below as not answered
                break
            try:
                record = loads_request(line, "the line")
                if not isinstance(record, dict) or "image" not in record:
                    raise StatusError(400, 'each line must be an object with "image" (base64) and an optional "id"')
                ids[number] = record.get("id")
                plan = self._line_plan(record, plans)  # the line's fields before its image
                pending.append((number, ids[number], _image(record["image"], max_image_pixels), plan))
            except StatusError as exc:
                results[number] = {"id": ids.get(number), "error": f"line {number + 1}: {error_text(exc.message)}"}
            except Exception as exc:  # a line must never cost the other lines their answers
                log.exception("line %d could not be read", number + 1)
                results[number] = {"id": ids.get(number), "error": f"line {number + 1}: the line could not be read "
                                                                   f"({type(exc).__name__}); check its fields"}
            if len(pending) >= EMBED_BATCH or sum(i.width * i.height for _, _, i, _ in pending) >= PENDING_PIXELS:
                flush()
        if pending:
            flush()
        for number, result in enumerate(results):
            if result is None:
                results[number] = {"id": ids.get(number), "error": f"line {number + 1}: not answered within "
                                   "the request's deadline (REQUEST_TIMEOUT_S, or the server is stopping): send it again"}
        return results  # type: ignore[return-value]

    def _line_plan(self, record: Mapping[str, Any], plans: dict[str, TagPlan]) -> TagPlan | None:
        """None for an embed line; the tags plan of a tags line (shared by lines that ask the same)."""
        task = record.get("task")
        if task is None:
            return None
        if task != "tags":
            raise StatusError(400, f"a line's 'task' is \"tags\" or absent (embed), got {task!r}")
        asked = parse_tags(record, extra=frozenset({"id"}))
        key = json.dumps(asked, sort_keys=True)
        if key not in plans:
            plans[key] = self.zero_shot.plan(*asked)
        return plans[key]


def _required_image(request: Mapping[str, Any]) -> Any:
    if "image" not in request:
        raise StatusError(400, "'image' is required: the photo's file bytes, base64")
    return request["image"]


def _image(value: Any, max_image_pixels: int):
    try:
        return decode_image(decode_base64_image(value), max_image_pixels)
    except ImageError as exc:
        raise StatusError(400, str(exc)) from None
