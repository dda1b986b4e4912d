"""`POST /search` on the API Lambda, called through the handler with real API Gateway v2 events: the embedded
backend (the CLIP endpoint searches, stubbed with botocore's Stubber), the OpenSearch backend (the endpoint
embeds, a loopback OpenSearch stub ranks; requests SigV4-signed for "es"), every bad input a 4xx before any
paid call, and end to end against the real `serve` with the tiny CLIP in local mode."""

from __future__ import annotations

import base64
import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from api_events import call, event, jpeg, png
from opensearch_stub import CREDENTIALS, Stub, expected_signature, fixture

from inference.api import aws_clients
from inference.api.visual import search as api_search

SEARCH_ANSWER = {"results": [{"id": "10007", "score": 0.91, "name": "Loom Men Green Striped Shirt",
                              "attributes": {"baseColour": "Green", "Pattern": "Striped"}}],
                 "index": {"backend": "embedded", "size": 359}}


def reply(data):
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def search_event(**body):
    return event("/search", body=json.dumps(body))


@pytest.fixture
def endpoint(monkeypatch):
    for key in ("SEARCH_ENDPOINT_URL", "OPENSEARCH_ENDPOINT", "OPENSEARCH_INDEX"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEARCH_ENDPOINT_NAME", "loom-clip")
    monkeypatch.setenv("SEARCH_BACKEND", "embedded")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = aws_clients.new_client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test",
                                    aws_secret_access_key="test")
    stubber = Stubber(client)
    aws_clients.use_client("sagemaker-runtime", client)
    api_search._INDEX_INFO.clear()
    with stubber:
        yield stubber
        stubber.assert_no_pending_responses()  # refused requests made no endpoint call
    aws_clients.use_client("sagemaker-runtime", None)


def expect_endpoint(stubber, request: dict, answer: dict):
    stubber.add_response("invoke_endpoint", reply(answer), {
        "EndpointName": "loom-clip", "ContentType": "application/json", "Accept": "application/json",
        "Body": json.dumps(request).encode()})


def test_embedded_backend_asks_the_endpoint_to_search(endpoint):
    expect_endpoint(endpoint, {"task": "search", "k": 5, "filters": {"baseColour": "Green"}, "text": "green shirt"},
                    SEARCH_ANSWER)
    status, body = call(search_event(text=" green shirt ", k=5, filters={"baseColour": "Green"}))
    assert status == 200 and body == SEARCH_ANSWER


def test_photo_query_is_forwarded_as_base64(endpoint):
    image = base64.b64encode(jpeg()).decode()
    expect_endpoint(endpoint, {"task": "search", "k": 10, "image": image}, SEARCH_ANSWER)
    assert call(search_event(image=image))[0] == 200


def test_endpoint_refusal_keeps_its_status_and_message(endpoint):
    endpoint.add_client_error("invoke_endpoint", "ModelError", "Received client error (400)", 424,
                              response_meta={}, expected_params=None)
    # ModelError without the original status is the model's fault: 502.
    status, body = call(search_event(text="green shirt"))
    assert status == 502 and "error" in body


@pytest.mark.parametrize("body, status, needle", [
    ({"text": ""}, 400, "non-empty"),
    ({"text": "shirt", "k": 0}, 400, "'k'"),
    ({"text": "shirt", "k": 51}, 400, "'k'"),
    ({"text": "shirt", "filters": {"baseColour": ""}}, 400, "filters.baseColour"),
    ({"text": "shirt", "image": "aGk="}, 400, "exactly one"),
    ({}, 400, "exactly one"),
    ({"text": "shirt", "mode": "fuzzy"}, 400, "'mode'"),
    ({"text": "shirt", "mode": "hybrid"}, 400, "OpenSearch"),
    ({"image": base64.b64encode(png()).decode(), "mode": "hybrid"}, 400, "needs a 'text'"),
    ({"image": "***"}, 400, "base64"),
    ({"image": base64.b64encode(b"plain text, not an image").decode()}, 400, "'image'"),
    ({"image": base64.b64encode(b"\xff\xd8" + b"\0" * (4 * 1024 * 1024)).decode()}, 413, "limit"),
    ({"text": "shirt", "colour": "Green"}, 400, "unexpected fields"),
])
def test_bad_requests_are_refused_before_any_call(endpoint, body, status, needle):
    got, answer = call(search_event(**body))
    assert got == status and needle in answer["error"]


