"""The CLIP routes refuse, with a 413 before any endpoint call, a request the CLIP endpoint's type cannot take.

The rules (cited beside each test):
- real-time endpoints: InvokeEndpoint's `Body` is at most 6,291,456 bytes ("6 MB"; SageMaker API reference,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html);
- Serverless Inference: "The maximum request and response payload size for serverless invocations is 4 MB"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-invoke.html); Loom reads it as
  4,000,000 bytes, the stricter of 10^6 and 2^20.
The body is sized exactly as the endpoint client sends it (search.endpoint_body), so the boundary is tested
to the byte: a body of `limit` bytes goes out, `limit + 1` is refused.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from api_events import call, event
from inference.api import aws_clients
from inference.api.visual import search as api_search
from loom.errors import StatusError

def post_event(path: str, body: dict) -> dict:
    return event(path, body=json.dumps(body))


def noise_jpeg(side: int, seed: int = 0) -> bytes:
    """A baseline JPEG of random pixels (large for its size in pixels: noise does not compress)."""
    import numpy as np
    from PIL import Image  # tests only: the Lambda never imports Pillow

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


SEARCH_ANSWER = {"results": [], "index": {"backend": "embedded", "size": 0}}
TAGS_ANSWER = {"tags": {}, "withheld": {}}
INTERROGATE_ANSWER = {"prompt": "a shirt", "caption": None, "terms": [], "similarity": 0.3}


def test_the_limits_are_the_documented_ones():
    assert api_search.REALTIME_MAX_REQUEST_BYTES == 6_291_456  # InvokeEndpoint Body: max length 6291456
    assert api_search.SERVERLESS_MAX_REQUEST_BYTES == 4_000_000  # "4 MB", read as the stricter 10^6 bytes
    assert api_search.max_request_bytes({}) == api_search.REALTIME_MAX_REQUEST_BYTES  # unset: real-time
    assert api_search.max_request_bytes({"SEARCH_MAX_REQUEST_BYTES": " 4000000 "}) == 4_000_000


@pytest.mark.parametrize("raw", ["4 MB", "-1", "4e6", "12", "9" * 5000])
def test_a_bad_limit_is_a_configuration_error(raw):
    with pytest.raises(StatusError) as error:
        api_search.max_request_bytes({"SEARCH_MAX_REQUEST_BYTES": raw})
    assert error.value.status == 500 and "SEARCH_MAX_REQUEST_BYTES" in error.value.message
    assert len(error.value.message) < 300  # the bad value is not echoed in full


def test_the_body_is_sized_as_sent():
    # What the Stubber sees in the route tests below (and boto3 sends) is exactly endpoint_body's bytes;
    # json.dumps' default ensure_ascii makes a non-ASCII caption 6 bytes per character, not 2 or 3.
    task = {"task": "interrogate", "image": "QUJD", "caption": "a blå shirt"}
    assert api_search.endpoint_body(task) == json.dumps(task).encode()
    assert b"\\u00e5" in api_search.endpoint_body(task)


@pytest.mark.parametrize("limit", [api_search.SERVERLESS_MAX_REQUEST_BYTES, api_search.REALTIME_MAX_REQUEST_BYTES,
                                   4 * 1024 * 1024, 10_001])
def test_one_byte_over_the_limit_is_refused_and_the_limit_itself_passes(limit):
    task = {"task": "search", "k": 10, "image": ""}
    overhead = len(api_search.endpoint_body(task))
    task["image"] = "A" * (limit - overhead)
    body = api_search.endpoint_body(task)
    assert len(body) == limit
    api_search.check_request_size(body, task, limit)  # exactly the limit: sent
    task["image"] += "A"
    body = api_search.endpoint_body(task)
    with pytest.raises(StatusError) as error:
        api_search.check_request_size(body, task, limit)
    assert error.value.status == 413
    assert f"would be {limit + 1} bytes" in error.value.message and f"at most {limit} bytes" in error.value.message


@pytest.mark.parametrize("limit", [4_000_000, 6_291_456, 4_194_304, 10_000, 10_001, 10_002, 10_003])
def test_the_largest_photo_named_in_the_413_fits_and_one_byte_more_does_not(limit):
    other = {"task": "tags", "attributes": ["Pattern"], "min_probability": 0.4}
    overhead = len(api_search.endpoint_body({**other, "image": ""}))
    largest = api_search.max_image_bytes(overhead + 8, 8, limit)  # any body: only its non-image bytes count
    fits = api_search.endpoint_body({**other, "image": base64.b64encode(b"\0" * largest).decode()})
    over = api_search.endpoint_body({**other, "image": base64.b64encode(b"\0" * (largest + 1)).decode()})
    assert len(fits) <= limit < len(over)


def test_the_413_names_the_endpoint_type_and_the_photo_that_fits():
    task = {"task": "search", "k": 10, "image": base64.b64encode(b"\0" * 3_000_000).decode()}
    body = api_search.endpoint_body(task)
    with pytest.raises(StatusError) as error:
        api_search.check_request_size(body, task, api_search.SERVERLESS_MAX_REQUEST_BYTES)
    message = error.value.message
    largest = api_search.max_image_bytes(len(body), len(task["image"]), api_search.SERVERLESS_MAX_REQUEST_BYTES)
    assert "serverless endpoint" in message and "4000000 bytes" in message
    assert f"photo of at most {largest} bytes" in message and 2_999_000 < largest < 3_000_000


# --- through the Lambda handler, with the CLIP endpoint stubbed (botocore Stubber) -----------------------


@pytest.fixture
def clip_endpoint(monkeypatch):
    for key in ("SEARCH_ENDPOINT_URL", "ENDPOINT_URL", "ENDPOINT_NAME", "OPENSEARCH_ENDPOINT",
                "SEARCH_MAX_REQUEST_BYTES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEARCH_ENDPOINT_NAME", "loom-clip")
    monkeypatch.setenv("SEARCH_BACKEND", "embedded")
    client = aws_clients.new_client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test",
                                    aws_secret_access_key="test")
    aws_clients.use_client("sagemaker-runtime", client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()  # a refused request made no call
    aws_clients.use_client("sagemaker-runtime", None)


def expect(stubber: Stubber, request: dict, answer: dict) -> None:
    raw = json.dumps(answer).encode()
    stubber.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(raw), len(raw)),
                                             "ContentType": "application/json"},
                         {"EndpointName": "loom-clip", "ContentType": "application/json", "Accept": "application/json",
                          "Body": json.dumps(request).encode()})


@pytest.fixture(scope="module")
def three_mb_photo() -> bytes:
    photo = noise_jpeg(1650)
    assert 3_000_000 < len(photo) < 4 * 1024 * 1024  # under the upload limit, over what serverless can take
    return photo


# (route, the client's other fields, the endpoint request as the Lambda builds it with IMAGE in its place, answer)
ROUTES = [("/search", {}, {"task": "search", "k": 10, "image": "IMAGE"}, SEARCH_ANSWER),
          ("/tags", {}, {"task": "tags", "image": "IMAGE"}, TAGS_ANSWER),
          ("/interrogate", {"mode": "fast"}, {"task": "interrogate", "image": "IMAGE", "mode": "fast"},
           INTERROGATE_ANSWER)]


@pytest.mark.parametrize("path, fields, task, answer", ROUTES, ids=[r[0] for r in ROUTES])
def test_a_3_mb_photo_is_a_413_on_a_serverless_endpoint_and_passes_on_a_real_time_one(
        clip_endpoint, monkeypatch, three_mb_photo, path, fields, task, answer):
    image = base64.b64encode(three_mb_photo).decode()
    # Real-time (the default when SEARCH_MAX_REQUEST_BYTES is unset): 4.3 MB of JSON fits 6,291,456 bytes.
    expect(clip_endpoint, {k: image if v == "IMAGE" else v for k, v in task.items()}, answer)
    assert call(post_event(path, {"image": image, **fields}))[0] == 200
    # Serverless: refused before any call, saying the limit, the endpoint type and the photo size that fits.
    monkeypatch.setenv("SEARCH_MAX_REQUEST_BYTES", "4000000")
    status, body = call(post_event(path, {"image": image, **fields}))
    assert status == 413, body
    assert "4000000 bytes" in body["error"] and "serverless endpoint" in body["error"]
    assert "photo of at most 29" in body["error"]  # about 3.0 MB (2,999,9xx bytes) fits beside the JSON fields


def test_the_interrogate_limit_is_checked_before_the_paid_caption_call(clip_endpoint, monkeypatch, three_mb_photo):
    # With an attribute endpoint as well, /interrogate first asks it for a caption: a photo the CLIP endpoint
    # cannot take must not cost that call (the Stubber holds no response: any call would fail the test).
    monkeypatch.setenv("ENDPOINT_NAME", "loom-endpoint")
    monkeypatch.setenv("SEARCH_MAX_REQUEST_BYTES", "4000000")
    status, body = call(post_event("/interrogate", {"image": base64.b64encode(three_mb_photo).decode()}))
    assert status == 413 and "serverless endpoint" in body["error"]


def test_a_text_search_over_a_small_limit_is_refused_without_a_photo_hint(clip_endpoint, monkeypatch):
    # 750 characters (under the 1,000-character text limit) become 1,500 bytes: json.dumps writes "ö" as \u00f6.
    monkeypatch.setenv("SEARCH_MAX_REQUEST_BYTES", "1024")
    status, body = call(post_event("/search", {"text": "grön " * 150}))
    assert status == 413 and "at most 1024 bytes" in body["error"] and "photo" not in body["error"]
