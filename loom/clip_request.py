"""The request rules of the CLIP tasks `tags` and `interrogate`, one copy for the API Lambda
(inference/api/clip_tasks.py) and the CLIP endpoint (standard library only). Every violation is a
`StatusError(400, ...)` that says what to send instead.

    {"task": "tags", "image": "<base64>", "attributes"?: ["Pattern", ...], "labels"?: {"Pattern": ["Striped", ...]}}
    {"task": "interrogate", "image": "<base64>", "mode"?: "fast" | "classic" | "best", "max_terms"?: 1..32,
     "caption"?: "..."}
"""

from __future__ import annotations

from typing import Any

from loom.errors import StatusError
from loom.search_request import MAX_TEXT_CHARS

MODES = ("fast", "classic", "best")
MIN_TERMS, MAX_TERMS = 1, 32
MAX_LABELS = 200  # candidate labels in one request, over all attributes: each is a text embedding
MAX_LABEL_CHARS = 100
MAX_CAPTION_CHARS = MAX_TEXT_CHARS


def check_attribute_names(value: Any) -> list[str] | None:
    """`attributes`: a non-empty list of attribute names (the endpoint, which reads the schema, judges them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise StatusError(400, "'attributes' must be a non-empty list of attribute names such as [\"Pattern\"]")
    return list(dict.fromkeys(v.strip() for v in value))


def check_labels(value: Any) -> dict[str, list[str]] | None:
    """`labels`: attribute -> a non-empty list of candidate values, at most MAX_LABELS in all."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise StatusError(400, "'labels' must be an object of attribute -> candidate values, "
                               "such as {\"Pattern\": [\"Striped\", \"Solid\"]}")
    labels: dict[str, list[str]] = {}
    for name, candidates in value.items():
        if not isinstance(name, str) or not name.strip():
            raise StatusError(400, "'labels' keys must be attribute names")
        if not isinstance(candidates, list) or not candidates:
            raise StatusError(400, f"labels.{name} must be a non-empty list of candidate values")
        for label in candidates:
            if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
                raise StatusError(400, f"labels.{name} must hold texts of 1 to {MAX_LABEL_CHARS} characters, "
                                       f"got {label!r}")
        labels[name.strip()] = list(dict.fromkeys(" ".join(c.split()) for c in candidates))
    total = sum(len(c) for c in labels.values())
    if total > MAX_LABELS:
        raise StatusError(400, f"'labels' holds {total} candidate values; at most {MAX_LABELS} in one request")
    return labels


def check_mode(value: Any) -> str | None:
    """`mode`: one of MODES (absent: the endpoint's default)."""
    if value is None:
        return None
    if value not in MODES:
        raise StatusError(400, f"'mode' must be one of {list(MODES)}, got {value!r}")
    return value


def check_max_terms(value: Any) -> int | None:
    """`max_terms`: an integer from MIN_TERMS to MAX_TERMS (absent: the endpoint's default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_TERMS <= value <= MAX_TERMS:
        raise StatusError(400, f"'max_terms' must be an integer from {MIN_TERMS} to {MAX_TERMS}, got {value!r}")
    return value


def check_caption(value: Any) -> str | None:
    """`caption`: a non-blank text of at most MAX_CAPTION_CHARS characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CAPTION_CHARS:
        raise StatusError(400, f"'caption' must be a non-empty text of at most {MAX_CAPTION_CHARS} characters")
    return " ".join(value.split())
