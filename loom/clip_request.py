"""The request rules of the CLIP tasks `tags` and `interrogate` (standard library only): the one copy, used by
the API Lambda (inference/api/visual/tags.py), which checks a request before any endpoint is called, and by the
CLIP endpoint (inference/server/clip_invocations.py). Every violation is a `StatusError(400, ...)`.

    {"task": "tags", "image": "<base64>", "attributes"?: [...], "labels"?: {"Pattern": ["Striped", ...]},
     "min_probability"?: (0, 1]}
    {"task": "interrogate", "image": "<base64>", "mode"?: "fast" | "classic" | "best", "max_terms"?: 1..32,
     "caption"?: "..."}
"""

from __future__ import annotations

from typing import Any, Mapping

from loom.errors import StatusError
from loom.search_request import check_fields, check_text

MODES = ("fast", "classic", "best")
DEFAULT_MODE = "fast"
DEFAULT_MAX_TERMS = 6
MAX_TERMS = 32
MAX_LABELS = 200  # candidate values in one request, over all attributes: each is a text embedding
TAGS_KEYS = {"task", "image", "attributes", "labels", "min_probability"}
INTERROGATE_KEYS = {"task", "image", "mode", "max_terms", "caption"}


def parse_tags(request: Mapping[str, Any], extra: frozenset[str] = frozenset()
               ) -> tuple[list[str] | None, dict[str, list[str]] | None, float | None]:
    """(attributes, labels, min_probability) of a tags request, checked for shape (not against the schema,
    which only the endpoint reads). `extra`: further keys the caller allows (a JSON Lines record's id)."""
    check_fields(request, TAGS_KEYS | extra, "task 'tags'")
    attributes = request.get("attributes")
    if attributes is not None:
        if (not isinstance(attributes, list) or not attributes
                or not all(isinstance(a, str) and a for a in attributes)):
            raise StatusError(400, "'attributes' must be a non-empty list of attribute names")
        if len(set(attributes)) != len(attributes):
            raise StatusError(400, "'attributes' names an attribute twice")
    labels = request.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            raise StatusError(400, "'labels' must be an object such as {\"Pattern\": [\"Striped\", \"Checked\"]}")
        total = 0
        for name, values in labels.items():
            if not isinstance(values, list) or not values:
                raise StatusError(400, f"labels.{name} must be a non-empty list of candidate values")
            for value in values:
                check_text(value, f"labels.{name}[]")
            if len(set(values)) != len(values):
                raise StatusError(400, f"labels.{name} lists a value twice")
            total += len(values)
        if total > MAX_LABELS:
            raise StatusError(400, f"'labels' holds {total} candidate values; at most {MAX_LABELS} per request")
    min_probability = request.get("min_probability")
    if min_probability is not None:
        if (isinstance(min_probability, bool) or not isinstance(min_probability, (int, float))
                or not 0 < min_probability <= 1):
            raise StatusError(400, f"'min_probability' must be a number in (0, 1], got {min_probability!r}")
        if labels is None:
            raise StatusError(400, "'min_probability' is the threshold for caller-given 'labels'; "
                                   "schema attributes use their calibrated thresholds")
        min_probability = float(min_probability)
    return attributes, labels, min_probability


def parse_interrogate(request: Mapping[str, Any]) -> tuple[str, int, str | None]:
    """(mode, max_terms, caption) of an interrogate request, the defaults filled in."""
    check_fields(request, INTERROGATE_KEYS, "task 'interrogate'")
    mode = request.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        raise StatusError(400, f"'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    max_terms = request.get("max_terms", DEFAULT_MAX_TERMS)
    if isinstance(max_terms, bool) or not isinstance(max_terms, int) or not 1 <= max_terms <= MAX_TERMS:
        raise StatusError(400, f"'max_terms' must be an integer from 1 to {MAX_TERMS}, got {max_terms!r}")
    caption = request.get("caption")
    return mode, max_terms, None if caption is None else check_text(caption, "caption").strip()
