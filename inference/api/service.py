"""The API's logic, free of Lambda specifics: configuration, request validation, the two calls, the answer.

`inference.api.handler` turns an API Gateway event into `parse_request(...)` and `answer(...)` calls; everything
here takes and returns plain values, so it runs the same on Lambda, in `make demo` and in tests.

Size limits (sources in docs/api.md): a synchronous Lambda invocation takes at most 6 MB, and API
Gateway delivers a binary body base64-encoded (4/3 larger), as does the JSON `image` field; the endpoint
request (InvokeEndpoint Body, 6,291,456 bytes) carries the image base64-encoded again. A 4 MiB image is
5.6 MB in base64, which fits both with room for the JSON around it; larger images are refused with 413.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

from inference.api import aws_clients
from inference.api.describe import (
    DEFAULT_MODEL_ID,
    BedrockWriter,
    DescriptionWriter,
    OfflineWriter,
    clean_product_type,
    language_code,
    write_description,
)
from inference.api.endpoint_client import AttributeEndpoint, EndpointError, endpoint_for
from loom.base64_image import decode_base64_image
from loom.abstention import check_known_attributes
from loom.calibration import check_min_precision
from loom.errors import StatusError
from loom.image_header import ImageError, ImageInfo, inspect_image

MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_BODY_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 64 * 1024  # the base64 image plus room for JSON fields
IMAGE_TYPES = ("image/jpeg", "image/png")


class ApiError(StatusError):
    """A request the API refuses; `status` and `message` become the `{"error": ...}` response."""


@dataclass(frozen=True)
class Settings:
    """The Lambda's configuration, read once from the environment (Terraform sets the same names)."""

    endpoint_name: str | None
    endpoint_url: str | None
    description_backend: str
    bedrock_model_id: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        name = env.get("ENDPOINT_NAME", "").strip() or None
        url = env.get("ENDPOINT_URL", "").strip() or None
        if bool(name) == bool(url):
            raise ApiError(500, "server misconfigured: set exactly one of ENDPOINT_NAME (SageMaker) or ENDPOINT_URL")
        backend = env.get("DESCRIPTION_BACKEND", "bedrock").strip().lower()
        if backend not in ("bedrock", "offline"):
            raise ApiError(500, f"server misconfigured: DESCRIPTION_BACKEND={backend!r}, expected bedrock or offline")
        return cls(
            endpoint_name=name,
            endpoint_url=url,
            description_backend=backend,
            bedrock_model_id=env.get("BEDROCK_MODEL_ID", "").strip() or DEFAULT_MODEL_ID,
        )

    def endpoint(self, read_timeout: float | None = None) -> AttributeEndpoint:
        return endpoint_for(self.endpoint_name, self.endpoint_url, read_timeout)

    def writer(self) -> DescriptionWriter:
        if self.description_backend == "offline":
            return OfflineWriter()
        return BedrockWriter(aws_clients.client("bedrock-runtime"), self.bedrock_model_id,
                             max_attempts=aws_clients.BEDROCK_MAX_ATTEMPTS, attempt_s=aws_clients.BEDROCK_ATTEMPT_S)


@dataclass(frozen=True)
class ProductRequest:
    image: bytes
    attributes: tuple[str, ...] | None
    language: str
    product_type: str
    image_format: str
    width: int
    height: int
    # What the endpoint is told about the product (loom.abstention): the product type when the client named
    # it, merchant facts ("known_attributes") and a precision target ("min_precision").
    facts: tuple[tuple[str, Any], ...] = ()


def parse_request(
    settings: Settings,
    body: str | None,
    is_base64: bool,
    content_type: str | None,
    query: Mapping[str, str] | None = None,
) -> ProductRequest:
    """Validate a request before any paid call: JSON with a base64 `image`, or a raw JPEG/PNG body.

    With a raw image body, `attributes` (comma-separated), `language` and `product_type` come from the query.
    """
    if not body:
        raise ApiError(400, "the request body is missing: send JSON {\"image\": \"<base64>\"} or a JPEG/PNG body")
    if len(body) > MAX_BODY_CHARS:
        raise ApiError(413, f"the request body is too large: images may be at most {MAX_IMAGE_BYTES} bytes")
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json":
        text = _b64decode(body, "body").decode("utf-8", "replace") if is_base64 else body
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise ApiError(400, "the JSON body must be an object with an \"image\" field")
        if not isinstance(fields.get("image"), str) or not fields["image"]:
            raise ApiError(400, "the JSON body needs \"image\": a non-empty base64 string of a JPEG or PNG")
        try:  # the server's reading of the field: line-wrapped base64 and data: URLs pass, the rest is refused
            image = decode_base64_image(fields.get("image"))
        except ImageError as exc:
            raise ApiError(400, str(exc)) from None
        attributes = fields.get("attributes")
    elif media in IMAGE_TYPES:
        if not is_base64:
            raise ApiError(400, f"a {media} body must arrive base64-encoded (API Gateway does this for binary bodies)")
        image = _b64decode(body, "body")
        fields = dict(query or {})
        attributes = fields.get("attributes")
        if attributes is not None:
            attributes = [a for a in str(attributes).split(",") if a.strip()]
    else:
        raise ApiError(415, f"unsupported Content-Type {content_type!r}: use application/json, image/jpeg or image/png")

    info = check_image_upload(image)
    if media in IMAGE_TYPES and media != info.content_type:
        raise ApiError(400, f"the body is declared {media} but is a {info.format.upper()} image")
    try:
        language = language_code(fields.get("language"))
        product_type = clean_product_type(fields.get("product_type"))
        facts = _product_facts(fields)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if fields.get("product_type") is not None:
        facts["product_type"] = product_type
    return ProductRequest(
        image, _attribute_names(attributes), language, product_type,
        info.format, info.width, info.height, tuple(facts.items()),
    )  # fmt: skip


