"""The SageMaker inference HTTP app: `GET /ping` and `POST /invocations` (docs/endpoint-contract.md).

`create_app` builds the Flask app from an explicit predictor, or from a factory that loads one in a
background thread so that the worker answers `/ping` with 503 while the model loads. Every bad request is
a 4xx with `{"error": "..."}` that says what to fix; nothing a client sends reaches a 500.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from inference.server.images import DEFAULT_MAX_IMAGE_PIXELS, ImageError, decode_base64, decode_image

log = logging.getLogger("loom.serve")

JSON_TYPES = {"application/json"}
DEFAULT_BATCH_PRODUCTS = 8
JSONLINES_TYPES = {"application/jsonlines", "application/x-jsonlines", "application/jsonl"}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "application/x-image"}
SUPPORTED_TYPES = sorted(JSON_TYPES | JSONLINES_TYPES | IMAGE_TYPES)
REQUEST_KEYS = {"image", "attributes", "prompt", "parameters", "id"}
MAX_PROMPT_CHARS = 1000
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Generation bounds: a request cannot buy more GPU time than this (this module must not import torch).
MAX_NEW_TOKENS_LIMIT = 64
MAX_BEAMS = 4


class RequestError(ValueError):
    """A request the client must fix; becomes a 4xx with `{"error": message}`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ModelSlot:
    """The worker's predictor and its loading state: loading, ready, or failed (with the reason)."""

    def __init__(self, predictor: Any = None):
        self.predictor = predictor
        self.error: str | None = None
        self.started = time.monotonic()

    def load_in_background(self, factory: Callable[[], Any], timeout_s: float | None = None) -> threading.Thread:
        def run() -> None:
            try:
                self.predictor = factory()
                log.info("model loaded in %.1f s", time.monotonic() - self.started)
            except Exception as exc:  # reported by /ping as a 500: the endpoint must not go InService
                log.exception("model failed to load")
                self.error = f"the model failed to load: {exc!r}"

        thread = threading.Thread(target=run, name="loom-model-loader", daemon=True)
        self.timeout_s = timeout_s
        thread.start()
        return thread

    @property
    def state(self) -> str:
        if self.predictor is not None:
            return "ok"
        if self.error is None and getattr(self, "timeout_s", None) and time.monotonic() - self.started > self.timeout_s:
            self.error = f"the model did not load within MODEL_LOAD_TIMEOUT={self.timeout_s:g} s"
        return "failed" if self.error else "loading"


def parse_parameters(value: Any) -> dict[str, int]:
    """Validate generation `parameters`: only `max_new_tokens` (1..64) and `num_beams` (1..4)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError("'parameters' must be an object such as {\"max_new_tokens\": 16}")
    limits = {"max_new_tokens": MAX_NEW_TOKENS_LIMIT, "num_beams": MAX_BEAMS}
    unknown = sorted(set(value) - set(limits))
    if unknown:
        raise RequestError(f"unsupported parameters {unknown}; allowed: {sorted(limits)}")
    params = {}
    for key, limit in limits.items():
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
                raise RequestError(f"parameters.{key} must be an integer from 1 to {limit}, got {v!r}")
            params[key] = v
    return params


def parse_attributes(value: Any, known: list[str]) -> list[str] | None:
    """Validate the requested attribute names against the manifest's (None: all of them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RequestError("'attributes' must be a non-empty list of attribute names (omit it to ask all); "
                           f"known: {known}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise RequestError(f"unknown attributes {unknown}; this model answers: {known}")
    if len(set(value)) != len(value):
        raise RequestError(f"'attributes' lists a name twice: {value}")
    return value


