"""Render loom/api_openapi.json's requests as the Markdown tables of docs/api.md ("The contract at a glance").

    python scripts/render_api_contract.py           # print the tables
    python scripts/render_api_contract.py --write   # replace them in docs/api.md (between the markers)

tests/api/test_api_public_contract.py fails when docs/api.md and the document disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "loom" / "api_openapi.json"
DOC_PAGE = ROOT / "docs" / "api.md"
START, END = "<!-- api_openapi:start -->", "<!-- api_openapi:end -->"


def _type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _type(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type(s, components) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), components)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of name → {_type(schema['additionalProperties'], components)}"
    return kind


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for low, high, unit in (("minimum", "maximum", ""), ("minLength", "maxLength", " characters"),
                            ("minItems", "maxItems", " items"), ("minProperties", "maxProperties", " entries")):
        if low in schema or high in schema:
            parts.append(f"{schema.get(low, 0)}..{schema.get(high, '')}{unit}".replace("..", "–", 1))
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']}" + (f", ≤ {schema['maximum']}" if "maximum" in schema else ""))
        parts = [p for p in parts if not p.startswith("0–")] if "maximum" in schema else parts
    if schema.get("uniqueItems"):
        parts.append("no repeats")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "maxLength" in extra:
        parts.append(f"values of {extra.get('minLength', 0)}–{extra['maxLength']} characters")
    names = schema.get("propertyNames", {})
    if "maxLength" in names:
        parts.append(f"names of at most {names['maxLength']} characters")
    return "; ".join(parts)


def render(document: dict[str, Any]) -> str:
    components = document["components"]["schemas"]
    out = []
    for path, item in document["paths"].items():
        schema_ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = components[schema_ref.rsplit("/", 1)[1]]
        required = set(schema.get("required", ()))
        one_of = [s["required"][0] for s in schema.get("oneOf", ()) if len(s.get("required", ())) == 1]
        out += [f"`POST {path}` ({schema_ref.rsplit('/', 1)[1]}; any other field is a 400)", "",
                "| field | type | limits | |", "| --- | --- | --- | --- |"]
        for name, prop in schema["properties"].items():
            need = "required" if name in required else ("exactly one of " + " / ".join(one_of)) if name in one_of else ""
            if name in schema.get("dependentRequired", {}):
                need = "needs " + ", ".join(schema["dependentRequired"][name])
            out.append(f"| `{name}` | {_type(prop, components)} | {_limits(prop)} | {need} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def page_with_tables(page: str, tables: str) -> str:
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{tables}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the tables in docs/api.md")
    args = parser.parse_args(argv)
    tables = render(json.loads(DOCUMENT.read_text(encoding="utf-8")))
    if args.write:
        DOC_PAGE.write_text(page_with_tables(DOC_PAGE.read_text(encoding="utf-8"), tables), encoding="utf-8")
    else:
        sys.stdout.write(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