def check_image_upload(image: bytes, error: type[StatusError] = ApiError, field: str | None = None) -> ImageInfo:
    """An uploaded image's format and size: 413 past MAX_IMAGE_BYTES, 400 for what the header check refuses
    (the message names `field` when given)."""
    if len(image) > MAX_IMAGE_BYTES:
        raise error(413, f"the image is {len(image)} bytes; the limit is {MAX_IMAGE_BYTES} bytes (4 MiB)")
    try:
        return inspect_image(image)
    except ImageError as exc:
        raise error(400, f"'{field}': {exc}" if field else str(exc)) from None


def _product_facts(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`known_attributes` and `min_precision` of a request, checked before the endpoint is paid for."""
    facts: dict[str, Any] = {}
    if fields.get("min_precision") is not None:
        value = fields["min_precision"]
        if isinstance(value, str):  # from the query string of a raw-image request
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"'min_precision' must be a number, got {value!r}") from None
        facts["min_precision"] = check_min_precision(value)
    if fields.get("known_attributes") is not None:
        # Here the shape only: the endpoint, which reads the model's manifest, judges the names.
        facts["known_attributes"] = check_known_attributes(None, fields["known_attributes"])
    return facts


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"the {what} is not valid base64") from None


def _attribute_names(value: Any) -> tuple[str, ...] | None:
    """The shape of `attributes` only: the server, which reads the model's manifest, judges the names."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ApiError(400, "\"attributes\" must be a non-empty list of attribute names")
    return tuple(dict.fromkeys(v.strip() for v in value))


def answer(
    settings: Settings,
    request: ProductRequest,
    *,
    describe: bool,
    endpoint: AttributeEndpoint | None = None,
    writer: DescriptionWriter | None = None,
    started: float | None = None,
    clock=time.monotonic,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the endpoint for the attributes and, with `describe`, a writer for the description.

    Returns (response body, log fields). Endpoint failures raise ApiError; description failures do not.
    """
    started = clock() if started is None else started
    endpoint = endpoint or settings.endpoint()
    called = clock()
    try:
        prediction = endpoint.predict(request.image, request.attributes, dict(request.facts))
    except EndpointError as exc:
        raise ApiError(exc.status, exc.message) from None
    endpoint_ms = round((clock() - called) * 1000, 1)
    body: dict[str, Any] = {
        "attributes": prediction.attributes,
        "withheld": prediction.withheld,
        "confidence": prediction.confidence,
        "sources": prediction.sources,
        "conflicts": prediction.conflicts,
        "model": {"vlm": prediction.model.get("name") or endpoint.name},
    }
    if prediction.product_type is not None:
        body["product_type"] = prediction.product_type
    if prediction.unknown_values:
        body["unknown_values"] = prediction.unknown_values
    log = {"endpoint_ms": endpoint_ms, "attributes_returned": len(prediction.attributes),
           "attributes_withheld": len(prediction.withheld), "conflicts": len(prediction.conflicts)}
    if not describe:
        return body, log
    writer = writer or settings.writer()
    # Exactly what the endpoint stated reaches the writer: the model's values that passed their calibrated
    # thresholds and the merchant's facts. Calibration is the one gate; there is no second confidence floor.
    result = write_description(
        writer, prediction.attributes,
        product_type=request.product_type, language=request.language,
        deadline=started + aws_clients.REQUEST_BUDGET_S, clock=clock,
    )  # fmt: skip
    body["description"] = result.text
    body["model"]["llm"] = result.model
    body["coverage"] = result.coverage
    body["language"] = request.language
    if result.error:
        body["description_error"] = result.error
    log.update(llm_ms=result.timing_ms.get("total"), coverage=result.coverage, description_error=result.error)
    return body, log
