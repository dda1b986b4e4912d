"""POST /restyle: request validation, the Bedrock image-to-image call (Stubber validates it against the
bedrock-runtime service model; the JSON body against the model's documented schema), content-filter and
error mapping, and delivery inline or through a presigned URL (moto S3)."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import urlsplit

import boto3
import jsonschema
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY
from moto import mock_aws
from stubbed_aws import stubbed_client

from api_events import call, event, jpeg, json_event, png

from inference.api.visual import restyle
from inference.api.endpoint_client import AttributePrediction
from loom.errors import StatusError

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
    body = {"image": base64.b64encode(jpeg(64, 64)).decode(), "style": "in the style of Van Gogh's Starry Night",
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
    # The product type is the noun's business, never a "with ..." detail ("a shirt with Shirts").
    assert restyle.subject_from_attributes({"articleType": "Shirts", "baseColour": "Red", "Fabric": "Cotton"},
                                           "shirt") == "a Red shirt with Cotton"


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
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="loom-artifacts")
        body = restyle.deliver(jpeg(64, 64), bucket="loom-artifacts", s3=restyle.storage_client)
        assert "image" not in body and body["expires_in"] == restyle.URL_EXPIRY_S
        assert "X-Amz-Expires=900" in body["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in body["url"]
        url = urlsplit(body["url"])
        assert url.hostname == "loom-artifacts.s3.us-east-1.amazonaws.com"
        assert s3.get_object(Bucket="loom-artifacts", Key=url.path.lstrip("/"))["Body"].read() == jpeg(64, 64)
    with pytest.raises(restyle.RestyleError, match="RESTYLE_BUCKET"):
        restyle.deliver(jpeg(64, 64), bucket=None, s3=restyle.storage_client)


# A URL signed for the global endpoint (<bucket>.s3.amazonaws.com) is redirected, and its signature then
# fails, for buckets in Regions launched after March 20, 2019 (ap-east-1, me-south-1, ...) and for new
# buckets until DNS has propagated: the URL must name the bucket's Regional endpoint.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html (legacy global endpoint),
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingRouting.html (temporary redirects)
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-east-1", "me-south-1"])
def test_the_presigned_url_names_the_regional_endpoint(fake_aws_credentials, monkeypatch, region):
    bucket = f"loom-data-123456789012-{region}"
    monkeypatch.setenv("AWS_REGION", region)
    url = urlsplit(restyle.storage_client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "restyle/x.jpeg"}, ExpiresIn=restyle.URL_EXPIRY_S))
    assert url.scheme == "https" and url.hostname == f"{bucket}.s3.{region}.amazonaws.com"
    assert f"%2F{region}%2Fs3%2Faws4_request" in url.query  # signed for the bucket's Region


# The image bounds of Stability's image-to-image request: every side >= 64 px (Stability API reference,
# SD3/SD3.5 generate, `image`), at most 9,437,184 pixels and an aspect ratio within 1:2.5..2.5:1 (Stability's
# image-input validation rules). The Lambda cannot resize (no Pillow), so it refuses with the bounds.
@pytest.mark.parametrize("width,height,ok", [
    (64, 64, True), (63, 200, False), (200, 63, False), (160, 64, True), (161, 64, False), (64, 160, True),
    (64, 161, False), (3072, 3072, True), (3073, 3072, False), (4096, 2304, True), (1024, 1024, True),
])
def test_photos_outside_the_models_bounds_are_refused_with_the_bounds(width, height, ok):
    body = json.dumps({"image": base64.b64encode(png(width, height)).decode(), "style": "in pastel"})
    if ok:
        assert restyle.parse_restyle_request(body, False, "application/json").image_format == "png"
        return
    with pytest.raises(restyle.RestyleError) as refused:
        restyle.parse_restyle_request(body, False, "application/json")
    assert refused.value.status == 400 and f"{width}x{height}" in refused.value.message
    assert "at least 64 pixels" in refused.value.message and "9,437,184" in refused.value.message
    assert "1:2.5 and 2.5:1" in refused.value.message


def test_the_route_is_off_unless_enabled(monkeypatch):
    monkeypatch.setenv("ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("RESTYLE_MODEL_ID", raising=False)
    status, body = call(json_event(jpeg(), path="/restyle", style="in pastel"))
    assert status == 404 and "not enabled" in body["error"]
    monkeypatch.setenv("RESTYLE_MODEL_ID", MODEL)
    status, body = call(event("/restyle", body=json.dumps({"image": base64.b64encode(png()).decode()})))
    assert status == 400 and "\"style\" must be" in body["error"]


# --- the interrogated prompt (a CLIP endpoint on the API) -------------------------------------------------------

SD35_OK = {"seeds": [7], "finish_reasons": [None], "images": [base64.b64encode(jpeg(8, 8)).decode()]}


def restyle_with(interrogate, *, deadline=100.0):
    """answer_restyle with a stubbed Bedrock; (answer, the prompt Bedrock received)."""
    sent = []
    with stubbed_client("bedrock-runtime") as (client, stub):
        client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel",
                                    lambda params, **_: sent.append(json.loads(params["body"])))
        stub.add_response("invoke_model", {"body": body_of(SD35_OK), "contentType": "application/json"})
        body = restyle.answer_restyle(
            restyle.RestyleSettings(MODEL, None), request(), endpoint=FakeEndpoint({"baseColour": "Green",
                                                                                    "Pattern": "Striped"}),
            default_product="shirt", bedrock=client, s3=lambda: None, deadline=deadline, clock=lambda: 0.0,
            interrogate=interrogate)
    jsonschema.validate(sent[0], SD35_IMAGE_TO_IMAGE)
    return body, sent[0]["prompt"]


def test_with_a_clip_endpoint_the_prompt_is_the_interrogated_one_then_the_style():
    asked = []

    def interrogate(image, caption):
        asked.append((image, caption))
        return f"{caption}, green, striped, studio photo"

    body, prompt = restyle_with(interrogate)
    assert asked == [(request().image, "a Green Striped shirt")]  # the stated attributes are its caption
    assert prompt == "a Green Striped shirt, green, striped, studio photo, in the style of Van Gogh's Starry Night"
    assert body["prompt"] == prompt and body["prompt_source"] == "interrogated" and "interrogate_error" not in body


def test_without_a_clip_endpoint_the_prompt_is_the_stated_attributes():
    body, prompt = restyle_with(None)
    assert prompt == "a Green Striped shirt, in the style of Van Gogh's Starry Night"
    assert body["prompt_source"] == "attributes" and "interrogate_error" not in body


def test_a_failed_or_late_interrogation_falls_back_to_the_attributes_and_says_so():
    def failing(image, caption):
        raise StatusError(503, "the model at endpoint 'loom-clip' is busy")

    body, prompt = restyle_with(failing)
    assert prompt == "a Green Striped shirt, in the style of Van Gogh's Starry Night"
    assert body["prompt_source"] == "attributes" and "(503: the model at endpoint 'loom-clip' is busy)" in \
        body["interrogate_error"]

    def never(image, caption):
        raise AssertionError("no CLIP call may start without the time it and the image call need")

    # Enough time for the image call, not for both: the image is still restyled, from the attributes.
    body, prompt = restyle_with(never, deadline=restyle.IMAGE_CALL_S + restyle.INTERROGATE_CALL_S - 0.1)
    assert body["prompt_source"] == "attributes" and "no time was left" in body["interrogate_error"]


@pytest.fixture
def restyle_route(monkeypatch):
    """POST /restyle through the handler: SageMaker (attribute and CLIP endpoints) and Bedrock stubbed."""
    from inference.api import aws_clients
    from inference.api.endpoint_client import request_body

    for key in ("ENDPOINT_URL", "SEARCH_ENDPOINT_URL", "SEARCH_ENDPOINT_NAME", "RESTYLE_BUCKET", "RESTYLE_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_NAME", "loom-endpoint")
    monkeypatch.setenv("RESTYLE_MODEL_ID", MODEL)
    image = jpeg(64, 64)
    attributes = {"attributes": {"baseColour": "Green", "Pattern": "Striped"},
                  "withheld": {"Fit": {"value": "Slim Fit", "confidence": 0.3, "reason": "below_threshold"}},
                  "confidence": {"baseColour": 0.99, "Pattern": 0.98, "Fit": 0.3}}
    with stubbed_client("sagemaker-runtime") as (sagemaker, sm_stub), \
            stubbed_client("bedrock-runtime") as (bedrock, br_stub):
        aws_clients.use_client("sagemaker-runtime", sagemaker)
        monkeypatch.setitem(restyle._IMAGE_CLIENT, None, bedrock)
        sent = []
        bedrock.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel",
                                     lambda params, **_: sent.append(json.loads(params["body"])))

        def endpoint_answer(name, body, answer):
            raw = json.dumps(answer).encode()
            sm_stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(raw), len(raw)),
                                                     "ContentType": "application/json"},
                                 {"EndpointName": name, "ContentType": "application/json",
                                  "Accept": "application/json", "Body": body})

        endpoint_answer("loom-endpoint", request_body(image, None), attributes)
        br_stub.add_response("invoke_model", {"body": body_of(SD35_OK), "contentType": "application/json"})
        try:
            yield image, endpoint_answer, sent
        finally:
            aws_clients.use_client("sagemaker-runtime", None)


def test_the_route_prompts_from_the_attributes_without_a_clip_endpoint(restyle_route):
    image, _, sent = restyle_route
    status, body = call(json_event(image, path="/restyle", style="in pastel"))
    assert status == 200, body
    assert sent[0]["prompt"] == "a Green Striped shirt, in pastel" and body["prompt_source"] == "attributes"


def test_the_route_prompts_from_the_interrogated_photo_with_a_clip_endpoint(restyle_route, monkeypatch):
    image, endpoint_answer, sent = restyle_route
    monkeypatch.setenv("SEARCH_ENDPOINT_NAME", "loom-clip")
    interrogated = "a Green Striped shirt, green, striped, studio photo"
    endpoint_answer("loom-clip", json.dumps({"task": "interrogate", "image": base64.b64encode(image).decode(),
                                             "mode": restyle.INTERROGATE_MODE, "caption": "a Green Striped shirt"
                                             }).encode(),
                    {"prompt": interrogated, "caption": "a Green Striped shirt", "similarity": 0.3,
                     "terms": [{"text": "green", "similarity": 0.3}]})
    status, body = call(json_event(image, path="/restyle", style="in pastel"))
    assert status == 200, body
    assert sent[0]["prompt"] == f"{interrogated}, in pastel" and body["prompt_source"] == "interrogated"
