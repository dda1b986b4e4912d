"""The attribute schema: which attributes Loom asks about, the question for each, the answer format.

This module is the contract between the catalog, training, the model artifact, the inference server
and the Lambda. It imports nothing outside the standard library so that every part can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_FILE = "attribute_schema.json"

DEFAULT_ATTRIBUTES = (
    "Fabric",
    "Fit",
    "Collar",
    "Pattern",
    "Neck",
    "Sleeve Length",
    "Sleeve Styling",
    "baseColour",
)
DEFAULT_PRODUCT_NOUN = "shirt"
# What a photo shows at a glance and what the synthetic catalog draws: the attributes the CLIP side trains and
# evaluates on, the demos print, and image prompts phrase ("a Red Striped shirt with Long Sleeves").
DISPLAY_ATTRIBUTES = ("baseColour", "Pattern", "Sleeve Length")
# The product type is one more trained question, asked first; its catalog column is "articleType".
PRODUCT_TYPE_ATTRIBUTE = "articleType"
PRODUCT_TYPE_QUESTION = "What type of product is in this picture?"
QUESTION_TEMPLATE = "What is the {noun} of the {product} in this picture?"
ANSWER_SEPARATOR = ": "

# Attribute names in the catalog are not always what a shopper reads ("baseColour").
_LABELS = {"baseColour": "Colour", PRODUCT_TYPE_ATTRIBUTE: "Product Type"}

def attribute_label(name: str) -> str:
    """The human label of an attribute, used in questions and answers ("baseColour" -> "Colour")."""
    return _LABELS.get(name, name)


def default_question(name: str, product_noun: str = DEFAULT_PRODUCT_NOUN) -> str:
    """The default question for an attribute: "What is the sleeve length of the shirt in this picture?"."""
    if name == PRODUCT_TYPE_ATTRIBUTE:
        return PRODUCT_TYPE_QUESTION
    return QUESTION_TEMPLATE.format(noun=attribute_label(name).lower(), product=product_noun)


@dataclass
class Attribute:
    """One attribute Loom asks about, and the values seen for it in the training data."""

    name: str
    question: str
    label: str
    values: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "question": self.question, "values": dict(self.values)}


class SchemaError(ValueError):
    """A schema or manifest file that cannot be used."""


class AttributeSchema:
    """The ordered attributes with their questions, answer format and known values.

    `applies_to` maps each product type to the attributes its products carry (None: every attribute
    applies to every product); `type_attribute` names the trained product-type question, when there is one.
    Schemas written before these existed load with both None and behave as before.
    """

    def __init__(self, attributes: Iterable[Attribute], product_noun: str = DEFAULT_PRODUCT_NOUN, *,
                 applies_to: Mapping[str, Iterable[str]] | None = None, type_attribute: str | None = None):
        self.attributes: dict[str, Attribute] = {}
        for attribute in attributes:
            if attribute.name in self.attributes:
                raise SchemaError(f"attribute {attribute.name!r} appears twice in the schema")
            self.attributes[attribute.name] = attribute
        self.product_noun = product_noun
        self._by_label = {a.label.lower(): a.name for a in self.attributes.values()}
        if type_attribute is not None and type_attribute not in self.attributes:
            raise SchemaError(f"type_attribute {type_attribute!r} is not an attribute of the schema")
        self.type_attribute = type_attribute
        self.applies_to: dict[str, list[str]] | None = None
        if applies_to is not None:
            self.applies_to = {str(t): list(names) for t, names in applies_to.items()}
            stray = sorted({n for names in self.applies_to.values() for n in names} - set(self.attributes))
            if stray:
                raise SchemaError(f"applies_to names attributes the schema does not have: {stray}")

    # -- applicability ----------------------------------------------------------------------------------

    @property
    def product_types(self) -> list[str]:
        """The product types the schema knows applicability for (empty without applicability)."""
        return list(self.applies_to or {})

    def applies(self, name: str, product_type: str | None) -> bool:
        """Whether attribute `name` applies to `product_type`; True when that is not known."""
        if self.applies_to is None or product_type is None or product_type not in self.applies_to:
            return True
        return name in self.applies_to[product_type]

    def applies_to_every_type(self, name: str) -> bool:
        return self.applies_to is None or all(name in names for names in self.applies_to.values())

    def match_product_type(self, text: str) -> str | None:
        """The schema's product type that `text` names ("t-shirt", "T-Shirts" -> "Tshirts"), else None."""
        def key(value: str) -> str:
            letters = "".join(c for c in value.lower() if c.isalnum())
            return letters[:-1] if letters.endswith("s") else letters

        wanted = key(text)
        return next((t for t in self.product_types if key(t) == wanted), None)

    @classmethod
    def from_names(cls, names: Iterable[str], product_noun: str = DEFAULT_PRODUCT_NOUN) -> "AttributeSchema":
        """A schema with the default question for each attribute name and no known values yet."""
        names = list(names)
        return cls(
            (Attribute(n, default_question(n, product_noun), attribute_label(n)) for n in names),
            product_noun=product_noun,
            type_attribute=PRODUCT_TYPE_ATTRIBUTE if PRODUCT_TYPE_ATTRIBUTE in names else None,
        )

    @property
    def names(self) -> list[str]:
        return list(self.attributes)

    def __contains__(self, name: object) -> bool:
        return name in self.attributes

    def __len__(self) -> int:
        return len(self.attributes)

    def question(self, name: str) -> str:
        return self._get(name).question

    def format_answer(self, name: str, value: str) -> str:
        """The training target for an attribute value: "Sleeve Length: Long Sleeves"."""
        return f"{self._get(name).label}{ANSWER_SEPARATOR}{value}"

    def parse_answer(self, text: str, expected: str | None = None) -> tuple[str, str] | None:
        """Split a generated answer into (attribute name, value), or None when it does not parse.

        With `expected`, an answer that names another attribute does not parse.
        """
        label, sep, value = text.strip().partition(ANSWER_SEPARATOR.strip())
        value = value.strip()
        if not sep or not value:
            return None
        name = self._by_label.get(label.strip().lower())
        if name is None or (expected is not None and name != expected):
            return None
        return name, value

    def is_known_value(self, name: str, value: str) -> bool:
        return value in self._get(name).values

    def count(self, name: str, value: str, n: int = 1) -> None:
        """Record that `value` was seen `n` more times for attribute `name`."""
        values = self._get(name).values
        values[value] = values.get(value, 0) + n

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names that are not attributes of this schema, in the order given."""
        return [n for n in names if n not in self.attributes]

    def _get(self, name: str) -> Attribute:
        try:
            return self.attributes[name]
        except KeyError:
            raise KeyError(f"unknown attribute {name!r}; known: {', '.join(self.attributes)}") from None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "product_noun": self.product_noun,
            "answer_format": "{label}" + ANSWER_SEPARATOR + "{value}",
            "attributes": [a.to_dict() for a in self.attributes.values()],
        }
        if self.type_attribute is not None:
            data["type_attribute"] = self.type_attribute
        if self.applies_to is not None:
            data["applies_to"] = {t: list(names) for t, names in self.applies_to.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttributeSchema":
        try:
            attributes = [
                Attribute(
                    name=a["name"],
                    question=a["question"],
                    label=a.get("label", attribute_label(a["name"])),
                    values={str(k): int(v) for k, v in a.get("values", {}).items()},
                )
                for a in data["attributes"]
            ]
            applies_to = data.get("applies_to")
            if applies_to is not None:
                applies_to = {str(t): [str(n) for n in names] for t, names in dict(applies_to).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"malformed attribute schema: {exc!r}") from exc
        return cls(attributes, product_noun=data.get("product_noun", DEFAULT_PRODUCT_NOUN),
                   applies_to=applies_to, type_attribute=data.get("type_attribute"))

    def save(self, path: str | Path) -> Path:
        from loom.artifact import write_json

        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "AttributeSchema":
        path = Path(path)
        if path.is_dir():
            path = path / SCHEMA_FILE
        from loom.artifact import read_json  # the one JSON reader of the contract

        return cls.from_dict(read_json(path, missing=f"no attribute schema at {path}"))
