"""What Loom states and what it withholds, and why: the answer to one product (standard library only).

Every asked attribute ends in exactly one place:
- `attributes`: stated. The model's value parsed, is a known value, applies to the product type, and its
  value confidence reached the attribute's calibrated threshold (loom.calibration) at the precision asked;
  or a merchant gave it (`known_attributes`), which is stated as given (`sources[name] == "merchant"`).
- `withheld[name] = {"value", "confidence", "reason"}` otherwise, the reason being one of REASONS:
  "unparsed" (the answer is not `Label: Value`; value null), "unknown_value" (a value never seen in
  training), "not_applicable" (the attribute does not apply to the product type; not asked, value and
  confidence null), "below_threshold" (below the calibrated threshold, or the attribute applies only to
  some product types and the product type itself is not stated), "not_enough_evidence" (the validation
  answers do not show the precision asked at any threshold, with the calibration's confidence: no
  confidence states it; loom.calibration).
`confidence` holds the value confidence of every asked attribute. Where the model would state a value that
differs from a merchant's, `conflicts` lists it. Without calibration (manifests older than it) every parsed,
known value is stated, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from loom.calibration import Calibration
from loom.errors import echo
from loom.schema import AttributeSchema

REASONS = ("below_threshold", "not_applicable", "not_enough_evidence", "unknown_value", "unparsed")
MAX_KNOWN_VALUE_CHARS = 64
MAX_KNOWN_ATTRIBUTES = 32  # a schema has about ten attributes
MAX_NAME_CHARS = 40
VALUE_CHARACTERS = "letters, digits, spaces and . , ' & / % + ( ) -"
_VALUE = re.compile(r"^[^\W_](?:[^\W_]|[ .,'&/%+()\-])*$")
_NAME = re.compile(r"^[^\W_](?:[^\W_]|[ _\-])*$")


@dataclass(frozen=True)
class ModelAnswer:
    """The model's answer to one attribute question: the raw text, its value (None: unparsed), its confidence."""

    text: str
    value: str | None
    confidence: float


def check_known_attributes(schema: AttributeSchema | None, value: Any) -> dict[str, str]:
    """A request's merchant facts `{"Fabric": "Cotton"}`, validated; ValueError saying what to fix.

    Always: at most MAX_KNOWN_ATTRIBUTES names of at most MAX_NAME_CHARS characters, each value a text of
    at most MAX_KNOWN_VALUE_CHARS characters in VALUE_CHARACTERS (letters, digits, spaces and `.,'&/%+()-`:
    no colons, quotes, brackets or line breaks, so a value cannot pose as an instruction or a prompt's
    markup). With `schema` (the endpoint, which reads the model's manifest): only the schema's attribute
    names, and where the schema knows an attribute's values (every attribute but the product type, which the
    caller maps with `product_type`), one of them, answered in the schema's spelling. With `schema` None (the
    API Lambda, which never sees the manifest) the endpoint judges names and values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("'known_attributes' must be an object of attribute name -> value, "
                         "such as {\"Fabric\": \"Cotton\"}")
    if len(value) > MAX_KNOWN_ATTRIBUTES:
        raise ValueError(f"'known_attributes' holds {len(value)} names; at most {MAX_KNOWN_ATTRIBUTES}")
    for name in value:
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _NAME.match(name):
            raise ValueError(f"known_attributes: the name {echo(name)} is not an attribute name (letters, digits, "
                             f"spaces, '-' or '_', at most {MAX_NAME_CHARS} characters)")
    unknown = schema.unknown(value) if schema is not None else []
    if unknown:
        raise ValueError(f"'known_attributes' names unknown attributes {[echo(n) for n in unknown[:5]]}"
                         f"{' and more' if len(unknown) > 5 else ''}; known: {schema.names}")
    known = {}
    for name, given in value.items():
        text = " ".join(given.split()) if isinstance(given, str) and len(given) <= 4 * MAX_KNOWN_VALUE_CHARS else ""
        if not text or len(text) > MAX_KNOWN_VALUE_CHARS or not _VALUE.match(text):
            raise ValueError(f"known_attributes[{name!r}] must be a non-empty text of at most "
                             f"{MAX_KNOWN_VALUE_CHARS} characters: {VALUE_CHARACTERS}")
        if schema is not None and name != schema.type_attribute and schema.attributes[name].values:
            spelled = {v.casefold(): v for v in schema.attributes[name].values}
            if text.casefold() not in spelled:
                values = sorted(spelled.values())
                raise ValueError(f"known_attributes[{name!r}] = {echo(text)} is not a value this model knows; "
                                 f"known: {values[:20]}{' and more' if len(values) > 20 else ''}")
            text = spelled[text.casefold()]
        known[name] = text
    return known


def withheld_reason(schema: AttributeSchema, calibration: Calibration | None, name: str, answer: ModelAnswer,
                    min_precision: float | None = None) -> str | None:
    """Why the model's answer to `name` is not stated, or None when it is stated."""
    if answer.value is None:
        return "unparsed"
    if not schema.is_known_value(name, answer.value):
        return "unknown_value"
    if calibration is None or name not in calibration.attributes:
        return None  # not calibrated: stated, as before calibration existed
    threshold = calibration.threshold(name, min_precision)
    if threshold is None:
        return "not_enough_evidence"
    return None if answer.confidence >= threshold else "below_threshold"


