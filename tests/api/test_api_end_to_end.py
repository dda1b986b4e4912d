"""End to end: the API Lambda handler in local mode (ENDPOINT_URL, offline writer) against the real `serve`
program (gunicorn on 127.0.0.1) holding the tiny model that `train` fine-tuned (fixture `trained_artifact`).

No stub anywhere between the API Gateway event and the model: the event is a real HTTP API v2 sample,
the endpoint call crosses a socket, and the answers come from the merged model.
"""

from __future__ import annotations

import base64

import pytest

from api_events import call, event, json_event

from inference.server.local_server import LocalServer
from loom.schema import DISPLAY_ATTRIBUTES, AttributeSchema
from training.data import read_vqa_csv, values_by_product
from training.prepare import VAL_FILE

pytestmark = pytest.mark.slow
VISIBLE = DISPLAY_ATTRIBUTES


@pytest.fixture(scope="module")
def served(trained_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("api_e2e") / "serve.log"
    with LocalServer(trained_artifact.model_dir, log_path=log) as server:
        server.wait_ready(timeout=180)
        yield server


@pytest.fixture
def local_mode(monkeypatch, served):
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    monkeypatch.setenv("ENDPOINT_URL", served.url)
    monkeypatch.setenv("DESCRIPTION_BACKEND", "offline")
    return served


def validation_truth(trained_artifact, products: int) -> dict[str, dict[str, str]]:
    examples = read_vqa_csv(trained_artifact.data_dir / VAL_FILE, AttributeSchema.load(trained_artifact.data_dir))
    return dict(list(values_by_product(examples).items())[:products])


def image_of(trained_artifact, product_id: str) -> bytes:
    return (trained_artifact.catalog_dir / "images" / f"{product_id}.jpg").read_bytes()


def test_describe_returns_the_true_visible_attributes_and_a_covering_description(local_mode, trained_artifact):
    truth = validation_truth(trained_artifact, products=6)
    assert len(truth) == 6
    for product_id, expected in truth.items():
        status, body = call(json_event(image_of(trained_artifact, product_id), product_type="shirt"))
        assert status == 200, body
        for name in VISIBLE:
            assert body["attributes"][name] == expected[name], (product_id, name, body)
            assert 0.5 <= body["confidence"][name] <= 1.0
        assert body["model"]["llm"] == "loom-offline-writer"
        assert body["model"]["vlm"]  # the artifact's name, reported by the server
        assert body["coverage"]["complete"] is True
        described = body["description"].lower()
        for name in VISIBLE:
            assert expected[name].lower() in described


def test_raw_jpeg_body_as_api_gateway_delivers_it(local_mode, trained_artifact):
    product_id, expected = next(iter(validation_truth(trained_artifact, products=1).items()))
    raw = base64.b64encode(image_of(trained_artifact, product_id)).decode()
    status, body = call(event("/attributes", body=raw, content_type="image/jpeg", b64=True))
    assert status == 200, body
    assert {name: body["attributes"][name] for name in VISIBLE} == {name: expected[name] for name in VISIBLE}
    assert "description" not in body or body["description"] is None


def test_attribute_subset_reaches_the_model_and_only_it_comes_back(local_mode, trained_artifact):
    product_id, expected = next(iter(validation_truth(trained_artifact, products=1).items()))
    status, body = call(json_event(image_of(trained_artifact, product_id), path="/attributes",
                                   attributes=["Sleeve Length"]))
    assert status == 200, body
    assert body["attributes"] == {"Sleeve Length": expected["Sleeve Length"]}
    assert set(body["confidence"]) == {"Sleeve Length"}


def test_a_request_only_the_server_can_refuse_comes_back_as_a_4xx_with_its_reason(local_mode, monkeypatch,
                                                                                  trained_artifact):
    # This model's manifest has no "Shoe Size". Only the server knows that, and its 400 must reach the
    # client as a 4xx that names the attribute.
    product_id = next(iter(validation_truth(trained_artifact, products=1)))
    status, body = call(json_event(image_of(trained_artifact, product_id), attributes=["Pattern", "Shoe Size"]))
    assert status == 400, body
    assert "Shoe Size" in body["error"]
    # The worker survived it: the next request is answered.
    assert local_mode.ping() == 200
    status, body = call(json_event(image_of(trained_artifact, product_id), attributes=["Pattern"]))
    assert status == 200 and set(body["attributes"]) == {"Pattern"}
