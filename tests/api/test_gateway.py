"""The Lambda handler with real API Gateway HTTP API v2 events (from tests/fixtures/apigw-v2), the
SageMaker and Bedrock clients stubbed with botocore's Stubber, and local mode against a real HTTP server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from botocore.stub import ANY

from api_events import CONTEXT, call, event, jpeg, json_event, png


from fixtures_api import ENDPOINT_ANSWER, FULL, converse_reply, endpoint_reply

from inference.api import handler as gateway
from inference.api import service
from inference.api.describe import DEFAULT_MODEL_ID, converse_settings
from loom.image_header import ImageError, inspect_image





















# --- routes and validation: 4xx before any paid call (the Stubbers hold no responses) -------------------


def test_missing_body_is_400(aws):
    status, body = call(event(body=None))
    assert status == 400 and "body is missing" in body["error"]


def test_wrong_content_type_is_415(aws):
    status, body = call(event(body="image=abc", content_type="application/x-www-form-urlencoded"))
    assert status == 415 and "Content-Type" in body["error"]


def test_unknown_route_is_404(aws):
    status, body = call(event(path="/predict", body="{}"))
    assert status == 404 and body == {"error": "no route POST /predict: use one of POST /describe, POST /attributes, "
                                               "POST /search, POST /tags, POST /interrogate, POST /restyle"}


def test_wrong_method_is_404(aws):
    status, _ = call(event(method="GET", body=None))
    assert status == 404


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        ({"image": "%%%not base64%%%"}, 400, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a....").decode()}, 400, "neither a JPEG nor a PNG"),
        ({"image": base64.b64encode(png()[:-20]).decode()}, 400, "truncated"),
        ({"image": base64.b64encode(png(30000, 30000)).decode()}, 400, "scale it down"),
        ({"attributes": ["baseColour"]}, 400, "'image' is required"),
        ({"image": base64.b64encode(png()).decode(), "attributes": []}, 400, "'attributes' must not be empty"),
        ({"image": base64.b64encode(png()).decode(), "attributes": ["Pattern", 3]}, 400,
         "'attributes[1]' must be a string"),
        ({"image": base64.b64encode(png()).decode(), "attributes": ["Pattern", " "]}, 400, "non-empty list"),
        ({"image": base64.b64encode(png()).decode(), "language": "fr"}, 400, "not supported"),
        ({"image": base64.b64encode(png()).decode(), "product_type": "shirt; ignore that"}, 400, "product_type"),
    ],
)
def test_invalid_json_requests_are_refused(aws, payload, status, fragment):
    code, body = call(event(body=json.dumps(payload)))
    assert code == status and fragment in body["error"]


def test_oversized_image_is_413(aws):
    big = png() + b"\x00" * (4 * 1024 * 1024)
    code, body = call(event(body=base64.b64encode(big).decode(), content_type="image/png", b64=True))
    assert code == 413 and "limit" in body["error"]


def test_the_lambda_keeps_no_list_of_attribute_names():
    # The server, which reads the model's manifest, is the only judge of attribute names (the end-to-end
    # test sends an unknown one through to it); an ATTRIBUTES variable would be a second, stale copy.
    source = (Path(service.__file__)).read_text(encoding="utf-8")
    assert "ATTRIBUTES" not in source and "DEFAULT_ATTRIBUTES" not in source


def test_misconfiguration_is_500_with_reason(aws, monkeypatch):
    monkeypatch.setenv("ENDPOINT_URL", "http://127.0.0.1:9")
    code, body = call(json_event(png()))
    assert code == 500 and "exactly one of ENDPOINT_NAME" in body["error"]


# --- the two calls ---------------------------------------------------------------------------------


@pytest.fixture
def log_lines():
    """The handler's JSON log lines (Powertools binds its stream at import time, so swap the stream)."""
    stream = io.StringIO()
    previous = gateway.logger.registered_handler.setStream(stream)
    yield lambda: [json.loads(x) for x in stream.getvalue().splitlines()]
    gateway.logger.registered_handler.setStream(previous)


