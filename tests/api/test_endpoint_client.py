"""The Lambda's endpoint clients: the local HTTP client against a real server on 127.0.0.1, the SageMaker
client through botocore's Stubber (request validated against the service model) and, for the retry
configuration, through a real socket (Stubber bypasses botocore's retry machinery)."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from stubbed_aws import stubbed_client
from botocore.response import StreamingBody


from fixtures_api import Server

from inference.api import aws_clients
from inference.api.endpoint_client import EndpointError, HttpEndpoint, SageMakerEndpoint, request_body

IMAGE = b"\xff\xd8 not decoded by the client \xff\xd9"
CONTRACT_ANSWER = {
    "attributes": {"Sleeve Length": "Long Sleeves", "baseColour": "Red"},
    "confidence": {"Sleeve Length": 0.97, "baseColour": 0.91},
    "raw": {},
    "unknown_values": [],
    "model": {"name": "loom-tiny", "base_model": "Salesforce/blip2-flan-t5-xl"},
    "timing_ms": {"total": 41.2},
}




@pytest.fixture
def server_factory():
    servers = []

    def make(replies, **kwargs):
        servers.append(Server(replies, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# --- local mode: the contract over HTTP ------------------------------------------------------------


def test_http_client_speaks_the_contract(server_factory):
    server = server_factory([(200, {}, CONTRACT_ANSWER)])
    prediction = HttpEndpoint(server.url + "/").predict(IMAGE, ["Sleeve Length", "baseColour"])
    assert prediction.attributes == {"Sleeve Length": "Long Sleeves", "baseColour": "Red"}
    assert prediction.confidence == {"Sleeve Length": 0.97, "baseColour": 0.91}
    assert prediction.model["name"] == "loom-tiny"
    (sent,) = server.requests
    assert sent["path"] == "/invocations"
    assert sent["headers"]["Content-Type"] == "application/json"
    body = json.loads(sent["body"])
    assert base64.b64decode(body["image"]) == IMAGE
    assert body["attributes"] == ["Sleeve Length", "baseColour"]


def test_http_client_omits_attributes_when_none_are_asked(server_factory):
    server = server_factory([(200, {}, CONTRACT_ANSWER)])
    HttpEndpoint(server.url).predict(IMAGE, None)
    assert set(json.loads(server.requests[0]["body"])) == {"image"}


@pytest.mark.parametrize(
    "status, expected, fragment",
    [(400, 400, "unknown attribute 'Foo'"), (413, 413, "too large"), (503, 503, "not ready"), (500, 502, "HTTP 500")],
)
def test_http_client_maps_server_errors(server_factory, status, expected, fragment):
    server = server_factory([(status, {}, {"error": "unknown attribute 'Foo'" if status == 400 else "boom"})])
    with pytest.raises(EndpointError) as info:
        HttpEndpoint(server.url).predict(IMAGE, ["Foo"])
    assert info.value.status == expected
    assert fragment in info.value.message


def test_http_client_rejects_a_body_that_breaks_the_contract(server_factory):
    server = server_factory([(200, {}, {"answer": "Colour: Red"})])
    with pytest.raises(EndpointError) as info:
        HttpEndpoint(server.url).predict(IMAGE)
    assert info.value.status == 502


def test_http_client_unreachable_server_is_503(server_factory):
    server = server_factory([(200, {}, CONTRACT_ANSWER)])
    url = server.url
    server.close()
    with pytest.raises(EndpointError) as info:
        HttpEndpoint(url).predict(IMAGE)
    assert info.value.status == 503 and "cannot reach" in info.value.message


def test_http_client_times_out_with_504(server_factory):
    server = server_factory([(200, {}, CONTRACT_ANSWER)], delay_s=1.0)
    with pytest.raises(EndpointError) as info:
        HttpEndpoint(server.url, timeout_s=0.2).predict(IMAGE)
    assert info.value.status == 504


# --- SageMaker: Stubber validates each request against the sagemaker-runtime model ---------------------


@pytest.fixture
def runtime():
    with stubbed_client("sagemaker-runtime") as pair:
        yield pair


def _body(data: dict) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_sagemaker_success_sends_the_contract_request(runtime):
    client, stub = runtime
    expected = {
        "EndpointName": "loom-endpoint",
        "ContentType": "application/json",
        "Accept": "application/json",
        "Body": request_body(IMAGE, ["baseColour"]),
    }
    stub.add_response("invoke_endpoint", {"Body": _body(CONTRACT_ANSWER), "ContentType": "application/json"}, expected)
    prediction = SageMakerEndpoint("loom-endpoint", client).predict(IMAGE, ["baseColour"])
    assert prediction.attributes["baseColour"] == "Red"


@pytest.mark.parametrize(
    "code, extra, status",
    [
        ("ModelError", {"OriginalStatusCode": 400, "OriginalMessage": '{"error": "unknown attribute \'Foo\'"}'}, 400),
        ("ModelError", {"OriginalStatusCode": 500, "OriginalMessage": "Traceback ..."}, 502),
        ("ModelError", {}, 502),
        # The container's own 503 (busy: MAX_PENDING_REQUESTS reached) and 504 (REQUEST_TIMEOUT_S): not retried
        # here, a retryable 503 / a 504 for the API's client.
        ("ModelError", {"OriginalStatusCode": 503, "OriginalMessage": '{"error": "the model is busy"}'}, 503),
        ("ModelError", {"OriginalStatusCode": 504, "OriginalMessage": '{"error": "REQUEST_TIMEOUT_S"}'}, 504),
        ("ThrottlingException", {}, 503),
        ("ServiceUnavailable", {}, 503),
        ("ValidationError", {}, 502),
    ],
)
def test_sagemaker_errors_map_to_statuses(runtime, code, extra, status):
    client, stub = runtime
    # Throttling never reached the model: it is retried once (so stubbed twice); nothing else is retried.
    for _ in range(2 if code in ("ThrottlingException", "ServiceUnavailable") else 1):
        stub.add_client_error("invoke_endpoint", code, "it failed",
                              http_status_code=424 if code == "ModelError" else 400,
                              response_meta=None, modeled_fields=extra)  # fmt: skip
    with pytest.raises(EndpointError) as info:
        SageMakerEndpoint("loom-endpoint", client, sleep=lambda s: None).predict(IMAGE)
    assert info.value.status == status
    if extra.get("OriginalStatusCode") == 400:
        assert "unknown attribute 'Foo'" in info.value.message


def test_sagemaker_client_configuration_budget():
    # The arithmetic of aws_clients' docstring: botocore retries nothing; our one retry of a connection
    # failure, then a whole attempt, still leave one Bedrock attempt inside the 27 s budget (API Gateway's
    # hard 30 s integration limit).
    config = aws_clients.new_client("sagemaker-runtime", region_name="us-east-1").meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert (config.connect_timeout, config.read_timeout) == (1.0, 13.0)
    worst = (config.connect_timeout + aws_clients.ENDPOINT_RETRY_BACKOFF_S  # a failed connection, the back-off
             + config.connect_timeout + config.read_timeout)  # then a whole attempt
    assert worst <= aws_clients.ENDPOINT_BUDGET_S
    bedrock = aws_clients.new_client("bedrock-runtime", region_name="us-east-1").meta.config
    assert bedrock.retries == {"mode": "standard", "total_max_attempts": 1}  # describe.py retries, by deadline
    assert worst + aws_clients.BEDROCK_ATTEMPT_S <= aws_clients.REQUEST_BUDGET_S < 29


class ScriptedClient:
    """invoke_endpoint raises or answers from a script; counts the calls."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def invoke_endpoint(self, **kwargs):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return {"Body": _body(outcome)}


