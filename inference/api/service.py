"""The API's logic for POST /describe and /attributes, free of Lambda specifics: configuration, the request,
the two calls, the answer.

`inference.api.handler` turns an API Gateway event into `parse_request(...)` and `answer(...)` calls; everything
here takes and returns plain values, so it runs the same on Lambda, in `make demo` and in tests. A request
is checked once, here, before any paid call: its body against the public contract (request_body.read_json:
unknown fields, types, ranges), then its facts by the rules the endpoint shares (loom.request_rules).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

from inference.api import aws_clients
from inference.api.describe import DEFAULT_MODEL_ID, BedrockWriter, DescriptionWriter, OfflineWriter, write_description
from inference.api.endpoint_client import AttributeEndpoint, endpoint_for
from inference.api.request_body import (
    IMAGE_TYPES,
    MAX_BODY_CHARS,
    MAX_IMAGE_BYTES,
    b64decode,
    check,
    check_image_upload,
    read_json,
)
from loom.base64_image import decode_base64_image
from loom.errors import StatusError, echo
from loom.image_header import ImageError
from loom.media_types import JSON_TYPE
from loom.request_rules import check_facts, clean_product_type, language_code

EXAMPLE = '{"image": "<base64 JPEG or PNG>"}'
# The patterns of Converse's GuardrailConfiguration (bedrock-runtime API reference).
_GUARDRAIL_ID = re.compile(r"^(?:[a-z0-9]+|arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$")
_GUARDRAIL_VERSION = re.compile(r"^(?:[1-9][0-9]{0,7}|DRAFT)$")
QUERY_FIELDS = ("attributes", "language", "product_type", "min_precision")  # raw image bodies


class ApiError(StatusError):
    """A request the API refuses; `status` and `message` become the `{"error": ...}` response."""


@dataclass(frozen=True)
class Settings:
    """The Lambda's configuration, read once from the environment (Terraform sets the same names)."""

    endpoint_name: str | None
    endpoint_url: str | None
    description_backend: str
    bedrock_model_id: str
    guardrail: tuple[str, str] | None = None  # (identifier, version): Bedrock Guardrails on every Converse call

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
        guardrail_id = env.get("BEDROCK_GUARDRAIL_ID", "").strip()
        guardrail_version = env.get("BEDROCK_GUARDRAIL_VERSION", "").strip()
        # Converse's guardrailConfig needs both (bedrock-runtime API reference, GuardrailConfiguration).
        if bool(guardrail_id) != bool(guardrail_version) or (guardrail_id and not (
                _GUARDRAIL_ID.match(guardrail_id) and _GUARDRAIL_VERSION.match(guardrail_version))):
            raise ApiError(500, "server misconfigured: set both BEDROCK_GUARDRAIL_ID (a guardrail id or ARN) and "
                                "BEDROCK_GUARDRAIL_VERSION (a version number or DRAFT), or neither")
        return cls(
            endpoint_name=name,
            endpoint_url=url,
            description_backend=backend,
            bedrock_model_id=env.get("BEDROCK_MODEL_ID", "").strip() or DEFAULT_MODEL_ID,
            guardrail=(guardrail_id, guardrail_version) if guardrail_id else None,
        )

    def endpoint(self, read_timeout: float | None = None) -> AttributeEndpoint:
        return endpoint_for(self.endpoint_name, self.endpoint_url, read_timeout)

    def writer(self) -> DescriptionWriter:
        if self.description_backend == "offline":
            return OfflineWriter()
        return BedrockWriter(aws_clients.client("bedrock-runtime"), self.bedrock_model_id,
                             max_attempts=aws_clients.BEDROCK_MAX_ATTEMPTS, attempt_s=aws_clients.BEDROCK_ATTEMPT_S,
                             guardrail=self.guardrail)


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
    body: str | None,
    is_base64: bool,
    content_type: str | None,
    query: Mapping[str, str] | None = None,
    *,
    describe: bool = True,
) -> ProductRequest:
    """Validate a request before any paid call: JSON with a base64 `image`, or a raw JPEG/PNG body.

    With a raw image body, `attributes` (comma-separated), `language`, `product_type` and `min_precision`
    come from the query string, checked by the same schema as the JSON fields.
    """
    schema = "DescribeRequest" if describe else "AttributesRequest"
    if not body:
        raise ApiError(400, f"the request body is missing: send JSON {EXAMPLE} or a JPEG/PNG body")
    media = (content_type or "").split(";")[0].strip().lower()
    if media == JSON_TYPE:
        fields = read_json(body, is_base64, schema, EXAMPLE)
        try:  # the server's reading of the field: line-wrapped base64 and data: URLs pass, the rest is refused
            image = decode_base64_image(fields["image"])
        except ImageError as exc:
            raise ApiError(400, str(exc)) from None
    elif media in IMAGE_TYPES:
        if len(body) > MAX_BODY_CHARS:
            raise ApiError(413, f"the request body is too large: images may be at most {MAX_IMAGE_BYTES} bytes")
        if not is_base64:
            raise ApiError(400, f"a {media} body must arrive base64-encoded (API Gateway does this for binary bodies)")
        image = b64decode(body, "body")
        fields = _query_fields(query or {}, schema, describe)
    else:
        raise ApiError(415, f"unsupported Content-Type {echo(content_type)}: use application/json, image/jpeg or "
                            "image/png")
    info = check_image_upload(image)
    if media in IMAGE_TYPES and media != info.content_type:
        raise ApiError(400, f"the body is declared {media} but is a {info.format.upper()} image")
    try:
        language = language_code(fields.get("language"))
        facts = check_facts(fields)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return ProductRequest(
        image, _attribute_names(fields.get("attributes")), language,
        clean_product_type(facts.get("product_type")), info.format, info.width, info.height, tuple(facts.items()),
    )  # fmt: skip


