"""The API with abstention: only stated and merchant-given values reach the description (Bedrock under
botocore's Stubber, which checks every request against the real service model), withheld values and
conflicts are answered, and the new request fields are validated before any paid call."""

from __future__ import annotations

import base64
import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY

from inference.api.describe import DEFAULT_MODEL_ID, OfflineWriter, converse_settings, write_description
from inference.api.endpoint_client import parse_prediction, request_body
from api_events import call, jpeg, json_event
from fixtures_api import converse_reply

# What the endpoint answers for a product whose fabric the model cannot see: Linen is withheld.
ENDPOINT_ANSWER = {
    "attributes": {"baseColour": "Red", "Fit": "Slim Fit"},
    "withheld": {"Fabric": {"value": "Linen", "confidence": 0.41, "reason": "below_threshold"},
                 "Neck": {"value": None, "confidence": None, "reason": "not_applicable"}},
    "confidence": {"baseColour": 0.98, "Fabric": 0.41, "Fit": 0.97},
    "raw": {}, "unknown_values": [], "sources": {"baseColour": "model", "Fit": "merchant"},
    "conflicts": [{"attribute": "Fit", "merchant_value": "Slim Fit", "model_value": "Regular Fit",
                   "confidence": 0.97}],
    "product_type": "Shirts", "min_precision": 0.9, "model": {"name": "loom-tiny"},
}


def endpoint_reply(data=ENDPOINT_ANSWER):
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def test_describe_prompt_carries_no_withheld_value_and_the_facts_reach_the_endpoint(aws):  # noqa: F811
    image = jpeg()
    facts = {"min_precision": 0.9, "known_attributes": {"Fit": "Slim Fit"}}
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply(), {
        "EndpointName": "loom-endpoint", "ContentType": "application/json", "Accept": "application/json",
        "Body": json.dumps({"image": base64.b64encode(image).decode(), **facts}).encode(),
    })
    # The exact user message: stated colour and the merchant's fit; neither Linen nor any Neck.
    aws.bedrock.add_response("converse", converse_reply("A red shirt in a slim fit."), {
        "modelId": DEFAULT_MODEL_ID, "system": ANY, **converse_settings(DEFAULT_MODEL_ID).request(),
        "messages": [{"role": "user", "content": [{"text": "<product_data>\nColour: Red\nFit: Slim Fit\n</product_data>"}]}],
    })
    code, body = call(json_event(image, **facts))
    assert code == 200, body
    assert body["attributes"] == {"baseColour": "Red", "Fit": "Slim Fit"}
    assert body["withheld"] == ENDPOINT_ANSWER["withheld"]
    assert body["sources"] == {"baseColour": "model", "Fit": "merchant"}
    assert body["conflicts"] == ENDPOINT_ANSWER["conflicts"] and body["product_type"] == "Shirts"
    assert body["coverage"]["checked"] == ["baseColour", "Fit"] and body["coverage"]["complete"]
    assert "Linen" not in json.dumps(body["coverage"]) and "Linen" not in body["description"]


def test_a_named_product_type_is_passed_to_the_endpoint(aws):  # noqa: F811
    image = jpeg()
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply(), {
        "EndpointName": "loom-endpoint", "ContentType": "application/json", "Accept": "application/json",
        "Body": json.dumps({"image": base64.b64encode(image).decode(), "product_type": "T-shirt"}).encode(),
    })
    code, body = call(json_event(image, path="/attributes", product_type="T-shirt"))
    assert code == 200 and "description" not in body


@pytest.mark.parametrize("fields, fragment", [
    ({"min_precision": 0.1}, "min_precision"), ({"min_precision": "high"}, "min_precision"),
    ({"known_attributes": {"Fabric": "  "}}, "non-empty text"), ({"known_attributes": ["Cotton"]}, "an object"),
    ({"known_attributes": {"Fabric": ""}}, "'known_attributes.Fabric' must not be empty"),
])
def test_bad_facts_are_400_before_any_paid_call(aws, fields, fragment):  # noqa: F811
    code, body = call(json_event(jpeg(), **fields))
    assert code == 400 and fragment in body["error"]


def test_offline_writer_states_only_what_it_is_given():
    prediction = parse_prediction(json.dumps(ENDPOINT_ANSWER))
    result = write_description(OfflineWriter(), prediction.attributes)
    assert "Red" in result.text and "Slim Fit" in result.text and "Linen" not in result.text
    assert result.coverage["complete"]


def test_the_client_reads_old_and_new_responses_and_sends_the_facts():
    old = parse_prediction(json.dumps({"attributes": {"baseColour": "Red"}, "confidence": {"baseColour": 0.9}}))
    assert old.withheld == {} and old.conflicts == [] and old.sources == {} and old.product_type is None
    new = parse_prediction(json.dumps(ENDPOINT_ANSWER))
    assert new.withheld["Fabric"]["reason"] == "below_threshold" and new.conflicts[0]["model_value"] == "Regular Fit"
    sent = json.loads(request_body(b"img", ["Fit"], {"known_attributes": {"Fit": "Slim Fit"}, "min_precision": None}))
    assert sent == {"image": base64.b64encode(b"img").decode(), "attributes": ["Fit"],
                    "known_attributes": {"Fit": "Slim Fit"}}
