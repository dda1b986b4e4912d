"""The rules for one product's request facts, one copy for the API Lambda and the endpoint (standard library only).

A fact is checked once, where it first arrives: the API Lambda checks what it can without the model's
schema (shape, character set, length, counts) before any paid call; the endpoint, which reads the schema
from the model's manifest, calls the same `check_facts` with the schema and judges names and values too.
Every violation is a ValueError whose message names the field and echoes caller text only through `echo`
(bounded), so no answer grows with the request.

    product_type       1 to 4 words of letters (hyphens allowed), at most 40 characters
    known_attributes   at most MAX_KNOWN_ATTRIBUTES names -> values (loom.abstention.check_known_attributes)
    min_precision      a number in loom.calibration.MIN_PRECISION_BOUNDS
    language           en, pt, es, zh, ja (codes, BCP 47 tags such as pt-BR, or the language's name)
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from loom.abstention import check_known_attributes
from loom.calibration import check_min_precision
from loom.errors import echo
from loom.schema import DEFAULT_PRODUCT_NOUN, AttributeSchema

MAX_PRODUCT_TYPE_CHARS = 40
MAX_ATTRIBUTE_NAMES = 32  # names in one `attributes` list; a schema has about ten
FACT_KEYS = ("product_type", "known_attributes", "min_precision")

LANGUAGES = {"en": "English", "pt": "Portuguese", "es": "Spanish", "zh": "Chinese", "ja": "Japanese"}
_LANGUAGE_ALIASES = {
    "english": "en", "portuguese": "pt", "português": "pt", "portugues": "pt", "spanish": "es",
    "español": "es", "espanol": "es", "castellano": "es", "chinese": "zh", "中文": "zh", "汉语": "zh",
    "漢語": "zh", "japanese": "ja", "日本語": "ja",
}  # fmt: skip
MAX_LANGUAGE_CHARS = 35  # the longest BCP 47 tag in common use fits (RFC 5646 section 4.4.1 advises 35)
_PRODUCT_TYPE = re.compile(r"^[^\W\d_]+(?:[ \-][^\W\d_]+){0,3}$")


def language_code(value: Any) -> str:
    """"pt", "pt-BR", "Portuguese", "português" -> "pt"; ValueError for unsupported languages (None: "en")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "en"
    supported = ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items())
    if not isinstance(value, str) or len(value) > MAX_LANGUAGE_CHARS:
        raise ValueError(f"'language' {echo(value)} is not supported; use one of {supported}")
    text = value.strip().lower()
    code = _LANGUAGE_ALIASES.get(text) or re.split(r"[-_]", text)[0]
    if code not in LANGUAGES:
        raise ValueError(f"'language' {echo(value)} is not supported; use one of {supported}")
    return code


def check_product_type(value: Any) -> str:
    """A product type as the caller wrote it, spaces collapsed: 1 to 4 words of letters, at most 40 characters."""
    text = " ".join(value.split()) if isinstance(value, str) and len(value) <= 4 * MAX_PRODUCT_TYPE_CHARS else ""
    if not text or len(text) > MAX_PRODUCT_TYPE_CHARS or not _PRODUCT_TYPE.match(text):
        raise ValueError(f"'product_type' must be 1 to 4 words of letters (at most {MAX_PRODUCT_TYPE_CHARS} "
                         "characters), e.g. \"shirt\"")
    return text


def clean_product_type(value: Any) -> str:
    """The product noun for prompts: `check_product_type` lower-cased; None or blank: DEFAULT_PRODUCT_NOUN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_PRODUCT_NOUN
    return check_product_type(value).lower()


def check_facts(fields: Mapping[str, Any], schema: AttributeSchema | None = None,
                product_type: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The facts of one product request (`product_type`, `known_attributes`, `min_precision`), checked.

    `schema` None (the API Lambda): shape, character set and length only. With the schema (the endpoint):
    names and known values too, and `product_type(text)` maps a product type to the schema's (both the
    field and a merchant's `known_attributes[type attribute]`); ValueError naming the field otherwise.
    """
    facts: dict[str, Any] = {}
    if fields.get("min_precision") is not None:
        facts["min_precision"] = check_min_precision(fields["min_precision"])
    if fields.get("known_attributes") is not None:
        known = check_known_attributes(schema, fields["known_attributes"])
        type_name = schema.type_attribute if schema is not None else None
        if type_name in known and product_type is not None:
            known[type_name] = product_type(check_product_type(known[type_name]))
        facts["known_attributes"] = known
    if fields.get("product_type") is not None:
        text = check_product_type(fields["product_type"])
        facts["product_type"] = product_type(text) if product_type else text
    return facts
