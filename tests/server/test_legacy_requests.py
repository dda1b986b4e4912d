"""The design documents' request and answer forms on the attribute server (inference/server/legacy_requests.py),
with a stand-in predictor: untyped JSON bodies, the label key of a prompt answer, and what stays refused.

Why untyped bodies are read: the CLIP post calls `invoke_endpoint` without `ContentType`, and boto3 then sends
no Content-Type header (checked in tests/server/test_from_the_posts_endpoint.py); the handlers the posts deployed read such a
body as JSON: DJL Serving's `djl_python/encode_decode.py` `decode()` (no content type -> `get_as_json`) and the
sagemaker-containers worker (`_worker.Request.content_type` defaults to application/json). The SDK's default
serializer sends application/octet-stream (aws/sagemaker-python-sdk#2046). docs/endpoint-contract.md cites them.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from endpoint_contract import check_contract

from inference.server import legacy_requests
from inference.server.app import create_app
from runtime.predictor import Answer, interpret_answers
from loom.errors import StatusError
from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema

def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


class Predictor:
    """Answers every question the same way; records what it was asked."""

    def __init__(self, prompt_answer: str = "Sleeve Length: Long Sleeves"):
        self.schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
        for name in DEFAULT_ATTRIBUTES:
            self.schema.count(name, "Plain")
        self.prompt_answer, self.calls = prompt_answer, []

    def answer_attributes(self, image, attributes=None, facts=None, **params):
        names = list(attributes) if attributes is not None else self.schema.names
        self.calls.append(("attributes", names))
        answers = [Answer(f"{self.schema.attributes[n].label}: Plain", [1], 0.9) for n in names]
        return interpret_answers(self.schema, names, answers)

    def answer_attributes_many(self, items, **params):  # the server's batched call: (image, names, facts) items
        return [self.answer_attributes(image, names, facts, **params) for image, names, facts in items]

    def answer_prompt(self, image, prompt, **params):
        self.calls.append(("prompt", prompt))
        return Answer(self.prompt_answer, [1], 0.8)

    def product_type(self, text):
        return text

    @property
    def model_info(self):
        return {"name": "stand-in", "base_model": "none"}


@pytest.fixture()
def predictor():
    return Predictor()


@pytest.fixture()
def client(predictor):
    return create_app(predictor).test_client()


PROMPT = {"prompt": "What is the sleeve length of the shirt in this picture?",
          "image": base64.b64encode(png()).decode()}


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/octet-stream"}],
                         ids=["no content type", "octet-stream"])
def test_an_untyped_json_object_is_read_as_json(client, predictor, headers):
    response = client.post("/invocations", data=json.dumps(PROMPT).encode(), headers=headers)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    assert predictor.calls == [("prompt", PROMPT["prompt"])]
    response = client.post("/invocations", data=b"  \n" + json.dumps({"image": PROMPT["image"]}).encode(),
                           headers=headers)
    assert response.status_code == 200 and predictor.calls[-1] == ("attributes", list(DEFAULT_ATTRIBUTES))
    check_contract(response.json, "AttributeResponse")


@pytest.mark.parametrize("body", [png(), b"[1, 2]", b"", b"\"text\"", b"id,image\n1,abc"],
                         ids=["image bytes", "JSON array", "empty", "JSON string", "CSV"])
@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/octet-stream"}],
                         ids=["no content type", "octet-stream"])
def test_an_untyped_body_that_is_not_a_json_object_stays_415(client, predictor, body, headers):
    response = client.post("/invocations", data=body, headers=headers)
    assert response.status_code == 415, response.json
    assert "JSON object" in response.json["error"] and predictor.calls == []


def test_an_untyped_malformed_object_is_a_400_like_any_json_body(client):
    response = client.post("/invocations", data=b'{"image": ')
    assert response.status_code == 400 and "not valid JSON" in response.json["error"]


def test_a_prompt_answer_also_carries_its_label_as_a_key(client):
    response = client.post("/invocations", json=PROMPT)
    assert response.status_code == 200
    body = response.json
    # The fashion post reads resp["Sleeve Length"]; Loom's own fields stay as they were.
    assert body["Sleeve Length"] == "Long Sleeves"
    assert body["answer"] == "Sleeve Length: Long Sleeves" and body["confidence"] == 0.8
    assert set(body) == {"Sleeve Length", "answer", "confidence", "model", "timing_ms"}
    check_contract(body, "PromptResponse")


@pytest.mark.parametrize("text, fields", [
    ("Sleeve Length: Long Sleeves", {"Sleeve Length": "Long Sleeves"}),
    ("Colour: Navy Blue", {"Colour": "Navy Blue"}),
    ("just words", {}),
    ("Fit:", {}),
    (": Slim", {}),
    ("answer: overwritten?", {}),  # never replaces one of Loom's fields
    ("confidence: 1", {}),
])
def test_seed_answer_fields(text, fields):
    assert legacy_requests.seed_answer_fields(text) == fields


def test_an_unparsed_prompt_answer_has_loom_fields_only():
    client = create_app(Predictor(prompt_answer="answer: 12")).test_client()
    body = client.post("/invocations", json=PROMPT).json
    assert set(body) == {"answer", "confidence", "model", "timing_ms"} and body["answer"] == "answer: 12"


def test_typed_requests_are_read_as_before(client):
    assert client.post("/invocations", data=b"{}", content_type="text/csv").status_code == 415
    assert client.post("/invocations", data=png(), content_type="image/png").status_code == 200


@pytest.mark.parametrize("request_, reason", [
    ({"inputs": "x", "extra": 1}, "unexpected fields"),
    ({"inputs": "x", "parameters": [1]}, "'parameters' must be an object"),
    ({"inputs": "x", "parameters": {"top_k": 3}}, "unsupported parameters"),
    ({"inputs": "x", "parameters": {"max_flavors": 0}}, "max_flavors must be an integer"),
    ({"inputs": "x", "parameters": {"max_length": True}}, "max_length must be an integer"),
    ({"inputs": "x", "parameters": {"max_length": 10 ** 5000}}, "max_length must be an integer"),
])
def test_the_interrogator_form_refuses_what_it_cannot_honour(request_, reason):
    with pytest.raises(StatusError) as raised:
        legacy_requests.interrogator_request(request_)
    assert raised.value.status == 400 and reason in raised.value.message


def test_the_interrogator_parameters_map_onto_loom_interrogation():
    loom_request, max_length = legacy_requests.interrogator_request(
        {"inputs": "b64", "parameters": {"max_length": 50, "max_flavors": 32}})
    assert loom_request == {"task": "interrogate", "image": "b64", "mode": "best", "max_terms": 32}
    assert max_length == 50
    assert legacy_requests.interrogator_request({"inputs": "b64", "parameters": {"max_flavors": 99}})[0][
        "max_terms"] == 32  # Loom's limit
    assert legacy_requests.interrogator_request({"inputs": "b64"}) == (
        {"task": "interrogate", "image": "b64", "mode": "best", "max_terms": 32}, None)


def test_max_length_drops_whole_terms_from_the_end():
    result = {"prompt": "a shirt, red, striped, long sleeves", "caption": "a shirt",
              "terms": [{"text": "red"}, {"text": "striped"}, {"text": "long sleeves"}]}
    compose = lambda caption, terms: ", ".join([caption, *terms])  # noqa: E731
    answer = legacy_requests.answer_interrogator({"inputs": "b64", "parameters": {"max_length": 4}},
                                                 lambda request: result, compose)
    assert answer == {"outputs": "a shirt, red, striped"}  # 4 words: "long sleeves" would make 6
    assert legacy_requests.answer_interrogator({"inputs": "b64"}, lambda request: result, compose) == {
        "outputs": result["prompt"]}
    # never an empty prompt: the first term stays even past max_length
    assert legacy_requests.answer_interrogator({"inputs": "b64", "parameters": {"max_length": 1}},
                                               lambda request: result, compose) == {"outputs": "a shirt, red"}
