"""A small JSON Schema validator for the subset Loom's OpenAPI documents use (standard library only).

The API Lambda checks every request body against loom/api_openapi.json before any paid call, and its zip
must stay small and quick to import (no `jsonschema`, whose import and dependencies cost more than the
whole Lambda). So this validator implements exactly the keywords the documents use, with the meaning JSON
Schema 2020-12 gives them (https://json-schema.org/draft/2020-12/json-schema-validation), and refuses a
schema that uses any other keyword rather than ignore it. tests/api/test_api_public_contract.py checks it against
`jsonschema` on valid and invalid instances of every request schema.

The first violation becomes one message that names the field by its path (`known_attributes.Fabric`,
`attributes[2]`) and quotes caller data at most 40 characters long (loom.errors.echo).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from loom.errors import echo

ANNOTATIONS = frozenset({"description", "contentEncoding", "format", "title", "examples", "default"})
KEYWORDS = frozenset({
    "$ref", "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
    "minProperties", "maxProperties", "dependentRequired", "items", "minItems", "maxItems", "uniqueItems",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "oneOf", "anyOf",
    "allOf",
}) | ANNOTATIONS
_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


class SchemaViolation(ValueError):
    """An instance that breaks the schema; `path` names the field ("" for the whole body)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"'{path}' {message}" if path else f"the body {message}")
        self.path = path