def state_answers(
    schema: AttributeSchema,
    calibration: Calibration | None,
    answers: Mapping[str, ModelAnswer],
    *,
    not_applicable: Sequence[str] = (),
    min_precision: float | None = None,
    known: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The response fields for one product from the model's answers to the asked attributes (in order).

    The product type is the merchant's (`known[schema.type_attribute]`), else the model's when stated.
    `not_applicable`: attributes requested but not asked because they do not apply to the product type.
    """
    known = dict(known or {})
    reasons = {name: withheld_reason(schema, calibration, name, a, min_precision) for name, a in answers.items()}
    type_name = schema.type_attribute
    product_type = known.get(type_name) if type_name else None
    if product_type is None and type_name in answers and reasons[type_name] is None:
        product_type = answers[type_name].value
    for name in answers:
        if reasons[name] is None and name != type_name and product_type is None \
                and not schema.applies_to_every_type(name):
            reasons[name] = "below_threshold"  # it may not even apply: the product type is not stated
    body: dict[str, Any] = {"attributes": {}, "withheld": {}, "confidence": {}, "raw": {}, "unknown_values": []}
    sources: dict[str, str] = {}
    conflicts = []
    for name, answer in answers.items():
        body["confidence"][name] = round(answer.confidence, 4)
        reason = reasons[name]
        if reason == "unparsed":
            body["raw"][name] = answer.text
        elif reason == "unknown_value":
            body["unknown_values"].append(name)
        if name in known:
            if reason is None and answer.value.casefold() != known[name].casefold():
                conflicts.append({"attribute": name, "merchant_value": known[name], "model_value": answer.value,
                                  "confidence": round(answer.confidence, 4)})
            continue
        if reason is None:
            body["attributes"][name] = answer.value
            sources[name] = "model"
        else:
            body["withheld"][name] = {"value": answer.value, "confidence": round(answer.confidence, 4),
                                      "reason": reason}
    for name in not_applicable:
        if name not in known:
            body["withheld"][name] = {"value": None, "confidence": None, "reason": "not_applicable"}
    for name, value in known.items():
        body["attributes"][name] = value
        sources[name] = "merchant"
    body["sources"] = sources
    body["conflicts"] = conflicts
    body["product_type"] = product_type
    if calibration is not None:
        body["min_precision"] = calibration.target_precision if min_precision is None else min_precision
    return body


def stated_quality(schema: AttributeSchema, results: Sequence[tuple[Mapping[str, str], Mapping[str, Any]]]
                   ) -> dict[str, Any]:
    """Precision and coverage of the model-stated attributes over products with known true values.

    `results`: (true values {attribute: value}, response body) per product. Per attribute: `stated` (by the
    model, merchant facts excluded), `correct`, `precision` (correct / stated), `coverage` (correct and
    stated over products whose true values hold the attribute) and `inapplicable_stated` (stated for a
    product whose true type the attribute does not apply to).
    """
    per: dict[str, dict[str, int]] = {}
    type_name = schema.type_attribute
    for truth, body in results:
        true_type = truth.get(type_name) if type_name else None
        sources = body.get("sources", {})
        for name in schema.names:
            counts = per.setdefault(name, {"products": 0, "stated": 0, "correct": 0, "inapplicable_stated": 0})
            counts["products"] += name in truth
            if sources.get(name, "model") != "model" or name not in body["attributes"]:
                continue
            counts["stated"] += 1
            counts["correct"] += truth.get(name) == body["attributes"][name]
            counts["inapplicable_stated"] += not schema.applies(name, true_type)

    def summary(c: Mapping[str, int]) -> dict[str, Any]:
        return {**c, "precision": round(c["correct"] / c["stated"], 4) if c["stated"] else None,
                "coverage": round(c["correct"] / c["products"], 4) if c["products"] else None,
                "stated_share": round(c["stated"] / c["products"], 4) if c["products"] else None}

    total = {k: sum(c[k] for c in per.values()) for k in ("products", "stated", "correct", "inapplicable_stated")}
    return {"overall": summary(total), "attributes": {name: summary(c) for name, c in per.items() if c["products"]}}
