"""Reading a request body for any route, checked against the public contract (loom/api_openapi.json).

Every route's JSON body passes here before anything else runs: size, base64, JSON, then the route's
request schema (unknown fields, types, ranges, lengths, counts), so that a request that breaks the
document is a 400 naming the field and never reaches a paid call.

Size limits (sources in docs/api.md): a synchronous Lambda invocation takes at most 6 MB, and API
Gateway delivers a binary body base64-encoded (4/3 larger), as does the JSON `image` field; the endpoint
request (InvokeEndpoint Body, 6,291,456 bytes) carries the image base64-encoded again. A 4 MiB image is
5.6 MB in base64, which fits both with room for the JSON around it; larger images are refused with 413.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, Mapping

import loom
from loom.errors import StatusError
from loom.image_header import ImageError, ImageInfo, inspect_image
from loom.json_schema import Document, SchemaViolation

MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_BODY_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 64 * 1024  # the base64 image plus room for JSON fields
IMAGE_TYPES = ("image/jpeg", "image/png")
OPENAPI_FILE = Path(loom.__file__).resolve().parent / "api_openapi.json"
API = Document.load(OPENAPI_FILE)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(body: str | None, is_base64: bool, schema: str, example: str) -> dict[str, Any]:
    """The JSON object of a request body, checked against the contract's `schema`; StatusError otherwise
    (400 naming what to fix, 413 past MAX_BODY_CHARS). `example` shows a well-formed body."""
    if not body:
        raise StatusError(400, f"the request body is missing: send {example}")
    if len(body) > MAX_BODY_CHARS:
        raise StatusError(413, f"the request body is too large: images may be at most {MAX_IMAGE_BYTES} bytes")
    try:
        text = b64decode(body, "body") if is_base64 else body
        # NaN and Infinity are not JSON (RFC 8259 section 6); deep nesting raises RecursionError.
        request = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise StatusError(400, f"the body is not valid JSON ({reason}): send a JSON object") from None
    if not isinstance(request, dict):
        raise StatusError(400, f"the body must be a JSON object such as {example}")
    check(request, schema)
    return request


def check(request: Mapping[str, Any], schema: str) -> None:
    """StatusError 400 naming the field when `request` breaks the contract's `schema`."""
    try:
        API.validate(request, schema)
    except SchemaViolation as exc:
        raise StatusError(400, str(exc)) from None


def b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise StatusError(400, f"the {what} is not valid base64") from None


def check_image_upload(image: bytes, error: type[StatusError] = StatusError, field: str | None = None) -> ImageInfo:
    """An uploaded image's format and size: 413 past MAX_IMAGE_BYTES, 400 for what the header check refuses
    (the message names `field` when given)."""
    if len(image) > MAX_IMAGE_BYTES:
        raise error(413, f"the image is {len(image)} bytes; the limit is {MAX_IMAGE_BYTES} bytes (4 MiB)")
    try:
        return inspect_image(image)
    except ImageError as exc:
        raise error(400, f"'{field}': {exc}" if field else str(exc)) from None