class Document:
    """An OpenAPI (or JSON Schema) document whose `#/...` references resolve inside it."""

    def __init__(self, document: Mapping[str, Any]):
        self.document = document
        _check_keywords(document.get("components", {}).get("schemas", {}), "components.schemas", nested=True)

    @classmethod
    def load(cls, path: Path) -> "Document":
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def schema(self, name: str) -> dict[str, Any]:
        return self.document["components"]["schemas"][name]

    def validate(self, instance: Any, schema: Mapping[str, Any] | str) -> None:
        """Raise SchemaViolation for the first rule `instance` breaks (`schema`: a schema or a component name)."""
        self._check(instance, self.schema(schema) if isinstance(schema, str) else schema, "")

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, got {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _check(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        if "$ref" in schema:
            self._check(value, self._resolve(schema["$ref"]), path)
        for sub in schema.get("allOf", ()):
            self._check(value, sub, path)
        if "type" in schema:
            types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
            if not any(_is_type(value, t) for t in types):
                wanted = " or ".join(_TYPE_NAMES[t] for t in types)
                raise SchemaViolation(path, f"must be {wanted}, got {_kind(value)}")
        if "const" in schema and not _equal(value, schema["const"]):
            raise SchemaViolation(path, f"must be {json.dumps(schema['const'])}")
        if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
            options = ", ".join(o if isinstance(o, str) else json.dumps(o) for o in schema["enum"])
            raise SchemaViolation(path, f"must be one of {options}, got {echo(value)}")
        if isinstance(value, dict):
            self._check_object(value, schema, path)
        elif isinstance(value, list):
            self._check_array(value, schema, path)
        elif isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                raise SchemaViolation(path, "must not be empty" if schema["minLength"] == 1
                                      else f"must be at least {schema['minLength']} characters long")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                raise SchemaViolation(path, f"must be at most {schema['maxLength']} characters long")
        elif _is_type(value, "number"):
            self._check_number(value, schema, path)
        if "anyOf" in schema:
            errors = [e for e in (self._error(value, sub, path) for sub in schema["anyOf"]) if e]
            if len(errors) == len(schema["anyOf"]):
                raise errors[0]
        if "oneOf" in schema:
            matched = [sub for sub in schema["oneOf"] if self._error(value, sub, path) is None]
            if len(matched) != 1:
                required = [sub.get("required") for sub in schema["oneOf"]]
                if all(r and len(r) == 1 and len(sub) == 1 for r, sub in zip(required, schema["oneOf"])):
                    names = " or ".join(f"'{r[0]}'" for r in required)
                    raise SchemaViolation(path, f"must hold exactly one of {names}")
                raise SchemaViolation(path, f"must match exactly one of its {len(schema['oneOf'])} forms")

    def _error(self, value: Any, schema: Mapping[str, Any], path: str) -> SchemaViolation | None:
        try:
            self._check(value, schema, path)
        except SchemaViolation as exc:
            return exc
        return None

    def _check_object(self, value: dict, schema: Mapping[str, Any], path: str) -> None:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if extra is False:
            unknown = [k for k in value if k not in properties]
            if unknown:
                allowed = ", ".join(sorted(properties))
                more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
                raise SchemaViolation(_join(path, unknown[0]), f"is not a field of this request{more}; "
                                      f"allowed: {allowed}")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise SchemaViolation(path, f"holds {len(value)} entries; at most {schema['maxProperties']}")
        if len(value) < schema.get("minProperties", 0):
            raise SchemaViolation(path, f"must hold at least {schema['minProperties']} entries")
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaViolation(_join(path, name), "is required")
        for name, needs in schema.get("dependentRequired", {}).items():
            if name in value:
                for other in needs:
                    if other not in value:
                        raise SchemaViolation(_join(path, other), f"is required with '{_join(path, name)}'")
        names = schema.get("propertyNames")
        for key, item in value.items():
            if names is not None:
                error = self._error(key, names, _join(path, key))
                if error:
                    raise SchemaViolation(path, f"has a key that is not a name: {echo(key)} {str(error).split(' ', 1)[1]}")
            if key in properties:
                self._check(item, properties[key], _join(path, key))
            elif isinstance(extra, dict):
                self._check(item, extra, _join(path, key))

    def _check_array(self, value: list, schema: Mapping[str, Any], path: str) -> None:
        if len(value) < schema.get("minItems", 0):
            raise SchemaViolation(path, "must not be empty" if schema["minItems"] == 1
                                  else f"must hold at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaViolation(path, f"holds {len(value)} items; at most {schema['maxItems']}")
        if schema.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(set(seen)) != len(seen):
                raise SchemaViolation(path, "lists an item twice")
        if "items" in schema:
            for index, item in enumerate(value):
                self._check(item, schema["items"], f"{path}[{index}]")

    @staticmethod
    def _check_number(value: float, schema: Mapping[str, Any], path: str) -> None:
        if not math.isfinite(value):
            raise SchemaViolation(path, "must be a finite number")
        low, high = schema.get("minimum"), schema.get("maximum")
        low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if (low is not None and value < low) or (high is not None and value > high) \
                or (low_x is not None and value <= low_x) or (high_x is not None and value >= high_x):
            if low is not None and high is not None:
                wanted = f"from {_number(low)} to {_number(high)}"
            else:
                parts = [f"at least {_number(low)}" if low is not None else "",
                         f"greater than {_number(low_x)}" if low_x is not None else "",
                         f"at most {_number(high)}" if high is not None else "",
                         f"less than {_number(high_x)}" if high_x is not None else ""]
                wanted = " and ".join(p for p in parts if p)
            raise SchemaViolation(path, f"must be {wanted}, got {echo(value)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _join(path: str, key: str) -> str:
    key = echo(key)[1:-1] if len(key) > 38 else key
    return f"{path}.{key}" if path else key


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"object": dict, "array": list, "string": str, "boolean": bool,
                              "null": type(None)}[name])


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return _TYPE_NAMES[name]
    return type(value).__name__


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _check_keywords(node: Any, where: str, nested: bool = False) -> None:
    """Refuse a schema keyword this validator does not implement (it would be silently ignored)."""
    if not isinstance(node, dict):
        return
    if nested:
        for name, schema in node.items():
            _check_keywords(schema, f"{where}.{name}")
        return
    unknown = sorted(set(node) - KEYWORDS - {k for k in node if k.startswith("x-")})
    if unknown:
        raise ValueError(f"{where} uses JSON Schema keywords this validator does not implement: {unknown}")
    for key in ("properties", "dependentRequired"):
        if key == "properties":
            _check_keywords(node.get(key, {}), f"{where}.{key}", nested=True)
    for key in ("items", "additionalProperties", "propertyNames"):
        _check_keywords(node.get(key), f"{where}.{key}")
    for key in ("oneOf", "anyOf", "allOf"):
        for index, sub in enumerate(node.get(key, ())):
            _check_keywords(sub, f"{where}.{key}[{index}]")