def _query_fields(query: Mapping[str, str], schema: str, describe: bool) -> dict[str, Any]:
    """A raw-image request's query parameters as the JSON fields they stand for, checked by the same schema."""
    allowed = [q for q in QUERY_FIELDS if describe or q != "language"]
    unknown = [k for k in query if k not in allowed]
    if unknown:
        raise ApiError(400, f"'{echo(unknown[0])[1:-1]}' is not a query parameter of this route; allowed: "
                            f"{', '.join(allowed)}")
    fields: dict[str, Any] = {k: v for k, v in query.items() if v != ""}
    if "attributes" in fields:
        fields["attributes"] = [a.strip() for a in fields["attributes"].split(",") if a.strip()]
    if "min_precision" in fields:
        try:
            fields["min_precision"] = float(fields["min_precision"][:32])
        except ValueError:
            raise ApiError(400, f"'min_precision' must be a number, got {echo(fields['min_precision'])}") from None
    check({**fields, "image": "-"}, schema)
    return fields


def _attribute_names(value: Any) -> tuple[str, ...] | None:
    """The names asked, blanks refused and repeats dropped: the endpoint, which reads the model's manifest,
    judges the names."""
    if value is None:
        return None
    if not value or not all(v.strip() for v in value):
        raise ApiError(400, "'attributes' must be a non-empty list of attribute names")
    return tuple(dict.fromkeys(v.strip() for v in value))


def answer(
    settings: Settings,
    request: ProductRequest,
    *,
    describe: bool,
    log: dict[str, Any] | None = None,
    endpoint: AttributeEndpoint | None = None,
    writer: DescriptionWriter | None = None,
    started: float | None = None,
    clock=time.monotonic,
) -> dict[str, Any]:
    """Ask the endpoint for the attributes and, with `describe`, a writer for the description; the response
    body. `log` receives the request's log fields. Endpoint failures raise a StatusError; description
    failures do not (the answer says why there is no description)."""
    log = {} if log is None else log
    started = clock() if started is None else started
    endpoint = endpoint or settings.endpoint()
    called = clock()
    prediction = endpoint.predict(request.image, request.attributes, dict(request.facts))
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
    log.update(endpoint_ms=endpoint_ms, attributes_returned=len(prediction.attributes),
               attributes_withheld=len(prediction.withheld), conflicts=len(prediction.conflicts))
    if not describe:
        return body
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
    return body
