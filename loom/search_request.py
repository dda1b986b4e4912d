"""The search request rules, one copy for the endpoint (inference/server/clip_invocations.py) and the API Lambda
(inference/api/visual/search.py): standard library only. Every violation is a `StatusError(400, ...)`."""

from __future__ import annotations

from typing import Any

from loom.errors import StatusError

DEFAULT_K = 10
MAX_K = 50
MAX_TEXT_CHARS = 1000


def check_k(value: Any) -> int:
    """`k`: an integer from 1 to MAX_K (absent: DEFAULT_K)."""
    k = DEFAULT_K if value is None else value
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise StatusError(400, f"'k' must be an integer from 1 to {MAX_K}, got {value!r}")
    return k


def check_text(value: Any, field: str = "text") -> str:
    """A query text: a non-blank string of at most MAX_TEXT_CHARS characters."""
    if not isinstance(value, str) or not value.strip():
        raise StatusError(400, f"'{field}' must be a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise StatusError(400, f"'{field}' is longer than {MAX_TEXT_CHARS} characters")
    return value


def check_filters(value: Any) -> dict[str, str | list[str]] | None:
    """`filters`: an object of attribute -> value, or -> list of values (any of which matches)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StatusError(400, "'filters' must be an object such as {\"baseColour\": \"Green\"}")
    for field, wanted in value.items():
        single = isinstance(wanted, str) and wanted != ""
        many = isinstance(wanted, list) and bool(wanted) and all(isinstance(v, str) and v for v in wanted)
        if not (single or many):
            raise StatusError(400, f"filters.{field} must be a non-empty string or a list of them")
    return value


def check_one_query(request: dict[str, Any], text_key: str = "text") -> None:
    """Exactly one of a text and an image."""
    if (text_key in request) == ("image" in request):
        raise StatusError(400, f"send either '{text_key}' or 'image' (base64), exactly one")


def check_fields(request: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(request) - allowed)
    if extra:
        raise StatusError(400, f"unexpected fields {extra} for {what}; allowed: {sorted(allowed)}")
