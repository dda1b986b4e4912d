"""loom/openapi.json is a valid OpenAPI 3.1 document, and every schema it defines is reachable from an
operation (so a schema added for one artifact kind is also wired into /invocations). The servers' real answers
are checked against it in tests/server/test_flask_app.py, tests/server/test_serve_process.py and tests/server/test_serve_clip_search.py."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "loom" / "openapi.json").read_text())


def test_the_document_is_valid_openapi_3_1():
    assert OPENAPI["openapi"].startswith("3.1")
    validate(OPENAPI)  # raises OpenAPIValidationError with the failing path


def refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


def test_every_schema_is_reachable_from_an_operation():
    reached: set[str] = set()
    pending = refs(OPENAPI["paths"])
    while pending:
        ref = pending.pop()
        reached.add(ref)
        _, section, kind, name = ref.split("/")
        pending |= refs(OPENAPI[section][kind][name]) - reached
    defined = {f"#/components/schemas/{name}" for name in OPENAPI["components"]["schemas"]}
    assert defined <= reached, sorted(defined - reached)