def test_malformed_bodies_and_misconfiguration(endpoint, monkeypatch):
    assert call(event("/search", body="{nope"))[0] == 400
    assert call(event("/search", body="[1]"))[0] == 400
    assert call(event("/search", body=None))[0] == 400
    monkeypatch.setenv("SEARCH_BACKEND", "opensearch_domain")
    status, body = call(search_event(text="shirt"))
    assert status == 500 and "OPENSEARCH_ENDPOINT" in body["error"]


class MappedStub(Stub):
    """The OpenSearch stub, also answering the mapping and count lookups of the API."""

    def route(self, r):
        if r["path"].endswith("/_mapping"):
            return 200, {"loom-products": {"mappings": {"properties": {"attributes": {"properties": {
                "baseColour": {"type": "keyword"}, "Pattern": {"type": "keyword"}}}}}}}
        if r["path"].endswith("/_count"):
            return 200, {"count": 359, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        return super().route(r)


@pytest.fixture
def opensearch(endpoint, monkeypatch):
    stub = MappedStub()
    # The Lambda signs with its role's credentials (the default chain: here the environment).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS.secret_key)
    monkeypatch.setenv("SEARCH_BACKEND", "opensearch_domain")
    monkeypatch.setenv("OPENSEARCH_ENDPOINT", stub.url)
    yield stub
    stub.close()


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_opensearch_backend_embeds_on_the_endpoint_and_ranks_in_opensearch(endpoint, opensearch, mode):
    expect_endpoint(endpoint, {"task": "embed", "texts": ["green shirt"]},
                    {"embeddings": [[0.6, 0.8]], "dimension": 2, "normalized": True})
    status, body = call(search_event(text="green shirt", k=2, filters={"baseColour": "Green"}, mode=mode))
    assert status == 200, body
    assert body["index"] == {"backend": "opensearch_domain", "size": 359}
    assert [r["id"] for r in body["results"]] == ["10007", "10042"]
    searched = opensearch.requests[-1]
    assert searched["path"] == "/loom-products/_search"
    assert (searched["query"] == "search_pipeline=loom-hybrid") == (mode == "hybrid")
    query = json.loads(searched["body"])["query"]
    knn = query["knn"] if mode == "vector" else query["hybrid"]["queries"][1]["knn"]
    assert knn["embedding"]["vector"] == [0.6, 0.8]
    assert knn["embedding"]["filter"] == {"bool": {"filter": [{"term": {"attributes.baseColour": "Green"}}]}}
    assert all(expected_signature(r, "us-east-1", "es") for r in opensearch.requests)
    if mode == "vector":
        assert body["results"][0]["score"] == pytest.approx(fixture("search_knn.json")["hits"]["hits"][0]["_score"] - 1)


def test_hybrid_on_serverless_goes_through_the_pipeline_signed_for_aoss(endpoint, opensearch, monkeypatch):
    # The Serverless guide documents hybrid search: a search pipeline with the normalization processor
    # (min_max; arithmetic_mean) and the hybrid query
    # (https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-configure-neural-search.html).
    monkeypatch.setenv("SEARCH_BACKEND", "opensearch_serverless")
    expect_endpoint(endpoint, {"task": "embed", "texts": ["green shirt"]},
                    {"embeddings": [[0.6, 0.8]], "dimension": 2, "normalized": True})
    status, body = call(search_event(text="green shirt", k=2, mode="hybrid"))
    assert status == 200, body
    assert body["index"]["backend"] == "opensearch_serverless"
    searched = opensearch.requests[-1]
    assert searched["query"] == "search_pipeline=loom-hybrid" and "hybrid" in json.loads(searched["body"])["query"]
    assert all(expected_signature(r, "us-east-1", "aoss") for r in opensearch.requests)


def test_opensearch_backend_refuses_unknown_filter_fields(endpoint, opensearch):
    status, body = call(search_event(text="green shirt", filters={"colour": "Green"}))
    assert status == 400 and "unknown filter field 'colour'" in body["error"]


@pytest.mark.slow
def test_local_mode_end_to_end_with_the_tiny_clip(tiny_clip_server, monkeypatch):
    monkeypatch.delenv("SEARCH_ENDPOINT_NAME", raising=False)
    monkeypatch.setenv("SEARCH_ENDPOINT_URL", tiny_clip_server.url)
    monkeypatch.setenv("SEARCH_BACKEND", "embedded")
    status, body = call(search_event(text="green shirt", k=10))
    assert status == 200, body
    assert body["index"]["backend"] == "embedded" and len(body["results"]) == 10
    assert sum(r["attributes"]["baseColour"] == "Green" for r in body["results"]) >= 9
    status, body = call(search_event(text="green shirt", filters={"colour": "x"}))
    assert status == 400 and "unknown filter field" in body["error"]