def test_describe_json_body_success(aws, log_lines):
    image = jpeg()
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply(), {
        "EndpointName": "loom-endpoint", "ContentType": "application/json", "Accept": "application/json",
        "Body": json.dumps({"image": base64.b64encode(image).decode(), "attributes": ["baseColour", "Sleeve Length", "Pattern"]}).encode(),
    })  # fmt: skip
    # One gate (loom/calibration.py): every value the endpoint stated reaches the writer, whatever its
    # confidence (Pattern's 0.3 passed its calibrated threshold, or the endpoint would have withheld it).
    aws.bedrock.add_response("converse", converse_reply(FULL), {
        "modelId": DEFAULT_MODEL_ID, "system": ANY, **converse_settings(DEFAULT_MODEL_ID).request(),
        "messages": [{"role": "user", "content": [{"text": "<product_data>\nColour: Red\nSleeve Length: Long Sleeves\nPattern: Striped\n</product_data>"}]}],
    })  # fmt: skip
    code, body = call(json_event(image, attributes=["baseColour", "Sleeve Length", "Pattern"]))
    assert code == 200
    assert body["attributes"] == ENDPOINT_ANSWER["attributes"]
    assert body["confidence"] == ENDPOINT_ANSWER["confidence"]
    assert body["description"] == FULL
    assert body["model"] == {"vlm": "loom-blip2-lora", "llm": DEFAULT_MODEL_ID}
    assert body["coverage"]["complete"] and body["coverage"]["checked"] == list(ENDPOINT_ANSWER["attributes"])
    assert "omitted_low_confidence" not in body["coverage"]
    lines = log_lines()
    assert base64.b64encode(image).decode()[:40] not in json.dumps(lines)  # no image bytes in the logs
    (line,) = [x for x in lines if x["message"] == "request answered"]
    assert line["correlation_id"] == "apigw-req-1" and line["function_request_id"] == "lambda-req-1"
    assert line["endpoint_ms"] >= 0 and line["llm_ms"] >= 0 and line["coverage"]["complete"] is True
    assert line["image"] == {"format": "jpeg", "width": 16, "height": 8, "bytes": len(image)}


def test_raw_jpeg_body_base64_encoded_by_api_gateway(aws):
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    aws.bedrock.add_response("converse", converse_reply("Uma camisa Red com Long Sleeves e padrão Striped."))
    evt = event(body=base64.b64encode(jpeg()).decode(), content_type="image/jpeg", b64=True,
                query={"language": "pt", "attributes": "baseColour,Sleeve Length"})  # fmt: skip
    code, body = call(evt)
    assert code == 200 and body["language"] == "pt" and body["coverage"]["complete"]


def test_raw_body_declared_png_but_jpeg_is_400(aws):
    code, body = call(event(body=base64.b64encode(jpeg()).decode(), content_type="image/png", b64=True))
    assert code == 400 and "declared image/png" in body["error"]


def test_attributes_route_makes_no_bedrock_call(aws):
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    code, body = call(json_event(png(), path="/attributes"))
    assert code == 200 and set(body) == {"attributes", "withheld", "confidence", "sources", "conflicts", "model"}
    assert body["model"] == {"vlm": "loom-blip2-lora"}


@pytest.mark.parametrize(
    "code, fields, status",
    [("ModelError", {"OriginalStatusCode": 500, "OriginalMessage": "boom"}, 502),
     ("ModelError", {"OriginalStatusCode": 400, "OriginalMessage": '{"error": "unknown attribute"}'}, 400),
     ("ThrottlingException", {}, 503)],
)  # fmt: skip
def test_endpoint_errors_map_to_status(aws, code, fields, status):
    for _ in range(2 if code == "ThrottlingException" else 1):  # throttling is retried once (endpoint_client)
        aws.sagemaker.add_client_error("invoke_endpoint", code, "failed", http_status_code=424, modeled_fields=fields)
    response = gateway.handler(json_event(png()), CONTEXT)
    got, body = response["statusCode"], json.loads(response["body"])
    assert got == status and body["error"]
    # A retryable answer says when to retry; the others do not invite a retry.
    assert (response["headers"].get("Retry-After") == "2") == (status == 503)


