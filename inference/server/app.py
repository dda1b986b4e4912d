"""The SageMaker inference HTTP app: `GET /ping`, `GET /execution-parameters`, `POST /invocations`.

`create_app` builds the Flask app (the application-factory pattern of the Flask tutorial) from an explicit
predictor, or from a factory that loads one in a background thread so that `/ping` answers 503 while the
model loads. The routes are the module-level functions below; the worker's state (the model slot, the
bounded model queue, the limits) lives in `app.extensions["loom"]`. Request parsing is in
`request_parsing`, JSON Lines in `jsonlines`, the queue in `model_queue`. Every bad request is a 4xx with
`{"error": "..."}` that says what to fix; nothing a client sends reaches a 500.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from inference.server import legacy_requests
from runtime.images import DEFAULT_DECODE_THREADS, DEFAULT_MAX_IMAGE_PIXELS, DecodePool
from inference.server.jsonlines import answer_jsonlines, product_item
from inference.server.model_queue import Admission, ModelQueue, ModelSlot
from inference.server.request_parsing import (
    IMAGE_TYPES,
    JSONLINES_TYPE,
    JSONLINES_TYPES,
    RequestError,
    body_too_large,
    image_draft_side,
    load_json,
    parse_facts,
    parse_product_fields,
    read_body,
    request_content_type,
    response_type,
)
from loom.errors import StatusError
from loom.json_limits import error_text
from loom.image_header import ImageError

log = logging.getLogger("loom.serve")

MB = 1024 * 1024
SAGEMAKER_MAX_PAYLOAD_MB = 100  # MaxPayloadInMB's upper bound (CreateTransformJob API reference)
TRANSFORMS_PER_WORKER = 2  # Batch Transform requests in flight per worker (GET /execution-parameters)


@dataclass(frozen=True)
class ServerLimits:
    """What one worker accepts and how long it works on it (serve.ServeSettings fills it from the environment)."""

    max_body_bytes: int = 20 * MB
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    batch_products: int = 16  # MAX_BATCH_PRODUCTS: most products in one model call, across requests
    batch_wait_ms: float = 0.0  # BATCH_WAIT_MS: how long a call may wait for admitted requests to join it
    max_pending: int = 100  # admitted requests (running or waiting for the model); past that: 503
    request_timeout_s: float = 60.0  # an admitted request's deadline; past it: 504
    stuck_after_s: float = 300.0  # one model call running longer than this: /ping 500
    load_timeout_s: float | None = None  # the model must load within this, else /ping 500
    workers: int = 1  # worker processes of this server (GET /execution-parameters)
    decode_threads: int = DEFAULT_DECODE_THREADS  # images decoding at once in one worker (IMAGE_DECODE_THREADS)


@dataclass
class ServerState:
    """One worker's model slot, model queue and limits."""

    slot: ModelSlot
    queue: ModelQueue
    limits: ServerLimits
    decoder: DecodePool


def create_app(predictor: Any = None, *, predictor_factory: Callable[[], Any] | None = None,
               limits: ServerLimits | None = None, **overrides: Any) -> Flask:
    """The Flask app around `predictor`, or around the one `predictor_factory` loads in a background thread.

    `limits` (default `ServerLimits()`), with any of its fields overridden by keyword (`max_body_bytes=...`).
    """
    if (predictor is None) == (predictor_factory is None):
        raise ValueError("pass exactly one of predictor and predictor_factory")
    limits = dataclasses.replace(limits or ServerLimits(), **overrides)
    app = Flask("loom-inference")
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes
    slot = ModelSlot(predictor, limits.load_timeout_s)
    queue = ModelQueue(limits.max_pending, limits.request_timeout_s, limits.stuck_after_s,
                       max_batch_products=limits.batch_products, batch_wait_ms=limits.batch_wait_ms)
    app.extensions["loom"] = ServerState(slot, queue, limits, DecodePool(limits.decode_threads))
    if predictor_factory is not None:
        slot.load_in_background(predictor_factory)
    app.add_url_rule("/ping", view_func=ping, methods=["GET"])
    app.add_url_rule("/execution-parameters", view_func=execution_parameters, methods=["GET"])
    app.add_url_rule("/invocations", view_func=invocations, methods=["POST"])
    app.register_error_handler(StatusError, status_error)
    app.register_error_handler(ImageError, image_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, server_error)
    return app


def state() -> ServerState:
    return current_app.extensions["loom"]


def reply(body: Mapping[str, Any], status: int = 200, mimetype: str = "application/json") -> Response:
    text = json.dumps(body, ensure_ascii=False) + ("\n" if mimetype == JSONLINES_TYPE else "")
    return Response(text, status=status, mimetype=mimetype)


# -- routes ---------------------------------------------------------------------------------------------------

def ping() -> Response:
    """200 when the model is loaded and not stuck; 503 while it loads; 500 when it failed or is stuck.

    It never touches the model queue: it answers from a request thread whatever the inference load.
    """
    server = state()
    current = server.slot.state
    if current == "loading":
        return reply({"status": "loading"}, 503)
    reason = server.slot.error if current == "failed" else server.queue.stuck_reason()
    if reason:
        return reply({"status": "failed", "error": reason}, 500)
    return reply({"status": "ok"})


