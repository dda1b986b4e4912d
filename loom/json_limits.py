"""Reading a client's JSON and quoting it back, within limits (stdlib only: the servers and the Lambda).

`json.loads` refuses more than `JSONDecodeError` covers: an integer past CPython's 4,300-digit limit for
int() (`sys.set_int_max_str_digits`, Python 3.11+) raises a plain `ValueError`, and deep nesting raises
`RecursionError`. `loads_request` turns all of them, and nesting past MAX_JSON_DEPTH (no Loom request nests
more than 4 deep), into `StatusError(400)`, so that nothing parsed from a client reaches a recursive walk.
`loads_request` also refuses (400, naming the field) a string holding a lone UTF-16 surrogate ("\\ud800" is
valid JSON, RFC 8259 section 8.2, but no UTF-8 text can hold it: it would fail later, in a tokenizer or
while encoding the answer), and the constants NaN, Infinity and -Infinity, which are not JSON (RFC 8259
section 6) and could not be echoed as JSON. `error_text` cuts an error message that may quote client input.
"""

from __future__ import annotations

import json
from typing import Any

from loom.errors import StatusError

MAX_JSON_DEPTH = 16
MAX_ERROR_CHARS = 1000
MAX_JSONL_LINES = 10_000  # lines in one JSON Lines request, blank ones included (docs/endpoint-contract.md)
MAX_ID_CHARS = 256  # a JSON Lines line's `id`, echoed in its answer line (loom/openapi.json, LineId)


def loads_request(text: bytes | str, where: str = "the body") -> Any:
    """The parsed JSON of a request (or one JSON Lines line); StatusError(400) with the reason otherwise."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise StatusError(400, f"{where} is not valid JSON ({error_text(str(exc), 200)}); "
                               f"send a JSON object") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise StatusError(400, f"{where} nests deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object")
    field = lone_surrogate_at(value)
    if field is not None:
        raise StatusError(400, f"{where}: {field} holds a lone UTF-16 surrogate (such as \\ud800), which is not "
                               f"text: send valid Unicode")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def lone_surrogate_at(value: Any) -> str | None:
    """Where (a field path such as `'texts'[2]`, or "a key") the first string holding a lone surrogate is in
    `value` (parsed JSON), or None; no recursion (call it on a value `json_depth` has bounded)."""
    stack: list[tuple[str, Any]] = [("the value", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _is_text(key):
                    return "a key" if path == "the value" else f"a key of {path}"
                stack.append((error_text(repr(key), 60) if path == "the value" else f"{path}[{error_text(repr(key), 60)}]",
                              child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{n}]", child) for n, child in enumerate(item))
    return None


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def line_id(value: Any) -> str | int | None:
    """A JSON Lines line's `id`, fit to echo: a string of at most MAX_ID_CHARS characters, an integer of at
    most MAX_ID_CHARS digits, or None (absent). StatusError(400) otherwise, quoting it only in part: the
    answer echoes an id, so an id must not make the answer large (a 1 MB id, a nested object)."""
    if value is None or (isinstance(value, str) and len(value) <= MAX_ID_CHARS):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) <= MAX_ID_CHARS:
        return value
    kind = "string" if isinstance(value, str) else "integer" if isinstance(value, int) and not isinstance(
        value, bool) else type(value).__name__
    raise StatusError(400, f"'id' must be a string or an integer of at most {MAX_ID_CHARS} characters, got a "
                           f"{kind} {error_text(repr(value), 60)}")


def count_lines(body: bytes) -> int:
    """How many lines `body.splitlines()` makes, blank ones included, without making them."""
    breaks = body.count(b"\n") + body.count(b"\r") - body.count(b"\r\n")
    return breaks + (0 if body.endswith((b"\n", b"\r")) or not body else 1)


def check_line_count(body: bytes) -> None:
    """StatusError(413) when a JSON Lines body holds more than MAX_JSONL_LINES lines: refused before any
    line is read, so that the answer (one bounded line per line) stays bounded too."""
    lines = count_lines(body)
    if lines > MAX_JSONL_LINES:
        raise StatusError(413, f"the JSON Lines body holds {lines} lines, more than the server's limit of "
                               f"{MAX_JSONL_LINES} (blank lines included): split it into smaller requests")
