"""Reading and validating one `POST /invocations` request: body, content types, product objects.

Everything here raises `RequestError(status, message)` for what the client must fix; the app turns it
into `{"error": message}` with that status (docs/endpoint-contract.md lists them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # annotations only: the CLIP tagger imports this module in the training image, without Flask
    from flask import Request

from runtime.images import decode_image
from loom.base64_image import decode_base64_image
from loom.errors import StatusError
from loom.media_types import JSON_TYPE, JSONLINES_TYPE, JSONLINES_TYPES
from loom.request_rules import FACT_KEYS, check_facts
from loom.json_limits import loads_request

JSON_TYPES = {JSON_TYPE}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "application/x-image"}
SUPPORTED_TYPES = sorted(JSON_TYPES | JSONLINES_TYPES | IMAGE_TYPES)
REQUEST_KEYS = {"image", "attributes", "prompt", "parameters", "id", "product_type", "known_attributes", "min_precision"}
MAX_PROMPT_CHARS = 1000
# Generation bounds: a request cannot buy more GPU time than this (this module must not import torch).
MAX_NEW_TOKENS_LIMIT = 64
MAX_BEAMS = 4


class RequestError(StatusError):
    """A request the client must fix: `RequestError(status, message)` becomes `{"error": message}`."""


def shown(value: Any, limit: int = 60) -> str:
    """`value` as an error message may quote it: its repr, cut to `limit` characters (lists: five items), so
    that no error echoes a client's input at length."""
    if isinstance(value, (list, tuple)) and len(value) > 5:
        return f"[{', '.join(shown(v, limit) for v in value[:5])}, ... {len(value) - 5} more]"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(shown(v, limit) for v in value)}]"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def body_too_large(max_body_bytes: int) -> str:
    return (f"the request body is larger than the server's limit of {max_body_bytes} bytes (MAX_BODY_MB, or "
            f"SAGEMAKER_MAX_PAYLOAD_IN_MB in Batch Transform): send a smaller image or fewer products")


def request_content_type(request: Request) -> str:
    """The request's media type, or RequestError(415) when the server cannot read it."""
    content_type = (request.mimetype or "").lower()
    if content_type not in SUPPORTED_TYPES:
        raise RequestError(415, f"unsupported Content-Type {content_type or '(none)'!r}; use one of {SUPPORTED_TYPES}")
    return content_type


def response_type(request: Request, content_type: str) -> str:
    """The media type to answer with, from `Accept`; RequestError(406) when the server cannot produce it.

    A JSON Lines request is answered in JSON Lines; any other request in JSON, or in JSON Lines (the same
    object on one line) when only that is acceptable. A missing `Accept` accepts anything (RFC 9110 12.5.1).
    """
    offered = [JSONLINES_TYPE] if content_type in JSONLINES_TYPES else [JSON_TYPE, JSONLINES_TYPE]
    if not request.accept_mimetypes:
        return offered[0]
    aliases = {alias: JSONLINES_TYPE for alias in JSONLINES_TYPES}
    for accepted, quality in request.accept_mimetypes:
        if quality <= 0:
            continue
        accepted = aliases.get(accepted.lower(), accepted.lower())
        for media in offered:
            if accepted in (media, "*/*", media.split("/")[0] + "/*"):
                return media
    raise RequestError(406, f"cannot answer in {request.headers.get('Accept')!r}: this request is answered in "
                            f"{' or '.join(offered)}")


def read_body(request: Request, max_body_bytes: int, time_left: Callable[[], float] | None = None) -> bytes:
    """The whole body, at most `max_body_bytes` (RequestError 413 past it), with or without Content-Length.

    `time_left` (the admission's): the body must arrive within the request's deadline, or RequestError(408):
    a slow upload must not hold an admission past it. Under gunicorn each read waits on the client's socket
    (`environ["gunicorn.socket"]`) at most the time left; elsewhere the deadline is checked between reads.
    """
    # Werkzeug enforces MAX_CONTENT_LENGTH from the Content-Length header; a chunked body has none,
    # so read at most one byte past the limit and refuse what does not fit.
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise RequestError(413, body_too_large(max_body_bytes))
    sock = request.environ.get("gunicorn.socket") if time_left is not None else None
    chunks, total = [], 0
    try:
        while True:  # a stream read may return less than asked (one chunk of a chunked body)
            if time_left is not None:
                remaining = time_left()
                if remaining <= 0:
                    raise RequestError(408, BODY_TOO_SLOW)
                if sock is not None:
                    sock.settimeout(remaining)
            try:
                piece = request.stream.read(min(BODY_READ_BYTES, max_body_bytes + 1 - total))
            except Exception as exc:  # socket.timeout is TimeoutError; Werkzeug's stream wraps it (ClientDisconnected)
                if _timed_out(exc):
                    raise RequestError(408, BODY_TOO_SLOW) from None
                raise
            if not piece:
                return b"".join(chunks)
            chunks.append(piece)
            total += len(piece)
            if total > max_body_bytes:
                raise RequestError(413, body_too_large(max_body_bytes))
    finally:
        if sock is not None:
            sock.settimeout(None)  # blocking again, as gunicorn left it, for writing the answer


