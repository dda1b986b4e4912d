"""`POST /tags` and `POST /interrogate` on the API Lambda, called through the handler with real API Gateway v2
events and the SageMaker runtime client under botocore's Stubber (every request and answer checked against
the service model; the request bodies checked exactly): requests checked before any endpoint call, the CLIP
endpoint's refusals passed on with their reason, and the caption made of the attribute endpoint's stated
attributes only when the API has both endpoints."""

from __future__ import annotations

import base64
import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from api_events import call, event, jpeg, png
from endpoint_contract import check_contract

from inference.api import aws_clients
from inference.api.visual import tags as clip_tasks
from inference.api.endpoint_client import request_body
from loom import clip_request

IMAGE = jpeg(32, 32)
IMAGE_B64 = base64.b64encode(IMAGE).decode()
TAGS = {"tags": {"Pattern": {"value": "Striped", "probability": 0.93,
                             "probabilities": {"Striped": 0.93, "Solid": 0.05, "Checked": 0.02}}},
        "withheld": {"Fabric": {"value": "Cotton", "probability": 0.41, "probabilities": {"Cotton": 0.41},
                                "reason": "below_threshold"}}}
PROMPT = {"prompt": "a Green Striped shirt with Short Sleeves, green, striped", "caption":
          "a Green Striped shirt with Short Sleeves", "terms": [{"text": "green", "similarity": 0.31},
                                                                {"text": "striped", "similarity": 0.29}],
          "similarity": 0.33}
# What the attribute endpoint states and withholds: only the stated values may reach the caption.
ATTRIBUTES = {"attributes": {"articleType": "Shirts", "baseColour": "Green", "Pattern": "Striped",
                             "Sleeve Length": "Short Sleeves"},
              "withheld": {"Fit": {"value": "Slim Fit", "confidence": 0.34, "reason": "below_threshold"},
                           "Fabric": {"value": "Linen", "confidence": 0.2, "reason": "below_threshold"}},
              "confidence": {"baseColour": 0.99, "Pattern": 0.97, "Sleeve Length": 0.96, "Fit": 0.34, "Fabric": 0.2},
              "model": {"name": "loom-blip2-lora"}}
CAPTION = "a Green Striped shirt with Short Sleeves"


def reply(data: dict) -> dict:
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def expect(stubber: Stubber, endpoint: str, body: bytes, answer: dict) -> None:
    stubber.add_response("invoke_endpoint", reply(answer), {
        "EndpointName": endpoint, "ContentType": "application/json", "Accept": "application/json", "Body": body})


SCHEMAS = {"tags": ("ClipTagsRequest", "ClipTagsResponse"), "interrogate": ("ClipInterrogateRequest", "ClipInterrogation")}


def expect_clip(stubber: Stubber, request: dict, answer: dict, *, contract: bool = True) -> None:
    """The CLIP call the Lambda must make (the body exactly), and the endpoint's answer; both follow the
    endpoint's contract in loom/openapi.json unless a test breaks it on purpose."""
    check_contract(request, SCHEMAS[request["task"]][0])
    if contract:
        check_contract(answer, SCHEMAS[request["task"]][1])
    expect(stubber, "loom-clip", json.dumps(request).encode(), answer)


def post(path: str, **body) -> tuple[int, dict]:
    return call(event(path, body=json.dumps(body)))


