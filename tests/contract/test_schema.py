"""The contract: questions, the `Label: Value` answer format, the manifest; and the catalog's NA handling."""

from __future__ import annotations

import json

import pytest

from loom.artifact import MANIFEST_FILE, read_manifest, write_manifest
from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema, SchemaError, default_question
from training.catalog import clean_value, is_absent


@pytest.fixture
def schema() -> AttributeSchema:
    return AttributeSchema.from_names(DEFAULT_ATTRIBUTES)


def test_default_questions_follow_the_reference_template(schema):
    assert schema.question("Sleeve Length") == "What is the sleeve length of the shirt in this picture?"
    assert schema.question("baseColour") == "What is the colour of the shirt in this picture?"
    assert default_question("Fabric", "t-shirt") == "What is the fabric of the t-shirt in this picture?"


@pytest.mark.parametrize("value", [None, "", "  ", "NA", "na", "N/A", "null", "NaN", "-"])
def test_absent_values(value):
    assert is_absent(value) and clean_value(value) is None


def test_present_values_are_trimmed_with_inner_space_collapsed():
    assert clean_value("  Long   Sleeves ") == "Long Sleeves"
    assert clean_value("Navy Blue") == "Navy Blue" and not is_absent("Nautical")


def test_answers_round_trip_and_use_the_human_label(schema):
    assert schema.format_answer("Sleeve Length", "Long Sleeves") == "Sleeve Length: Long Sleeves"
    assert schema.format_answer("baseColour", "Navy Blue") == "Colour: Navy Blue"
    for name in schema.names:
        assert schema.parse_answer(schema.format_answer(name, "Some Value")) == (name, "Some Value")


@pytest.mark.parametrize("text", ["Long Sleeves", "Sleeve Length:", "Sleeve Length: ", "Shoe Size: 42", ""])
def test_unparsable_answers_give_none(schema, text):
    assert schema.parse_answer(text) is None


def test_parse_is_case_insensitive_on_the_label_and_checks_the_expected_attribute(schema):
    assert schema.parse_answer("sleeve length: Short Sleeves") == ("Sleeve Length", "Short Sleeves")
    assert schema.parse_answer("Colour: Red", expected="Pattern") is None
    assert schema.parse_answer("Colour: Red", expected="baseColour") == ("baseColour", "Red")
    assert schema.parse_answer("Fit: Regular: Tall") == ("Fit", "Regular: Tall")  # a colon in the value stays


def test_known_values_counts_and_unknown_names(schema):
    schema.count("Pattern", "Striped")
    schema.count("Pattern", "Striped", 2)
    assert schema.attributes["Pattern"].values == {"Striped": 3}
    assert schema.is_known_value("Pattern", "Striped") and not schema.is_known_value("Pattern", "Dotted")
    assert schema.unknown(["Pattern", "Shoe Size", "Fit", "Heel"]) == ["Shoe Size", "Heel"]
    with pytest.raises(KeyError, match="unknown attribute 'Heel'"):
        schema.question("Heel")


def test_duplicate_attributes_are_refused():
    with pytest.raises(SchemaError, match="twice"):
        AttributeSchema.from_names(["Fit", "Fit"])


def test_schema_file_round_trip_and_bad_files(schema, tmp_path):
    schema.count("baseColour", "Red", 5)
    path = schema.save(tmp_path / "attribute_schema.json")
    loaded = AttributeSchema.load(tmp_path)  # a folder means the file inside it
    assert loaded.to_dict() == schema.to_dict()
    assert loaded.names == list(DEFAULT_ATTRIBUTES)
    path.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        AttributeSchema.load(path)
    path.write_text('{"attributes": [{"name": "Fit"}]}')
    with pytest.raises(SchemaError, match="malformed"):
        AttributeSchema.load(path)
    with pytest.raises(SchemaError, match="no attribute schema"):
        AttributeSchema.load(tmp_path / "missing.json")


def test_manifest_round_trip_and_refusals(schema, tmp_path):
    write_manifest(tmp_path, schema, base_model="Salesforce/blip2-flan-t5-xl", lora={"r": 8},
                   metrics={"overall": {"exact_match": 0.9}}, extra={"name": "m1"})
    manifest = read_manifest(tmp_path)
    assert isinstance(manifest["schema"], AttributeSchema) and manifest["schema"].names == schema.names
    assert (manifest["base_model"], manifest["lora"], manifest["name"]) == ("Salesforce/blip2-flan-t5-xl",
                                                                         {"r": 8}, "m1")
    path = tmp_path / MANIFEST_FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "manifest_version": 99}))
    with pytest.raises(SchemaError, match="manifest_version 99"):
        read_manifest(tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(SchemaError, match="expected an object"):
        read_manifest(tmp_path)
    with pytest.raises(SchemaError, match="not a Loom model folder"):
        read_manifest(tmp_path / "elsewhere")