def _timed_out(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is a socket timeout."""
    for _ in range(4):
        if exc is None:
            return False
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


BODY_READ_BYTES = 256 * 1024
BODY_TOO_SLOW = ("the request body did not arrive within the request's deadline (REQUEST_TIMEOUT_S): send it "
                 "faster, or a smaller body")


def load_json(text: bytes, where: str = "the body") -> Any:
    """Parse a request's JSON (`loom.json_limits.loads_request`: huge integers, deep nesting and invalid
    JSON are the client's); RequestError(400) otherwise."""
    try:
        return loads_request(text, where)
    except StatusError as exc:
        raise RequestError(exc.status, exc.message) from None


def parse_parameters(value: Any) -> dict[str, int]:
    """Validate generation `parameters`: only `max_new_tokens` (1..64) and `num_beams` (1..4)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError(400, "'parameters' must be an object such as {\"max_new_tokens\": 16}")
    limits = {"max_new_tokens": MAX_NEW_TOKENS_LIMIT, "num_beams": MAX_BEAMS}
    unknown = sorted(set(value) - set(limits))
    if unknown:
        raise RequestError(400, f"unsupported parameters {shown(unknown)}; allowed: {sorted(limits)}")
    params = {}
    for key, limit in limits.items():
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
                raise RequestError(400, f"parameters.{key} must be an integer from 1 to {limit}, got {shown(v)}")
            params[key] = v
    return params


def parse_attributes(value: Any, known: list[str]) -> list[str] | None:
    """Validate the requested attribute names against the manifest's (None: all of them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RequestError(400, "'attributes' must be a non-empty list of attribute names (omit it to ask all); "
                                f"known: {known}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise RequestError(400, f"unknown attributes {shown(unknown)}; this model answers: {known}")
    if len(set(value)) != len(value):
        raise RequestError(400, f"'attributes' lists a name twice: {shown(value)}")
    return value


def image_draft_side(predictor: Any) -> int | None:
    """The side to draft large JPEGs to for this predictor, as its training did (`Predictor.image_draft_side`);
    None (a predictor without one): decode in full."""
    return getattr(predictor, "image_draft_side", None)


def parse_product(item: Any, known: list[str], max_image_pixels: int, *, allow_prompt: bool,
                  draft_side: int | None = None):
    """Validate one product request object: (RGB image, attribute names or None, parameters, prompt or None).

    Bad images raise `loom.image_header.ImageError` (a ValueError); everything else RequestError(400).
    `draft_side`: the predictor's `image_draft_side` (a large JPEG is decoded DCT-scaled, as in training).
    """
    data, names, params, prompt = parse_product_fields(item, known, allow_prompt=allow_prompt)
    return decode_image(data, max_image_pixels, draft_side=draft_side), names, params, prompt


def parse_product_fields(item: Any, known: list[str], *, allow_prompt: bool):
    """`parse_product` without the decode: (image bytes, attribute names or None, parameters, prompt or None).

    The server checks every field (and the facts) before it pays for a decode.
    """
    if not isinstance(item, dict):
        raise RequestError(400, "the request must be a JSON object such as {\"image\": \"<base64>\"}")
    extra = sorted(set(item) - REQUEST_KEYS)
    if extra:
        raise RequestError(400, f"unexpected fields {shown(extra)}; allowed: {sorted(REQUEST_KEYS)}")
    if "image" not in item:
        raise RequestError(400, "'image' is missing: send the image file's bytes as a base64 string")
    params = parse_parameters(item.get("parameters"))
    prompt = item.get("prompt")
    if prompt is not None:
        if not allow_prompt:
            raise RequestError(400, "'prompt' is not accepted in JSON Lines batches; ask attributes")
        if "attributes" in item:
            raise RequestError(400, "send either 'prompt' or 'attributes', not both")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(400, f"'prompt' must be a non-empty question of at most {MAX_PROMPT_CHARS} characters")
    names = parse_attributes(item.get("attributes"), known)
    return decode_base64_image(item["image"]), names, params, prompt.strip() if prompt is not None else None


def parse_facts(predictor: Any, item: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a product's `product_type`, `known_attributes` and `min_precision` by the rules the API Lambda
    shares (loom.request_rules.check_facts), with the model's schema and product types."""
    facts = {key: item[key] for key in FACT_KEYS if item.get(key) is not None}
    if facts and "prompt" in item:
        raise RequestError(400, f"{sorted(facts)} apply to attribute requests, not to a 'prompt'")
    try:
        return check_facts(facts, predictor.schema, lambda text: predictor.product_type(text)) if facts else {}
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