def execution_parameters() -> Response:
    """What Batch Transform asks before invoking when the job leaves these unset (docs/endpoint-contract.md)."""
    limits = state().limits
    # Two requests per worker: one request's lines are read and preprocessed while the other's batch runs on
    # the model, and their partial batches share a call (model_queue.py). Never more than are admitted.
    concurrent = min(limits.max_pending, TRANSFORMS_PER_WORKER * limits.workers)
    return reply({"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MULTI_RECORD",
                  "MaxPayloadInMB": max(1, min(SAGEMAKER_MAX_PAYLOAD_MB, limits.max_body_bytes // MB))})


def invocations() -> Response:
    """One product (JSON or raw image) or a JSON Lines batch; admitted to the model queue or refused (503)."""
    started = time.perf_counter()
    server = state()
    declared = (request.mimetype or "").lower()  # untyped bodies: the design documents' clients (legacy_requests)
    content_type = declared if legacy_requests.is_untyped(declared) else request_content_type(request)
    answer_type = response_type(request, content_type)
    predictor = server.slot.ready_predictor()
    with server.queue.admitted() as admission:  # before the body is read: a refusal costs nothing
        body = read_body(request, server.limits.max_body_bytes, admission.time_left)  # 408 past the deadline
        content_type = legacy_requests.content_type_of(content_type, body)
        if getattr(predictor, "kind", None) == "clip":  # search hook: CLIP requests: clip_invocations.py
            from inference.server.clip_invocations import answer_clip_request

            status, text, mimetype = admission.run(answer_clip_request, predictor, content_type, body,
                                                   server.limits.max_image_pixels, admission=admission)
            return Response(text, status=status, mimetype=mimetype)
        if content_type in JSONLINES_TYPES:
            text = answer_jsonlines(body, predictor, admission, batch_products=server.limits.batch_products,
                                    max_image_pixels=server.limits.max_image_pixels, decoder=server.decoder)
            return Response(text, status=200, mimetype=JSONLINES_TYPE)
        result = answer_product(body, content_type, predictor, admission, server.limits.max_image_pixels,
                                server.decoder)
    result["model"] = predictor.model_info
    result["timing_ms"] = {"total": round((time.perf_counter() - started) * 1000, 1)}
    return reply(result, mimetype=answer_type)


def answer_product(body: bytes, content_type: str, predictor: Any, admission: Admission,
                   max_image_pixels: int, decoder: DecodePool) -> dict[str, Any]:
    """Answer a raw image (every attribute) or a JSON product request (attributes or a prompt).

    Every field is checked before the image is decoded; the decode runs on the worker's DecodePool, within
    the request's deadline."""
    def decode(data: bytes):
        return decoder.decode(data, max_image_pixels, draft_side=image_draft_side(predictor), admission=admission)

    if content_type in IMAGE_TYPES:
        return answer_attributes(predictor, admission, decode(body), None, {}, {})
    item = load_json(body)
    data, names, params, prompt = parse_product_fields(item, predictor.schema.names, allow_prompt=True)
    facts = parse_facts(predictor, item)
    image = decode(data)
    if prompt is not None:
        answer = admission.run(predictor.answer_prompt, image, prompt, **params)
        # The label and value as their own key too ({"Sleeve Length": "Long Sleeves"}): the fashion post reads it.
        return {**legacy_requests.seed_answer_fields(answer.text), "answer": answer.text,
                "confidence": round(answer.confidence, 4)}
    return answer_attributes(predictor, admission, image, names, facts, params)


def answer_attributes(predictor: Any, admission: Admission, image: Any, names: list[str] | None,
                      facts: dict[str, Any], params: dict[str, int]) -> dict[str, Any]:
    """One product's attributes, in a model call shared with other requests' products (model_queue)."""
    item = product_item(predictor, image, names, facts)  # preprocessed here, in the request thread
    return admission.run_batched(predictor.answer_attributes_many, [item], **params)[0].to_dict()


# -- errors: every one is {"error": ...} ----------------------------------------------------------------------

def status_error(exc: StatusError) -> Response:
    return reply({"error": error_text(exc.message)}, exc.status)


def image_error(exc: ImageError) -> Response:
    return reply({"error": error_text(str(exc))}, 400)


def http_error(exc: HTTPException) -> Response:
    message = exc.description
    if exc.code == 413:
        message = body_too_large(state().limits.max_body_bytes)
    elif exc.code == 405:
        message = f"{request.method} is not allowed on {request.path}: use GET /ping or POST /invocations"
    elif exc.code == 404:
        message = f"no route {request.path}: use GET /ping or POST /invocations"
    return reply({"error": message}, exc.code or 500)


def server_error(exc: Exception) -> Response:
    log.exception("unexpected error answering %s", request.path)
    return reply({"error": f"internal error: {type(exc).__name__}; the request was not answered"}, 500)


__all__ = ["RequestError", "ServerLimits", "create_app"]
