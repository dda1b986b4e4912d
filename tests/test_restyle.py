"""POST /restyle: request validation, the Bedrock image-to-image call (Stubber validates it against the
bedrock-runtime service model; the JSON body against the model's documented schema), content-filter and
error mapping, and delivery inline or through a presigned URL (moto S3)."""

from __future__ import annotations

import base64
import io
import json

import boto3
import jsonschema
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY
from moto import mock_aws
from stubbed_aws import stubbed_client
from test_gateway import call, event, json_event, jpeg, png

from inference.api import restyle
from inference.api.endpoint_client import AttributePrediction

MODEL = restyle.DEFAULT_RESTYLE_MODEL_ID
# The documented image-to-image request of Stable Diffusion 3.5 Large on Bedrock:
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
SD35_IMAGE_TO_IMAGE = {
    "type": "object",
    "required": ["prompt", "mode", "image", "strength"],
    "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 10000},
        "mode": {"const": "image-to-image"},
        "image": {"type": "string", "contentEncoding": "base64"},
        "strength": {"type": "number", "minimum": 0, "maximum": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967294},
        "negative_prompt": {"type": "string", "maxLength": 10000},
        "output_format": {"enum": ["jpeg", "png", "webp"]},
    },
}


def body_of(payload: dict) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


class FakeEndpoint:
    name = "fake"

    def __init__(self, attributes):
        self.attributes = attributes

    def predict(self, image, attributes=None):
        return AttributePrediction(self.attributes, {k: 0.99 for k in self.attributes})


def request(**fields) -> restyle.RestyleRequest:
    body = {"image": base64.b64encode(jpeg(32, 32)).decode(), "style": "in the style of Van Gogh's Starry Night",
            **fields}
    return restyle.parse_restyle_request(json.dumps(body), False, "application/json")


@pytest.mark.parametrize("fields, status, fragment", [
    ({"style": ""}, 400, "\"style\" must be"),
    ({"style": "x" * 301}, 400, "at most 300"),
    ({"strength": 0}, 400, "\"strength\" must be"),
    ({"strength": 1.5}, 400, "\"strength\" must be"),
    ({"strength": True}, 400, "\"strength\" must be"),
    ({"seed": -1}, 400, "\"seed\""),
    ({"image": "%%%"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"GIF89a...").decode()}, 400, "neither a JPEG nor a PNG"),
    ({"negative": "x"}, 400, "unexpected fields ['negative']"),
])
def test_bad_requests_are_refused_before_any_paid_call(fields, status, fragment):
    with pytest.raises(restyle.RestyleError) as refused:
        request(**fields)
    assert refused.value.status == status and fragment in refused.value.message


def test_the_prompt_names_only_what_the_model_stated_then_the_style():
    subject = restyle.subject_from_attributes({"baseColour": "Red", "Pattern": "Striped",
                                               "Sleeve Length": "Long Sleeves"}, "shirt")
    assert subject == "a Red Striped shirt with Long Sleeves"
    assert restyle.restyle_prompt(subject, "in the style of Van Gogh") == \
        "a Red Striped shirt with Long Sleeves, in the style of Van Gogh"
    assert restyle.subject_from_attributes({}, "dress") == "a dress"


def test_the_bedrock_call_matches_the_service_model_and_the_documented_body():
    restyled = jpeg(64, 64)
    sent = []
    with stubbed_client("bedrock-runtime") as (client, stub):
        client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel",
                                    lambda params, **_: sent.append(json.loads(params["body"])))
        stub.add_response("invoke_model", {"body": body_of({"seeds": [7], "finish_reasons": [None],
                                                            "images": [base64.b64encode(restyled).decode()]}),
                                           "contentType": "application/json"},
                          {"modelId": MODEL, "body": ANY, "contentType": "application/json",
                           "accept": "application/json"})
        body = restyle.answer_restyle(
            restyle.RestyleSettings(MODEL, None), request(strength=0.4, seed=7),
            endpoint=FakeEndpoint({"baseColour": "Green", "Pattern": "Checked"}), default_product="shirt",
            bedrock=client, s3=lambda: None, deadline=100.0, clock=lambda: 0.0)
    jsonschema.validate(sent[0], SD35_IMAGE_TO_IMAGE)
    assert sent[0]["prompt"] == "a Green Checked shirt, in the style of Van Gogh's Starry Night"
    assert sent[0]["strength"] == 0.4 and sent[0]["seed"] == 7
    assert base64.b64decode(body["image"]) == restyled and body["content_type"] == "image/jpeg"
    assert body["seed"] == 7 and body["model"] == MODEL


