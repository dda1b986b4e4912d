"""The Flask app through its test client: content types, validation, error bodies, /ping states, and every
response checked against inference/openapi.json. A recording fake predictor keeps most tests fast; one
test runs the real predictor on the untrained tiny artifact."""

from __future__ import annotations

import json
import threading
import time

import pytest

from endpoint_contract import BAD_IMAGES, ODD_MODES, RGB_PNG, RecordingPredictor, b64, check_contract, image_bytes

from inference.server.app import create_app
from inference.server.request_parsing import RequestError, parse_parameters
from runtime.predictor import Answer, AttributeAnswers, interpret_answers
from loom.errors import StatusError
from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema





# -- image bytes ------------------------------------------------------------------------------------------









# -- a fake predictor -------------------------------------------------------------------------------------



@pytest.fixture()
def fake():
    return RecordingPredictor()


@pytest.fixture()
def client(fake):
    return create_app(fake, max_body_bytes=256 * 1024, max_image_pixels=1_000_000).test_client()


def post_json(client, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/invocations", data=data, content_type=content_type)


# -- tests ------------------------------------------------------------------------------------------------

def test_attribute_request_answers_the_named_attributes_in_the_contract_shape(client, fake):
    response = post_json(client, {"image": b64(RGB_PNG), "attributes": ["baseColour", "Fit", "Collar"],
                                  "parameters": {"max_new_tokens": 8}})
    assert response.status_code == 200, response.json
    body = response.json
    check_contract(body, "AttributeResponse")
    assert body["attributes"] == {"baseColour": "Red"}  # an unknown value is withheld, not stated
    assert body["withheld"] == {"Fit": {"value": "Baggy", "confidence": 0.5, "reason": "unknown_value"},
                                "Collar": {"value": None, "confidence": 0.5, "reason": "unparsed"}}
    assert body["raw"] == {"Collar": "no idea"}
    assert body["unknown_values"] == ["Fit"]
    assert set(body["confidence"]) == {"baseColour", "Fit", "Collar"}
    assert body["model"] == {"name": "fake", "base_model": "none"}
    kind, image, names, params = fake.calls[-1]
    assert (names, params, image.mode, image.size) == (["baseColour", "Fit", "Collar"], {"max_new_tokens": 8}, "RGB", (40, 50))


def test_attributes_default_to_all_of_the_manifest(client, fake):
    body = post_json(client, {"image": b64(RGB_PNG)}).json
    assert fake.calls[-1][2] == list(DEFAULT_ATTRIBUTES)
    assert list(body["confidence"]) == list(DEFAULT_ATTRIBUTES)


def test_prompt_request_is_answered_with_answer(client, fake):
    response = post_json(client, {"image": b64(RGB_PNG), "prompt": "  What colour is it? "})
    assert response.status_code == 200
    check_contract(response.json, "PromptResponse")
    assert response.json["answer"] == "Colour: Red" and response.json["confidence"] == 0.75
    assert fake.calls[-1][2] == "What colour is it?"


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/x-image", "image/png; charset=x"])
def test_raw_image_bodies_answer_every_attribute(client, fake, content_type):
    data = RGB_PNG if "png" in content_type or "x-image" in content_type else image_bytes(fmt="JPEG")
    response = client.post("/invocations", data=data, content_type=content_type)
    assert response.status_code == 200, response.json
    check_contract(response.json, "AttributeResponse")
    assert fake.calls[-1][2] == list(DEFAULT_ATTRIBUTES)


def test_jsonlines_answers_each_line_in_order_and_reports_bad_lines_in_place(client):
    lines = [json.dumps({"id": "a", "image": b64(RGB_PNG), "attributes": ["baseColour"]}), "",
             "{not json", json.dumps({"id": 7, "image": "%%%"}),
             json.dumps({"id": "c", "image": b64(image_bytes("CMYK", "JPEG"))})]
    response = post_json(client, "\n".join(lines) + "\n", content_type="application/jsonlines")
    assert response.status_code == 200 and response.mimetype == "application/jsonlines"
    out = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    for item in out:
        check_contract(item, "BatchResult")
    assert [o["id"] for o in out] == ["a", None, 7, "c"]
    assert out[0]["attributes"] == {"baseColour": "Red"}
    assert "line 2" in out[1]["error"] and "JSON" in out[1]["error"]
    assert "base64" in out[2]["error"]
    assert list(out[3]["confidence"]) == list(DEFAULT_ATTRIBUTES)


def test_jsonlines_products_are_answered_in_batches_that_share_parameters(fake):
    client = create_app(fake, batch_products=4).test_client()
    lines = [{"id": f"p{n}", "image": b64(RGB_PNG), "attributes": ["Pattern"]} for n in range(10)]
    lines[2] = {"id": "bad", "image": "%%%"}                         # an error does not break a batch
    lines[6]["parameters"] = {"max_new_tokens": 4}                   # other parameters: its own generation
    body = "\n".join(json.dumps(line) for line in lines)
    response = post_json(client, body, content_type="application/jsonlines")
    out = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [o["id"] for o in out] == [line["id"] for line in lines]
    assert "error" in out[2] and all(o["withheld"]["Pattern"]["value"] == "Plain"
                                   for i, o in enumerate(out) if i != 2)
    assert fake.batches == [4, 1, 1, 3]  # p0 p1 p3 p4 | p5 | p6 (max_new_tokens 4) | p7 p8 p9
    assert [c[3] for c in fake.calls][5] == {"max_new_tokens": 4}


@pytest.mark.parametrize("name", sorted(ODD_MODES))
def test_any_image_mode_becomes_rgb(client, fake, name):
    response = post_json(client, {"image": b64(ODD_MODES[name]), "attributes": ["baseColour"]})
    assert response.status_code == 200, response.json
    image = fake.calls[-1][1]
    assert image.mode == "RGB" and image.size == (40, 50)
    if name in ("palette with transparency", "rgba"):
        assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent pixels are shown on white


BAD_REQUESTS = {
    "malformed json": (b"{\"image\": ", 400, "not valid JSON"),
    "json list": ([1, 2], 400, "JSON object"),
    "missing image": ({"attributes": ["Fit"]}, 400, "'image' is missing"),
    "empty image": ({"image": ""}, 400, "non-empty base64"),
    "image not a string": ({"image": 12}, 400, "base64 string"),
    "non-base64 image": ({"image": "not base64 at all!"}, 400, "not valid base64"),
    "unknown attribute": ({"image": b64(RGB_PNG), "attributes": ["Fit", "Smell"]}, 400, "unknown attributes ['Smell']"),
    "empty attributes": ({"image": b64(RGB_PNG), "attributes": []}, 400, "non-empty list"),
    "duplicate attributes": ({"image": b64(RGB_PNG), "attributes": ["Fit", "Fit"]}, 400, "twice"),
    "prompt and attributes": ({"image": b64(RGB_PNG), "prompt": "q?", "attributes": ["Fit"]}, 400, "not both"),
    "huge prompt": ({"image": b64(RGB_PNG), "prompt": "x" * 5000}, 400, "at most 1000"),
    "unexpected field": ({"image": b64(RGB_PNG), "imgae": 1}, 400, "unexpected fields ['imgae']"),
    "too many tokens": ({"image": b64(RGB_PNG), "parameters": {"max_new_tokens": 65}}, 400, "1 to 64"),
    "unknown parameter": ({"image": b64(RGB_PNG), "parameters": {"temperature": 2}}, 400, "unsupported parameters"),
    "deeply nested json": ("[" * 100000 + "]" * 100000, 400, "not valid JSON"),
    **{name: ({"image": b64(data)}, 400, "image") for name, data in BAD_IMAGES.items()},
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_json_requests_get_a_4xx_that_says_what_to_fix(client, fake, name):
    body, status, fragment = BAD_REQUESTS[name]
    response = post_json(client, body)
    assert response.status_code == status, response.json
    check_contract(response.json, "Error")
    assert fragment in response.json["error"]
    assert not fake.calls


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_raw_images_get_a_400(client, name):
    response = client.post("/invocations", data=BAD_IMAGES[name], content_type="image/png")
    assert response.status_code == 400 and response.json["error"]


def test_pixel_limit_and_bomb_messages_say_to_resize(client):
    for name in ("over the pixel limit", "decompression bomb"):
        error = post_json(client, {"image": b64(BAD_IMAGES[name])}).json["error"]
        assert "resize" in error or "scale it down" in error


def test_unknown_content_type_is_415_and_big_body_is_413(client):
    response = client.post("/invocations", data=b"x", content_type="text/csv")
    assert response.status_code == 415 and "text/csv" in response.json["error"]
    assert client.post("/invocations", data=b"x").status_code == 415  # no content type at all
    response = client.post("/invocations", data=b"\0" * (300 * 1024), content_type="image/png")
    assert response.status_code == 413 and "MAX_BODY_MB" in response.json["error"]
    assert client.get("/invocations").status_code == 405
    assert client.get("/nowhere").json["error"].startswith("no route")


def test_ping_is_503_while_loading_then_200(fake):
    release = threading.Event()

    def factory():
        release.wait(10)
        return fake

    client = create_app(predictor_factory=factory).test_client()
    response = client.get("/ping")
    assert response.status_code == 503 and response.json == {"status": "loading"}
    assert post_json(client, {"image": b64(RGB_PNG)}).status_code == 503
    release.set()
    deadline = time.monotonic() + 10
    while client.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/ping").json == {"status": "ok"}
    check_contract(client.get("/ping").json, "PingOk")
    assert post_json(client, {"image": b64(RGB_PNG)}).status_code == 200


def test_ping_is_500_when_the_model_fails_or_takes_too_long_to_load():
    def broken():
        raise FileNotFoundError("no model.safetensors")

    client = create_app(predictor_factory=broken).test_client()
    deadline = time.monotonic() + 5
    while client.get("/ping").status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.01)
    response = client.get("/ping")
    assert response.status_code == 500 and "model.safetensors" in response.json["error"]
    check_contract(response.json, "PingFailed")
    assert post_json(client, {"image": b64(RGB_PNG)}).status_code == 500

    hang = threading.Event()
    slow = create_app(predictor_factory=lambda: hang.wait(5), load_timeout_s=0.05).test_client()
    time.sleep(0.1)
    assert slow.get("/ping").status_code == 500 and "MODEL_LOAD_TIMEOUT" in slow.get("/ping").json["error"]
    hang.set()


def test_create_app_needs_exactly_one_predictor_source(fake):
    with pytest.raises(ValueError):
        create_app()
    with pytest.raises(ValueError):
        create_app(fake, predictor_factory=lambda: fake)


def test_parse_parameters_bounds():
    assert parse_parameters({"max_new_tokens": 64, "num_beams": 4}) == {"max_new_tokens": 64, "num_beams": 4}
    for bad in ({"max_new_tokens": 0}, {"max_new_tokens": True}, {"num_beams": 5}, {"num_beams": 1.0}, [1]):
        with pytest.raises(RequestError) as caught:
            parse_parameters(bad)
        assert caught.value.status == 400 and isinstance(caught.value, StatusError)


def test_real_predictor_through_the_app(untrained_artifact):
    from runtime.predictor import Predictor

    predictor = Predictor.load(untrained_artifact)
    client = create_app(predictor).test_client()
    body = post_json(client, {"image": b64(RGB_PNG), "attributes": ["Pattern", "baseColour"],
                              "parameters": {"max_new_tokens": 4}}).json
    check_contract(body, "AttributeResponse")
    assert set(body["confidence"]) == {"Pattern", "baseColour"}
    assert set(body["attributes"]) | set(body["raw"]) == {"Pattern", "baseColour"}
    assert body["model"]["name"] == "untrained-tiny" and body["model"]["dtype"] == "float32"
    answer = post_json(client, {"image": b64(RGB_PNG), "prompt": "Describe the shirt in this picture."}).json
    check_contract(answer, "PromptResponse")


def test_interpret_answers_parses_keeps_raw_and_flags_unknown_values():
    schema = AttributeSchema.from_names(["baseColour", "Sleeve Length", "Fit"])
    schema.count("baseColour", "Red")
    schema.count("Sleeve Length", "Long Sleeves")
    answers = [Answer("Colour: Red", [1], 0.91), Answer("Sleeve Length: Elbow", [1], 0.5),
               Answer("Colour: Blue", [1], 0.123456)]
    result = interpret_answers(schema, ["baseColour", "Sleeve Length", "Fit"], answers)
    assert isinstance(result, AttributeAnswers)
    assert result.attributes == {"baseColour": "Red"}
    assert result.withheld["Sleeve Length"] == {"value": "Elbow", "confidence": 0.5, "reason": "unknown_value"}
    assert result.unknown_values == ["Sleeve Length"]
    assert result.raw == {"Fit": "Colour: Blue"}  # an answer naming another attribute does not parse
    assert result.confidence == {"baseColour": 0.91, "Sleeve Length": 0.5, "Fit": 0.1235}


def test_line_wrapped_and_data_url_base64_are_accepted_and_other_forms_refused(client):
    wrapped = "\n".join(b64(RGB_PNG)[i:i + 76] for i in range(0, len(b64(RGB_PNG)), 76))
    for image in (wrapped, f"data:image/png;base64,{b64(RGB_PNG)}"):
        assert post_json(client, {"image": image, "attributes": ["Fit"]}).status_code == 200
    for image, fragment in ((f"data:image/png,{b64(RGB_PNG)}", ";base64,"),
                            (b64(RGB_PNG).replace("+", "-").replace("/", "_") + "-_", "not valid base64")):
        response = post_json(client, {"image": image})
        assert response.status_code == 400 and fragment in response.json["error"]


def test_a_full_queue_refuses_at_once_with_503_and_ping_does_not_wait(fake):
    release, entered = threading.Event(), threading.Event()

    class Blocking(RecordingPredictor):
        def answer_attributes(self, image, attributes=None, facts=None, **params):
            entered.set()
            release.wait(10)
            return super().answer_attributes(image, attributes, facts, **params)

    app = create_app(Blocking(), max_pending=1, request_timeout_s=5)
    first = threading.Thread(target=lambda: post_json(app.test_client(), {"image": b64(RGB_PNG)}))
    first.start()
    try:
        assert entered.wait(5)
        started = time.perf_counter()
        response = post_json(app.test_client(), {"image": b64(RGB_PNG)})
        assert response.status_code == 503 and "MAX_PENDING_REQUESTS" in response.json["error"]
        assert app.test_client().get("/ping").status_code == 200
        assert time.perf_counter() - started < 0.5
    finally:
        release.set()
        first.join(10)
    assert post_json(app.test_client(), {"image": b64(RGB_PNG)}).status_code == 200  # admitted again


def test_deadline_is_504_and_a_stuck_model_call_makes_ping_500():
    release = threading.Event()

    class Hanging(RecordingPredictor):
        def answer_attributes(self, image, attributes=None, facts=None, **params):
            release.wait(10)
            return super().answer_attributes(image, attributes, facts, **params)

    client = create_app(Hanging(), request_timeout_s=0.2, stuck_after_s=0.3).test_client()
    try:
        response = post_json(client, {"image": b64(RGB_PNG)})
        assert response.status_code == 504 and "REQUEST_TIMEOUT_S" in response.json["error"]
        time.sleep(0.2)
        ping = client.get("/ping")
        assert ping.status_code == 500 and "MODEL_STUCK_AFTER_S" in ping.json["error"]
        check_contract(ping.json, "PingFailed")
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while client.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/ping").status_code == 200


def test_jsonlines_isolates_the_product_the_model_fails_on():
    class FailsOnTiny(RecordingPredictor):
        def answer_attributes_many(self, items, **params):
            if any(item[0].size == (3, 3) for item in items):
                raise RuntimeError("CUDA error on this image")
            return super().answer_attributes_many(items, **params)

    fake = FailsOnTiny()
    client = create_app(fake, batch_products=8).test_client()
    lines = [{"id": f"p{n}", "image": b64(image_bytes(size=(3, 3) if n == 2 else (40, 50)))} for n in range(4)]
    response = post_json(client, "\n".join(json.dumps(line) for line in lines), "application/jsonlines")
    out = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert response.status_code == 200 and [o["id"] for o in out] == ["p0", "p1", "p2", "p3"]
    assert set(out[2]) == {"id", "error"} and "line 3" in out[2]["error"]
    assert all("attributes" in o for i, o in enumerate(out) if i != 2)
    assert fake.batches == [1, 1, 1]  # the batch of 4 failed; then p0, p1, p3 alone (p2 failed alone)


def test_execution_parameters_and_accept(client):
    assert client.get("/execution-parameters").json == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                                                        "MaxPayloadInMB": 1}
    response = client.post("/invocations", data=json.dumps({"image": b64(RGB_PNG)}), content_type="application/json",
                           headers={"Accept": "image/png"})
    assert response.status_code == 406 and "application/json" in response.json["error"]
