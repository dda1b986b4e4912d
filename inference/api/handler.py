"""The API Lambda: API Gateway HTTP API (payload format 2.0) -> attributes, descriptions, search, tags, restyling.

Entry point `inference.api.handler.handler`. Routes (the public contract: loom/api_openapi.json, docs/api.md):
`POST /describe`, `POST /attributes`, `POST /search`, `POST /tags`, `POST /interrogate`, `POST /restyle`.

One request path: every route is a function `answer(event, log) -> body` that returns the 200 body or raises a
StatusError; `_serve` turns either into the response, logs the request once, records its metrics and keeps
the response under Lambda's 6 MB. The logic lives in the route modules; this one only routes and shapes HTTP.
Logs are structured JSON (Powertools Logger): request ids, latencies, coverage; never the image.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths

from inference.api import aws_clients, service, telemetry
from inference.api.visual import restyle, tags
from loom.errors import StatusError, echo
from loom.schema import DEFAULT_PRODUCT_NOUN

logger = Logger(service=telemetry.SERVICE)
app = APIGatewayHttpResolver()

# A 503 means "busy or not ready": tell clients when to retry (RFC 9110, section 10.2.3).
RETRY_AFTER_S = 2
# A synchronous invocation's response is at most 6 MB, the envelope API Gateway reads included (Lambda quotas:
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): a body whose envelope would pass
# this (with room for the status and headers) is answered 502 instead of failing in Lambda.
MAX_RESPONSE_BYTES = 6_000_000

Answer = Callable[[Any, dict[str, Any]], dict[str, Any]]


def _json(status: int, body: dict[str, Any]) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def _serve(route: str, answer: Answer) -> Response:
    """The one request path: the route's answer or its StatusError as the response, logged once, measured."""
    started = time.monotonic()
    log: dict[str, Any] = {"route": route}
    try:
        status, body = 200, answer(app.current_event, log)
    except StatusError as exc:
        status, body = exc.status, exc.body()
        log["error"] = exc.message
    size = _response_size(body)
    if size > MAX_RESPONSE_BYTES:
        status, body = 502, {"error": f"the answer would be {size} bytes, over the {MAX_RESPONSE_BYTES}-byte limit "
                                      "of a Lambda response: ask for less"}
        log["error"] = body["error"]
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    log.update(status=status, total_ms=latency_ms)
    if status == 200:
        logger.info("request answered", extra=log)
    else:
        logger.warning("request refused" if status < 500 else "request failed", extra=log)
    telemetry.record_request(route, status, latency_ms, body)
    return _json(status, body)


def _response_size(body: dict[str, Any]) -> int:
    """The bytes `body` takes in the Lambda response: serialised as Powertools does (ASCII, compact), then
    escaped once more as the envelope's `body` string (only measured when it could matter)."""
    text = json.dumps(body, separators=(",", ":"))
    return len(text) if len(text) < MAX_RESPONSE_BYTES // 2 else len(json.dumps(text))


def answer_product(describe: bool) -> Answer:
    def answer(event: Any, log: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        settings = service.Settings.from_env()
        request = service.parse_request(event.body, event.is_base64_encoded, event.headers.get("content-type"),
                                        event.query_string_parameters, describe=describe)
        log.update(image={"format": request.image_format, "width": request.width, "height": request.height,
                          "bytes": len(request.image)}, language=request.language)
        return service.answer(settings, request, describe=describe, log=log, started=started)

    return answer


def answer_search(event: Any, log: dict[str, Any]) -> dict[str, Any]:
    from inference.api.visual import search  # the OpenSearch client's modules load only for this route

    return search.search(search.SearchSettings.from_env(), search.parse_search(event.body, event.is_base64_encoded))


def answer_tags(event: Any, log: dict[str, Any]) -> dict[str, Any]:
    return tags.answer_tags(event)


def answer_interrogate(event: Any, log: dict[str, Any]) -> dict[str, Any]:
    body = tags.answer_interrogate(event)
    log.update(caption=bool(body.get("caption")), caption_error=body.get("caption_error"))
    return body


def answer_restyle(event: Any, log: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    settings = restyle.RestyleSettings.from_env(os.environ)
    settings.require_enabled()
    request = restyle.parse_restyle_request(event.body, event.is_base64_encoded, event.headers.get("content-type"))
    clip = tags.clip_settings()
    interrogate = (tags.prompt_interrogator(clip, restyle.INTERROGATE_MODE, restyle.INTERROGATE_READ_S)
                   if clip else None)
    body = restyle.answer_restyle(
        settings, request, endpoint=service.Settings.from_env().endpoint(), default_product=DEFAULT_PRODUCT_NOUN,
        bedrock=restyle.image_client(settings.region), s3=restyle.storage_client,
        deadline=started + aws_clients.REQUEST_BUDGET_S, clock=time.monotonic, interrogate=interrogate)
    log.update(delivery="url" if "url" in body else "inline", prompt_source=body["prompt_source"],
               interrogate_error=body.get("interrogate_error"))
    return body


ROUTES: dict[str, Answer] = {
    "/describe": answer_product(describe=True),
    "/attributes": answer_product(describe=False),
    "/search": answer_search,
    "/tags": answer_tags,
    "/interrogate": answer_interrogate,
    "/restyle": answer_restyle,
}


def _register(path: str, answer: Answer) -> None:
    app.post(path)(lambda: _serve(f"POST {path}", answer))


for _path, _answer in ROUTES.items():
    _register(_path, _answer)


@app.not_found
def no_route(exc: Exception) -> Response:
    event = app.current_event
    method, path = event.request_context.http.method, event.raw_path
    routes = ", ".join(f"POST {p}" for p in ROUTES)

    def refuse(event: Any, log: dict[str, Any]) -> dict[str, Any]:
        raise StatusError(404, f"no route {echo(method, 10)[1:-1]} {echo(path)[1:-1]}: use one of {routes}")

    return _serve("unmatched", refuse)


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    telemetry.record_request("unexpected", 500, 0.0)
    return _json(500, {"error": "internal error; the request id in the logs tells what happened"})


@telemetry.metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