@pytest.mark.parametrize("reason, status", [("Filter reason: prompt", 400), ("Filter reason: input image", 400),
                                            ("Filter reason: output image", 422), ("Inference error", 502)])
def test_content_filters_become_answers_the_client_can_act_on(reason, status):
    with stubbed_client("bedrock-runtime") as (client, stub):
        stub.add_response("invoke_model", {"body": body_of({"finish_reasons": [reason]}),
                                           "contentType": "application/json"})
        with pytest.raises(restyle.RestyleError) as failed:
            restyle.invoke_restyle(client, MODEL, jpeg(), "a shirt, in pastel", 0.5)
    assert failed.value.status == status


@pytest.mark.parametrize("code, http, status", [("ThrottlingException", 429, 503), ("ValidationException", 400, 400),
                                                ("AccessDeniedException", 403, 502),
                                                ("ModelTimeoutException", 408, 504)])
def test_bedrock_errors_map_to_clear_statuses(code, http, status):
    with stubbed_client("bedrock-runtime") as (client, stub):
        stub.add_client_error("invoke_model", service_error_code=code, http_status_code=http, service_message="no")
        with pytest.raises(restyle.RestyleError) as failed:
            restyle.invoke_restyle(client, MODEL, jpeg(), "a shirt, in pastel", 0.5)
    assert failed.value.status == status and code in failed.value.message


def test_no_image_call_is_started_without_the_time_it_needs():
    with pytest.raises(restyle.RestyleError) as late:
        restyle.answer_restyle(restyle.RestyleSettings(MODEL, None), request(), endpoint=FakeEndpoint({}),
                               default_product="shirt", bedrock=object(), s3=lambda: None,
                               deadline=restyle.IMAGE_CALL_S - 1, clock=lambda: 0.0)
    assert late.value.status == 504


def test_a_large_result_goes_to_the_bucket_behind_a_short_lived_url(fake_aws_credentials, monkeypatch):
    monkeypatch.setattr(restyle, "MAX_INLINE_BASE64_CHARS", 100)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="loom-artifacts")
        body = restyle.deliver(jpeg(64, 64), bucket="loom-artifacts", s3=restyle.storage_client)
        assert "image" not in body and body["expires_in"] == restyle.URL_EXPIRY_S
        assert "X-Amz-Expires=900" in body["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in body["url"]
        key = body["url"].split("loom-artifacts/", 1)[-1].split("?")[0] if "loom-artifacts/" in body["url"] else \
            body["url"].split(".amazonaws.com/", 1)[1].split("?")[0]
        assert s3.get_object(Bucket="loom-artifacts", Key=key)["Body"].read() == jpeg(64, 64)
    with pytest.raises(restyle.RestyleError, match="RESTYLE_BUCKET"):
        restyle.deliver(jpeg(64, 64), bucket=None, s3=restyle.storage_client)


def test_the_route_is_off_unless_enabled(monkeypatch):
    monkeypatch.setenv("ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("RESTYLE_MODEL_ID", raising=False)
    status, body = call(json_event(jpeg(), path="/restyle", style="in pastel"))
    assert status == 404 and "not enabled" in body["error"]
    monkeypatch.setenv("RESTYLE_MODEL_ID", MODEL)
    status, body = call(event("/restyle", body=json.dumps({"image": base64.b64encode(png()).decode()})))
    assert status == 400 and "\"style\" must be" in body["error"]