def test_sagemaker_connection_failure_is_retried_once():
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    client = ScriptedClient(EndpointConnectionError(endpoint_url="https://runtime"), CONTRACT_ANSWER)
    endpoint = SageMakerEndpoint("loom-endpoint", client, sleep=lambda s: None)
    assert endpoint.predict(IMAGE).attributes["baseColour"] == "Red" and client.calls == 2
    client = ScriptedClient(*[ConnectTimeoutError(endpoint_url="https://runtime")] * 3)
    with pytest.raises(EndpointError) as info:
        SageMakerEndpoint("loom-endpoint", client, sleep=lambda s: None).predict(IMAGE)
    assert info.value.status == 503 and client.calls == aws_clients.ENDPOINT_MAX_ATTEMPTS


def test_sagemaker_retry_only_when_a_whole_attempt_still_fits():
    from botocore.exceptions import EndpointConnectionError

    now = [0.0]
    client = ScriptedClient(EndpointConnectionError(endpoint_url="https://runtime"), CONTRACT_ANSWER)
    original = client.invoke_endpoint

    def slow_failure(**kwargs):
        now[0] += 3.0  # the failed connection took 3 s: 3 + 0.5 + 1 + 13 > 16
        return original(**kwargs)

    client.invoke_endpoint = slow_failure
    with pytest.raises(EndpointError) as info:
        SageMakerEndpoint("loom-endpoint", client, clock=lambda: now[0], sleep=lambda s: None).predict(IMAGE)
    assert info.value.status == 503 and client.calls == 1


def test_sagemaker_read_timeout_is_not_retried(server_factory, monkeypatch):
    # The container keeps working on a request whose reader gave up: a retry would double the GPU work.
    monkeypatch.setattr(aws_clients, "ENDPOINT_READ_TIMEOUT_S", 0.3)
    server = server_factory([(200, {}, CONTRACT_ANSWER)], delay_s=1.0)
    with pytest.raises(EndpointError) as info:
        SageMakerEndpoint("loom-endpoint", _wire_client(server.url)).predict(IMAGE)
    assert info.value.status == 504
    time.sleep(0.8)
    assert len(server.requests) == 1


# --- botocore's standard retries, over a real socket --------------------------------------------------


def _wire_client(url):
    return aws_clients.new_client("sagemaker-runtime", region_name="us-east-1", endpoint_url=url,
                                  aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip


THROTTLED = (400, {"x-amzn-ErrorType": "ThrottlingException"}, {"message": "Rate exceeded"})


def test_sagemaker_throttling_then_success_is_retried(server_factory):
    server = server_factory([THROTTLED, (200, {}, CONTRACT_ANSWER)])
    prediction = SageMakerEndpoint("loom-endpoint", _wire_client(server.url)).predict(IMAGE, ["baseColour"])
    assert prediction.attributes["baseColour"] == "Red"
    assert [r["path"] for r in server.requests] == ["/endpoints/loom-endpoint/invocations"] * 2


def test_sagemaker_persistent_throttling_gives_up_after_max_attempts(server_factory):
    server = server_factory([THROTTLED])
    with pytest.raises(EndpointError) as info:
        SageMakerEndpoint("loom-endpoint", _wire_client(server.url)).predict(IMAGE)
    assert info.value.status == 503
    assert len(server.requests) == aws_clients.ENDPOINT_MAX_ATTEMPTS
