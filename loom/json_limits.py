"""Reading a client's JSON and quoting it back, within limits (stdlib only: the servers and the Lambda).

`json.loads` refuses more than `JSONDecodeError` covers: an integer past CPython's 4,300-digit limit for
int() (`sys.set_int_max_str_digits`, Python 3.11+) raises a plain `ValueError`, and deep nesting raises
`RecursionError`. `loads_request` turns all of them, and nesting past MAX_JSON_DEPTH (no Loom request nests
more than 4 deep), into `StatusError(400)`, so that nothing parsed from a client reaches a recursive walk.
`error_text` cuts an error message that may quote client input.
"""

from __future__ import annotations

import json
from typing import Any

from loom.errors import StatusError

MAX_JSON_DEPTH = 16
MAX_ERROR_CHARS = 1000


def loads_request(text: bytes | str, where: str = "the body") -> Any:
    """The parsed JSON of a request (or one JSON Lines line); StatusError(400) with the reason otherwise."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise StatusError(400, f"{where} is not valid JSON ({error_text(str(exc), 200)}); "
                               f"send a JSON object") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise StatusError(400, f"{where} nests deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object")
    return value


def json_depth(value: Any) -> int:
    """How deeply `value` (parsed JSON) nests lists and objects, level by level (no recursion); it stops
    counting past MAX_JSON_DEPTH."""
    depth, level = 0, [value]
    while depth <= MAX_JSON_DEPTH:
        containers = [item for item in level if isinstance(item, (list, dict))]
        if not containers:
            break
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def error_text(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`message` cut to `limit` characters (it may quote what the client sent)."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... (cut at {limit} of {len(message)} characters)"