@pytest.fixture
def sagemaker(monkeypatch):
    """The CLIP endpoint only (SEARCH_ENDPOINT_NAME); `attribute_endpoint` adds the attribute endpoint."""
    for key in ("SEARCH_ENDPOINT_URL", "ENDPOINT_URL", "ENDPOINT_NAME", "OPENSEARCH_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEARCH_ENDPOINT_NAME", "loom-clip")
    monkeypatch.setenv("SEARCH_BACKEND", "embedded")
    client = aws_clients.new_client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test",
                                    aws_secret_access_key="test")
    aws_clients.use_client("sagemaker-runtime", client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()  # refused requests made no call, retries made none either
    aws_clients.use_client("sagemaker-runtime", None)


@pytest.fixture
def attribute_endpoint(sagemaker, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "loom-endpoint")
    return sagemaker


# --- POST /tags -------------------------------------------------------------------------------------------


def test_tags_forwards_the_checked_request_and_answers_the_endpoints_tags(sagemaker):
    labels = {"Pattern": ["Striped", "Solid", "Checked"]}
    expect_clip(sagemaker, {"task": "tags", "image": IMAGE_B64, "attributes": ["Pattern", "Fabric"],
                            "labels": labels, "min_probability": 0.6}, TAGS)
    status, body = post("/tags", image=IMAGE_B64, attributes=["Pattern", "Fabric"], labels=labels, min_probability=0.6)
    assert status == 200 and body == TAGS


def test_tags_without_options_asks_for_the_schemas_values(sagemaker):
    # A data: URL is read as the other routes read it, and forwarded as plain base64.
    expect_clip(sagemaker, {"task": "tags", "image": IMAGE_B64}, TAGS)
    assert post("/tags", image=f"data:image/jpeg;base64,{IMAGE_B64}")[0] == 200


def many_labels(count: int) -> dict:
    return {"Pattern": [f"pattern {i}" for i in range(count // 2)],
            "baseColour": [f"colour {i}" for i in range(count - count // 2)]}


@pytest.mark.parametrize("fields, status, fragment", [
    ({"labels": {"Pattern": []}}, 400, "labels.Pattern must be a non-empty list"),
    ({"labels": {}}, 400, "'labels' must be an object"),
    ({"labels": ["Striped"]}, 400, "'labels' must be an object"),
    ({"labels": {"Pattern": ["Striped", ""]}}, 400, "'labels.Pattern[]' must be a non-empty string"),
    ({"labels": {"Pattern": ["x" * 1001]}}, 400, "longer than 1000 characters"),
    ({"labels": {"Pattern": ["Striped", "Striped"]}}, 400, "labels.Pattern lists a value twice"),
    ({"min_probability": 0.5}, 400, "threshold for caller-given 'labels'"),
    ({"labels": {"Pattern": ["Striped"]}, "min_probability": 0}, 400, "'min_probability' must be a number in (0, 1]"),
    # The limit counts every candidate of the request: 201 split over two attributes is refused.
    ({"labels": many_labels(clip_request.MAX_LABELS + 1)}, 400, "at most 200"),
    ({"attributes": []}, 400, "'attributes' must be a non-empty list"),
    ({"attributes": "Pattern"}, 400, "'attributes' must be a non-empty list"),
    ({"attributes": ["Pattern", "Pattern"]}, 400, "names an attribute twice"),
    ({"task": "embed"}, 400, "unexpected fields ['task'] for POST /tags"),
    ({"mode": "fast"}, 400, "unexpected fields ['mode'] for POST /tags"),
    ({"image": None}, 400, "'image' must be a non-empty base64 string"),
    ({"image": "%%%"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"plain text, not an image").decode()}, 400, "'image'"),
    ({"image": base64.b64encode(png()[:-20]).decode()}, 400, "truncated"),
    ({"image": base64.b64encode(b"\xff\xd8" + b"\0" * (4 * 1024 * 1024)).decode()}, 413, "limit"),
])
def test_bad_tags_requests_are_refused_before_any_endpoint_call(sagemaker, fields, status, fragment):
    got, body = post("/tags", **{"image": IMAGE_B64, **fields})
    assert got == status and fragment in body["error"], body


def test_exactly_200_labels_pass(sagemaker):
    labels = many_labels(clip_request.MAX_LABELS)
    expect_clip(sagemaker, {"task": "tags", "image": IMAGE_B64, "labels": labels}, TAGS)
    assert post("/tags", image=IMAGE_B64, labels=labels)[0] == 200


def test_malformed_bodies_are_refused(sagemaker):
    assert call(event("/tags", body=None))[0] == 400
    assert call(event("/tags", body="{nope"))[0] == 400
    status, body = call(event("/interrogate", body="[1]"))
    assert status == 400 and "JSON object" in body["error"]


def model_error(stubber: Stubber, status: int, message: str) -> None:
    """The container's own non-200 answer, as SageMaker relays it (ModelError with the original status)."""
    stubber.add_client_error("invoke_endpoint", "ModelError", "Received client error", http_status_code=424,
                             modeled_fields={"OriginalStatusCode": status, "OriginalMessage": json.dumps({"error": message})})


def test_the_clip_endpoints_refusal_reaches_the_client_with_its_reason(sagemaker):
    model_error(sagemaker, 400, "unknown attribute 'Colour'; known: baseColour, Pattern, Sleeve Length")
    status, body = post("/tags", image=IMAGE_B64, labels={"Colour": ["Green"]})
    assert status == 400 and "unknown attribute 'Colour'" in body["error"]
    model_error(sagemaker, 400, "'mode' must be one of ['fast', 'classic'] for this artifact")
    status, body = post("/interrogate", image=IMAGE_B64, mode="best")
    assert status == 400 and "for this artifact" in body["error"]


def test_an_answer_that_breaks_the_contract_is_a_502(sagemaker):
    expect_clip(sagemaker, {"task": "tags", "image": IMAGE_B64}, {"results": []}, contract=False)
    status, body = post("/tags", image=IMAGE_B64)
    assert status == 502 and "breaks the contract" in body["error"]
    expect_clip(sagemaker, {"task": "interrogate", "image": IMAGE_B64}, {"tags": {}}, contract=False)
    assert post("/interrogate", image=IMAGE_B64)[0] == 502


@pytest.mark.parametrize("path", ["/tags", "/interrogate", "/search"])
def test_without_a_clip_endpoint_the_clip_routes_are_not_enabled(monkeypatch, path):
    # The same answer as POST /restyle without a model: 404, saying what the route needs.
    for key in ("SEARCH_ENDPOINT_NAME", "SEARCH_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_URL", "http://127.0.0.1:9")  # the attribute endpoint alone is not enough
    status, body = call(event(path, body=json.dumps({"image": IMAGE_B64})))
    assert status == 404 and f"POST {path} is not enabled" in body["error"] and "SEARCH_ENDPOINT_NAME" in body["error"]


def test_contradictory_clip_settings_are_a_server_error(sagemaker, monkeypatch):
    monkeypatch.setenv("SEARCH_ENDPOINT_URL", "http://127.0.0.1:9")
    status, body = post("/tags", image=IMAGE_B64)
    assert status == 500 and "exactly one" in body["error"]


# --- POST /interrogate --------------------------------------------------------------------------------------


def test_clip_only_interrogation_sends_no_caption(sagemaker):
    expect_clip(sagemaker, {"task": "interrogate", "image": IMAGE_B64, "mode": "best", "max_terms": 4},
                {**PROMPT, "caption": None})
    status, body = post("/interrogate", image=IMAGE_B64, mode="best", max_terms=4)
    assert status == 200 and body == {**PROMPT, "caption": None}


def test_with_both_endpoints_the_caption_is_made_of_the_stated_attributes_only(attribute_endpoint):
    expect(attribute_endpoint, "loom-endpoint", request_body(IMAGE, None), ATTRIBUTES)
    expect_clip(attribute_endpoint, {"task": "interrogate", "image": IMAGE_B64, "mode": "classic",
                                     "caption": CAPTION}, PROMPT)
    status, body = post("/interrogate", image=IMAGE_B64, mode="classic")
    assert status == 200 and body == PROMPT
    # The Stubber matched the caption exactly: no withheld value (Slim Fit, Linen), no product-type word.
    assert "Slim" not in CAPTION and "Linen" not in CAPTION and "Shirts" not in CAPTION


def test_a_failed_attribute_call_is_reported_and_the_photo_still_interrogated(attribute_endpoint):
    model_error(attribute_endpoint, 500, "CUDA out of memory")
    expect_clip(attribute_endpoint, {"task": "interrogate", "image": IMAGE_B64}, {**PROMPT, "caption": None})
    status, body = post("/interrogate", image=IMAGE_B64)
    assert status == 200 and body["prompt"] == PROMPT["prompt"] and body["caption"] is None
    assert body["caption_error"].startswith("the attribute endpoint could not describe the photo (502:")


def test_the_caption_call_is_a_single_attempt_within_its_share_of_the_budget(attribute_endpoint):
    # Throttling is retried on the attribute routes; the optional caption call is tried once (a second
    # attempt would meet the CLIP request queued next in the Stubber and fail the test).
    attribute_endpoint.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400,
                                        expected_params={"EndpointName": "loom-endpoint", "ContentType":
                                                         "application/json", "Accept": "application/json",
                                                         "Body": request_body(IMAGE, None)})
    expect_clip(attribute_endpoint, {"task": "interrogate", "image": IMAGE_B64}, PROMPT)
    status, body = post("/interrogate", image=IMAGE_B64)
    assert status == 200 and "ThrottlingException" in body["caption_error"]
    # Worst cases (aws_clients): caption connect + read, then the CLIP call's endpoint budget.
    caption_s = aws_clients.ENDPOINT_CONNECT_TIMEOUT_S + clip_tasks.CAPTION_READ_TIMEOUT_S
    assert caption_s + aws_clients.ENDPOINT_BUDGET_S <= aws_clients.REQUEST_BUDGET_S
    config = aws_clients.new_client("sagemaker-runtime", clip_tasks.CAPTION_READ_TIMEOUT_S,
                                    region_name="us-east-1").meta.config
    assert config.read_timeout == clip_tasks.CAPTION_READ_TIMEOUT_S and config.retries["total_max_attempts"] == 1


def test_nothing_stated_means_no_caption_and_says_why(attribute_endpoint):
    expect(attribute_endpoint, "loom-endpoint", request_body(IMAGE, None),
           {**ATTRIBUTES, "attributes": {}, "confidence": {}})
    expect_clip(attribute_endpoint, {"task": "interrogate", "image": IMAGE_B64}, {**PROMPT, "caption": None})
    status, body = post("/interrogate", image=IMAGE_B64)
    assert status == 200 and "stated no attribute" in body["caption_error"]


@pytest.mark.parametrize("fields, fragment", [
    ({"mode": "slow"}, "'mode' must be one of fast, classic, best"),
    ({"mode": 1}, "'mode' must be one of"),
    ({"max_terms": 0}, "'max_terms' must be an integer from 1 to 32"),
    ({"max_terms": 33}, "'max_terms' must be an integer from 1 to 32"),
    ({"max_terms": True}, "'max_terms'"),
    ({"max_terms": "5"}, "'max_terms'"),
    ({"caption": "a shirt"}, "unexpected fields ['caption'] for POST /interrogate"),
    ({"labels": {"Pattern": ["Striped"]}}, "unexpected fields ['labels']"),
    ({"image": base64.b64encode(b"GIF89a....").decode()}, "neither a JPEG nor a PNG"),
])
def test_bad_interrogate_requests_are_refused_before_any_endpoint_call(attribute_endpoint, fields, fragment):
    status, body = post("/interrogate", **{"image": IMAGE_B64, **fields})
    assert status == 400 and fragment in body["error"], body


# --- one set of rules: the Lambda's checks are the CLIP endpoint's -------------------------------------------

def test_the_lambda_and_the_clip_endpoint_parse_with_the_same_rules():
    """One copy of the tags and interrogate rules: the endpoint's CLIP service (runtime/clip_service.py) parses
    requests with loom/clip_request.py's functions, which the Lambda checks with (their cases:
    tests/runtime/test_tagging.py and the Lambda tests above)."""
    from runtime import clip_service

    assert clip_service.parse_tags is clip_request.parse_tags
    assert clip_service.parse_interrogate is clip_request.parse_interrogate
