"""The request and answer forms of the client code in Loom's design documents, accepted beside Loom's own.

Teams that followed those documents call the endpoint as they show; these forms keep that code working
unchanged (docs/from-the-posts.md lists each snippet, docs/endpoint-contract.md the rules and their sources):

- **A body without a content type, or `application/octet-stream`** (the CLIP post calls `invoke_endpoint`
  with no `ContentType`; boto3 then sends no `Content-Type` header) is read as JSON when its first non-blank
  byte is `{`; anything else stays a 415. A malformed JSON object is then a 400, as for a JSON body.
- **A free-prompt answer** also carries the answer's own label and value as a key
  (`"Sleeve Length": "Long Sleeves"`, which the fashion post reads), beside Loom's fields.
- **The CLIP interrogator sample's form** `{"inputs": "<base64>", "parameters": {"max_length", "max_flavors"}}`
  is answered `{"outputs": "<prompt>"}`: Loom's `best` interrogation (what `Interrogator.interrogate` runs),
  `max_flavors` -> `max_terms` (capped at 32), `max_length` -> at most that many words in the prompt (whole
  terms are dropped from its end, the first one always kept; clip-interrogator used it for its caption
  model's length, and Loom writes no generated caption).

Nothing here changes Loom's own forms: a typed request, an attribute request and a `{"task": ...}` request
are read exactly as before.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from loom.clip_request import MAX_TERMS
from loom.errors import StatusError
from loom.schema import ANSWER_SEPARATOR

JSON_TYPE = "application/json"
# What a caller that names no type sends: no header (Werkzeug's mimetype ""), or the generic binary type.
UNTYPED = ("", "application/octet-stream")
# Loom's own fields of a prompt answer: a label never replaces one of them.
PROMPT_FIELDS = frozenset({"answer", "confidence", "model", "timing_ms", "error"})
INTERROGATOR_KEYS = frozenset({"inputs", "parameters"})
INTERROGATOR_PARAMETERS = frozenset({"max_length", "max_flavors", "min_flavors"})
MAX_LENGTH_LIMIT = 1000


def is_untyped(content_type: str) -> bool:
    return content_type in UNTYPED


def content_type_of(content_type: str, body: bytes) -> str:
    """The media type to read `body` as: an untyped body that holds a JSON object is JSON; a typed one is
    what it says. StatusError(415) for an untyped body that is not a JSON object."""
    if not is_untyped(content_type):
        return content_type
    if body.lstrip()[:1] == b"{":
        return JSON_TYPE
    raise StatusError(415, f"a body sent as {content_type or 'no Content-Type'!r} is read only when it is a "
                           "JSON object; send Content-Type application/json, image/jpeg, image/png or "
                           "application/jsonlines")


def seed_answer_fields(text: str) -> dict[str, str]:
    """`{"Sleeve Length": "Long Sleeves"}` for the answer "Sleeve Length: Long Sleeves"; {} for an answer
    that is not `Label: Value`, or whose label is one of Loom's own fields."""
    label, separator, value = text.partition(ANSWER_SEPARATOR)
    label, value = label.strip(), value.strip()
    if not separator or not label or not value or label in PROMPT_FIELDS:
        return {}
    return {label: value}


def is_interrogator_request(request: Any) -> bool:
    """The interrogator sample's form: an object with `inputs` and no `task`."""
    return isinstance(request, Mapping) and "inputs" in request and "task" not in request


def interrogator_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Loom's `{"task": "interrogate"}` request for the sample's form, and its `max_length` (None: no cap)."""
    extra = sorted(set(request) - INTERROGATOR_KEYS)
    if extra:
        raise StatusError(400, f"unexpected fields {extra} in the {{\"inputs\", \"parameters\"}} interrogation form")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise StatusError(400, "'parameters' must be an object such as {\"max_length\": 50, \"max_flavors\": 32}")
    unknown = sorted(set(parameters) - INTERROGATOR_PARAMETERS)
    if unknown:
        raise StatusError(400, f"unsupported parameters {unknown}; allowed: {sorted(INTERROGATOR_PARAMETERS)}")
    numbers = {}
    for key in ("max_length", "max_flavors", "min_flavors"):
        value = parameters.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LENGTH_LIMIT:
            shown = value if isinstance(value, bool) or not isinstance(value, int) else "a number out of range"
            raise StatusError(400, f"parameters.{key} must be an integer from 1 to {MAX_LENGTH_LIMIT}, got "
                                   f"{str(shown)[:40]}")
        numbers[key] = value
    max_terms = min(numbers.get("max_flavors", MAX_TERMS), MAX_TERMS)
    return {"task": "interrogate", "image": request["inputs"], "mode": "best", "max_terms": max_terms}, \
        numbers.get("max_length")


def answer_interrogator(request: Mapping[str, Any], interrogate: Callable[[dict[str, Any]], Mapping[str, Any]],
                        compose: Callable[[str | None, list[str]], str]) -> dict[str, str]:
    """`{"outputs": "<prompt>"}`: `interrogate` answers Loom's request; the prompt is then cut to
    `max_length` words by dropping whole terms from its end, never the first (`compose` writes a prompt from
    caption and terms)."""
    loom_request, max_length = interrogator_request(request)
    result = interrogate(loom_request)
    prompt = result["prompt"]
    if max_length is not None:
        terms = [term["text"] for term in result.get("terms", [])]
        while len(terms) > 1 and len(prompt.split()) > max_length:  # the first term always stays
            terms.pop()
            prompt = compose(result.get("caption"), terms)
    return {"outputs": prompt}