def create_app(predictor: Any = None, *, predictor_factory: Callable[[], Any] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               load_timeout_s: float | None = None, batch_products: int = DEFAULT_BATCH_PRODUCTS) -> Flask:
    """The Flask app around `predictor`, or around the one `predictor_factory` loads in a background thread.

    `batch_products`: how many JSON Lines products are answered together in one batched generation.
    """
    if (predictor is None) == (predictor_factory is None):
        raise ValueError("pass exactly one of predictor and predictor_factory")
    app = Flask("loom-inference")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False
    slot = ModelSlot(predictor)
    app.extensions["loom_model"] = slot
    if predictor_factory is not None:
        slot.load_in_background(predictor_factory, load_timeout_s)

    def reply(body: Mapping[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")

    too_large = (f"the request body is larger than the server's limit of {max_body_bytes} bytes (MAX_BODY_MB): "
                 f"send a smaller image")

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        return reply({"error": str(exc) if exc.status != 413 else too_large}, exc.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description
        if exc.code == 413:
            message = too_large
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}: use GET /ping or POST /invocations"
        elif exc.code == 404:
            message = f"no route {request.path}: use GET /ping or POST /invocations"
        return reply({"error": message}, exc.code or 500)

    @app.errorhandler(Exception)
    def _server_error(exc: Exception):
        log.exception("unexpected error answering %s", request.path)
        return reply({"error": f"internal error: {type(exc).__name__}; the request was not answered"}, 500)

    @app.get("/ping")
    def ping():
        state = slot.state
        if state == "ok":
            return reply({"status": "ok"})
        if state == "failed":
            return reply({"status": "failed", "error": slot.error}, 500)
        return reply({"status": "loading"}, 503)

    def ready_predictor() -> Any:
        state = slot.state
        if state != "ok":
            raise RequestError(slot.error if state == "failed" else "the model is still loading: retry shortly",
                               500 if state == "failed" else 503)
        return slot.predictor

    def parse_product(predictor: Any, item: Any, *, allow_prompt: bool):
        """Validate one product request object: (image, attribute names or None, parameters, prompt or None)."""
        if not isinstance(item, dict):
            raise RequestError("the request must be a JSON object such as {\"image\": \"<base64>\"}")
        extra = sorted(set(item) - REQUEST_KEYS)
        if extra:
            raise RequestError(f"unexpected fields {extra}; allowed: {sorted(REQUEST_KEYS)}")
        if "image" not in item:
            raise RequestError("'image' is missing: send the image file's bytes as a base64 string")
        params = parse_parameters(item.get("parameters"))
        prompt = item.get("prompt")
        if prompt is not None:
            if not allow_prompt:
                raise RequestError("'prompt' is not accepted in JSON Lines batches; ask attributes")
            if "attributes" in item:
                raise RequestError("send either 'prompt' or 'attributes', not both")
            if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
                raise RequestError(f"'prompt' must be a non-empty question of at most {MAX_PROMPT_CHARS} characters")
        names = parse_attributes(item.get("attributes"), predictor.schema.names)
        image = decode_image(decode_base64(item["image"]), max_image_pixels)
        return image, names, params, prompt.strip() if prompt is not None else None

    def answer_product(predictor: Any, item: Any, *, allow_prompt: bool) -> dict[str, Any]:
        """Validate one product request object and answer it."""
        image, names, params, prompt = parse_product(predictor, item, allow_prompt=allow_prompt)
        if prompt is not None:
            answer = predictor.answer_prompt(image, prompt, **params)
            return {"answer": answer.text, "confidence": round(answer.confidence, 4)}
        return predictor.answer_attributes(image, names, **params).to_dict()

    def load_json(text: bytes, where: str = "the body") -> Any:
        try:
            return json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RequestError(f"{where} is not valid JSON ({exc}); send a JSON object") from None

    @app.post("/invocations")
    def invocations():
        started = time.perf_counter()
        content_type = (request.mimetype or "").lower()
        if content_type not in SUPPORTED_TYPES:
            raise RequestError(f"unsupported Content-Type {content_type or '(none)'!r}; use one of "
                               f"{SUPPORTED_TYPES}", 415)
        predictor = ready_predictor()
        body = read_body()
        if getattr(predictor, "kind", None) == "clip":  # search hook: CLIP requests live in clip_app.py
            from inference.server.clip_app import answer_clip_request
            return answer_clip_request(predictor, content_type, body, max_image_pixels)
        if content_type in JSONLINES_TYPES:
            return jsonlines(predictor, body)
        try:
            if content_type in IMAGE_TYPES:
                image = decode_image(body, max_image_pixels)
                result = predictor.answer_attributes(image, None).to_dict()
            else:
                result = answer_product(predictor, load_json(body), allow_prompt=True)
        except ImageError as exc:
            raise RequestError(str(exc)) from None
        result["model"] = predictor.model_info
        result["timing_ms"] = {"total": round((time.perf_counter() - started) * 1000, 1)}
        return reply(result)

    def read_body() -> bytes:
        # Werkzeug enforces MAX_CONTENT_LENGTH from the Content-Length header; a chunked body has none,
        # so read at most one byte past the limit and refuse what does not fit.
        if request.content_length is not None and request.content_length > max_body_bytes:
            raise RequestError("", 413)
        chunks, total = [], 0
        while True:  # a stream read may return less than asked (one chunk of a chunked body)
            piece = request.stream.read(min(1 << 20, max_body_bytes + 1 - total))
            if not piece:
                return b"".join(chunks)
            chunks.append(piece)
            total += len(piece)
            if total > max_body_bytes:
                raise RequestError("", 413)

    def jsonlines(predictor: Any, body: bytes) -> Response:
        """One result line per product line, in order. Valid products are answered `batch_products` at a
        time in one batched generation; a line that cannot be answered gets its error on its own line."""
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            raise RequestError("the JSON Lines body holds no products: one {\"id\", \"image\"} object per line")
        results: list[dict[str, Any] | None] = [None] * len(lines)
        batch: list[tuple[int, Any, Any, list[str] | None]] = []
        batch_params: dict[str, int] = {}

        def answer_batch() -> None:
            answers = predictor.answer_attributes_many([(image, names) for _, _, image, names in batch],
                                                       **batch_params)
            for (index, product_id, _, _), answer in zip(batch, answers, strict=True):
                results[index] = {"id": product_id, **answer.to_dict()}
            batch.clear()

        for index, line in enumerate(lines):
            product_id = None
            try:
                item = load_json(line, f"line {index + 1}")
                product_id = item.get("id") if isinstance(item, dict) else None
                image, names, params, _ = parse_product(predictor, item, allow_prompt=False)
            except (RequestError, ImageError) as exc:
                results[index] = {"id": product_id, "error": f"line {index + 1}: {exc}"}
                continue
            if batch and params != batch_params:
                answer_batch()  # products in one generation share its parameters
            batch_params = params
            batch.append((index, product_id, image, names))
            if len(batch) >= batch_products:
                answer_batch()
        if batch:
            answer_batch()
        out = [json.dumps(result, ensure_ascii=False) for result in results]
        return Response("\n".join(out) + "\n", status=200, mimetype="application/jsonlines")

    return app
