"""The API Lambda: API Gateway HTTP API (payload format 2.0) -> attributes and a product description.

Entry point `inference.api.handler.handler`. Routes: `POST /describe`, `POST /attributes`, `POST /search`,
`POST /tags`, `POST /interrogate`, `POST /restyle` (docs/api.md).
The logic lives in `inference.api.service`; this module only routes, logs and shapes HTTP responses.
Logs are structured JSON (Powertools Logger): request ids, latencies, coverage; never the image.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths

from inference.api import aws_clients
from inference.api.visual import restyle, tags
from inference.api.service import ApiError, Settings, answer, parse_request
from loom.errors import StatusError
from loom.schema import DEFAULT_PRODUCT_NOUN

logger = Logger(service="loom-api")
app = APIGatewayHttpResolver()


# A 503 means "busy or not ready": tell clients when to retry (RFC 9110, section 10.2.3).
RETRY_AFTER_S = 2


def _json(status: int, body: dict[str, Any]) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def _serve(describe: bool) -> Response:
    started = time.monotonic()
    event = app.current_event
    route = f"{event.request_context.http.method} {event.raw_path}"
    try:
        settings = Settings.from_env()
        request = parse_request(
            settings,
            event.body,
            event.is_base64_encoded,
            event.headers.get("content-type"),
            event.query_string_parameters,
        )
        logger.append_keys(image={"format": request.image_format, "width": request.width,
                                  "height": request.height, "bytes": len(request.image)},
                           language=request.language)  # fmt: skip
        body, fields = answer(settings, request, describe=describe, started=started)
        fields.update(route=route, status=200, total_ms=round((time.monotonic() - started) * 1000, 1))
        logger.info("request answered", extra=fields)
        return _json(200, body)
    except ApiError as exc:
        logger.warning("request refused", extra={"route": route, "status": exc.status, "error": exc.message})
        return _json(exc.status, {"error": exc.message})
    finally:
        logger.remove_keys(["image", "language"])


@app.post("/describe")
def describe_product() -> Response:
    return _serve(describe=True)


@app.post("/attributes")
def product_attributes() -> Response:
    return _serve(describe=False)


@app.post("/search")
def search_products() -> Response:  # search hook: the logic lives in inference/api/visual/search.py
    from inference.api.visual.search import answer_search

    status, body = answer_search(app.current_event)
    logger.info("search answered", extra={"route": "POST /search", "status": status})
    return _json(status, body)


@app.post("/tags")
def tag_product() -> Response:  # the logic lives in inference/api/visual/tags.py
    status, body = tags.answer_tags(app.current_event)
    logger.info("tags answered", extra={"route": "POST /tags", "status": status})
    return _json(status, body)


@app.post("/interrogate")
def interrogate_product() -> Response:
    status, body = tags.answer_interrogate(app.current_event)
    logger.info("interrogate answered", extra={"route": "POST /interrogate", "status": status,
                                               "caption": status == 200 and bool(body.get("caption")),
                                               "caption_error": body.get("caption_error")})
    return _json(status, body)


@app.post("/restyle")
def restyle_product() -> Response:
    started = time.monotonic()
    event = app.current_event
    try:
        settings = restyle.RestyleSettings.from_env(os.environ)
        settings.require_enabled()
        request = restyle.parse_restyle_request(event.body, event.is_base64_encoded, event.headers.get("content-type"))
        clip = tags.clip_settings()
        interrogate = (tags.prompt_interrogator(clip, restyle.INTERROGATE_MODE, restyle.INTERROGATE_READ_S)
                       if clip else None)
        body = restyle.answer_restyle(
            settings, request, endpoint=Settings.from_env().endpoint(), default_product=DEFAULT_PRODUCT_NOUN,
            bedrock=restyle.image_client(settings.region), s3=restyle.storage_client,
            deadline=started + aws_clients.REQUEST_BUDGET_S, clock=time.monotonic, interrogate=interrogate)
        logger.info("restyle answered", extra={"route": "POST /restyle", "status": 200, "delivery":
                                               "url" if "url" in body else "inline",
                                               "prompt_source": body["prompt_source"],
                                               "interrogate_error": body.get("interrogate_error"),
                                               "total_ms": round((time.monotonic() - started) * 1000, 1)})
        return _json(200, body)
    except StatusError as exc:
        logger.warning("request refused", extra={"route": "POST /restyle", "status": exc.status, "error": exc.message})
        return _json(exc.status, exc.body())


@app.not_found
def no_route(exc: Exception) -> Response:
    event = app.current_event
    method, path = event.request_context.http.method, event.raw_path
    return _json(404, {"error": f"no route {method} {path}: use POST /describe or POST /attributes"})


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    return _json(500, {"error": "internal error; the request id in the logs tells what happened"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