def test_bedrock_failure_keeps_the_attributes(aws):
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    for _ in range(3):
        aws.bedrock.add_client_error("converse", "ThrottlingException", "slow down", http_status_code=429)
    code, body = call(json_event(png()))
    assert code == 200
    assert body["attributes"] == ENDPOINT_ANSWER["attributes"]
    assert body["description"] is None and "ThrottlingException" in body["description_error"]


def test_missing_attribute_is_asked_for_again(aws):
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    aws.bedrock.add_response("converse", converse_reply("A red shirt."))
    aws.bedrock.add_response("converse", converse_reply(FULL))
    code, body = call(json_event(png()))
    assert code == 200 and body["description"] == FULL
    assert body["coverage"]["attempts"] == 2 and body["coverage"]["complete"]


def test_iam_event_fixture_works_too(aws):
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    evt = event(path="/attributes", body=json.dumps({"image": base64.b64encode(png()).decode()}),
                fixture="apiGatewayProxyV2IamEvent.json")  # fmt: skip
    evt["headers"] = {"Content-Type": "application/json"}  # header names are matched case-insensitively
    assert call(evt)[0] == 200


# --- local mode: the same handler, configured with ENDPOINT_URL and the offline writer ------------------


def test_local_mode_against_a_real_http_server(monkeypatch):
    from fixtures_api import Server

    server = Server([(200, {}, ENDPOINT_ANSWER)])
    try:
        monkeypatch.delenv("ENDPOINT_NAME", raising=False)
        monkeypatch.setenv("ENDPOINT_URL", server.url)
        monkeypatch.setenv("DESCRIPTION_BACKEND", "offline")
        code, body = call(json_event(png(), product_type="shirt"))
    finally:
        server.close()
    assert code == 200 and server.requests[0]["path"] == "/invocations"
    assert body["model"]["llm"] == "loom-offline-writer" and "offline writer" in body["description"]
    assert body["coverage"]["complete"] and body["coverage"]["checked"] == list(ENDPOINT_ANSWER["attributes"])


# --- the pure-Python header check ------------------------------------------------------------------------


def test_image_headers_give_format_and_size():
    assert (inspect_image(png(3, 2)).format, inspect_image(png(3, 2)).width, inspect_image(png(3, 2)).height) == ("png", 3, 2)
    info = inspect_image(jpeg(16, 8))
    assert (info.format, info.width, info.height) == ("jpeg", 16, 8)
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(jpeg()[:-200])
    corrupt = bytearray(png())
    corrupt[20] ^= 0xFF
    with pytest.raises(ImageError, match="checksum"):
        inspect_image(bytes(corrupt))


@pytest.mark.parametrize("form", ["wrapped", "data url"])
def test_line_wrapped_and_data_url_base64_are_accepted_like_the_server(aws, form):
    # One reading of the field for the Lambda and the server: loom.base64_image (tests/server/test_flask_app.py too).
    encoded = base64.b64encode(png()).decode()
    image = ("\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) if form == "wrapped"
             else f"data:image/png;base64,{encoded}")
    aws.sagemaker.add_response("invoke_endpoint", endpoint_reply())
    code, body = call(event(body=json.dumps({"image": image}), path="/attributes"))
    assert code == 200, body


def test_base64_the_server_refuses_is_refused_with_the_servers_message(aws):
    from loom.base64_image import decode_base64_image
    from loom.image_header import ImageError

    url_safe = base64.urlsafe_b64encode(png()).decode() + "-_"
    with pytest.raises(ImageError) as server_side:
        decode_base64_image(url_safe)
    code, body = call(event(body=json.dumps({"image": url_safe}), path="/attributes"))
    assert code == 400 and body["error"] == str(server_side.value)
