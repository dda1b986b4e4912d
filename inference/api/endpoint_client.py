"""Ask the inference server for a product's attributes: on SageMaker, or over plain HTTP in local mode.

Both clients speak the contract in docs/endpoint-contract.md (POST /invocations, JSON
`{"image": <base64>, "attributes": [...]}`) and share one interface: `predict(image, attributes)`
returns an `AttributePrediction` or raises `EndpointError` carrying the HTTP status the API should answer.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from inference.api import aws_clients, telemetry
from loom.errors import StatusError
from loom.media_types import JSON_TYPE

CONTENT_TYPE = JSON_TYPE
# InvokeEndpoint's Body is at most 6,291,456 bytes (sagemaker-runtime API reference, InvokeEndpoint, "Body:
# Length Constraints: Maximum length of 6291456"). The body is measured as it is sent: json.dumps escapes every
# non-ASCII character (ensure_ascii), so a CJK character costs 6 bytes, not 3. The HTTP transport keeps the
# same limit: one contract, one size.
MAX_ENDPOINT_BODY_BYTES = 6_291_456


def check_body_size(body: bytes) -> None:
    """413 for a body the endpoint could never receive, before it is sent."""
    if len(body) > MAX_ENDPOINT_BODY_BYTES:
        raise EndpointError(413, f"the request for the model is {len(body)} bytes as sent; the endpoint takes at most "
                                 f"{MAX_ENDPOINT_BODY_BYTES} bytes: send a smaller image or fewer known_attributes")


class EndpointError(StatusError):
    """The endpoint could not answer; `status` is what the API returns (400, 413, 502, 503, 504)."""


@dataclass
class AttributePrediction:
    """The endpoint's answer for one image (see the contract for each field).

    `attributes` holds only the stated values (the model's above threshold and the merchant's); servers
    older than abstention send no `withheld`, `sources` or `conflicts`, which then stay empty.
    """

    attributes: dict[str, str]
    confidence: dict[str, float]
    raw: dict[str, str] = field(default_factory=dict)
    unknown_values: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    withheld: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    product_type: str | None = None


class AttributeEndpoint(Protocol):
    name: str

    def predict(self, image: bytes, attributes: Sequence[str] | None = None,
                facts: dict[str, Any] | None = None) -> AttributePrediction: ...


def request_body(image: bytes, attributes: Sequence[str] | None, facts: dict[str, Any] | None = None) -> bytes:
    """The contract's attribute request: `{"image": <base64>, "attributes": [...]}` (attributes optional),
    plus the product's facts: `product_type`, `known_attributes`, `min_precision` (each optional)."""
    body: dict[str, Any] = {"image": base64.b64encode(image).decode("ascii")}
    if attributes:
        body["attributes"] = list(attributes)
    body.update({k: v for k, v in (facts or {}).items() if v not in (None, {})})
    return json.dumps(body).encode("utf-8")


def parse_prediction(payload: bytes | str) -> AttributePrediction:
    """Read a 200 response body; a body that breaks the contract is a 502 (the server is at fault)."""
    try:
        data = json.loads(payload)
        attributes = {str(k): str(v) for k, v in data["attributes"].items()}
        confidence = {str(k): float(v) for k, v in data.get("confidence", {}).items()}
        raw = {str(k): str(v) for k, v in (data.get("raw") or {}).items()}
        unknown = [str(v) for v in (data.get("unknown_values") or [])]
        model = dict(data.get("model") or {})
        withheld = {str(k): dict(v) for k, v in (data.get("withheld") or {}).items()}
        sources = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
        conflicts = [dict(c) for c in (data.get("conflicts") or [])]
        product_type = data.get("product_type")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EndpointError(502, f"the endpoint answered with a body that breaks the contract: {exc!r}") from exc
    return AttributePrediction(attributes, confidence, raw, unknown, model, withheld, sources, conflicts,
                               None if product_type is None else str(product_type))


def error_for_status(status: int, body: bytes | str | None, where: str) -> EndpointError:
    """Map a non-200 answer of the inference server to the status the API returns."""
    message = _error_message(body) or f"HTTP {status}"
    if status == 400:
        return EndpointError(400, f"the model rejected the request: {message}")
    if status == 413:
        return EndpointError(413, f"the image is too large for the model server: {message}")
    if status == 503:  # loading, or busy (MAX_PENDING_REQUESTS reached): retryable for the API's client
        return EndpointError(503, f"the model at {where} is busy or not ready yet, try again shortly: {message}")
    if status == 504:
        return EndpointError(504, f"the model at {where} did not answer in time, try again later: {message}")
    return EndpointError(502, f"the model at {where} failed (HTTP {status}): {message}")


def _error_message(body: bytes | str | None) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text.strip()[:300]


THROTTLING_CODES = ("ThrottlingException", "ServiceUnavailable")  # refused before the model saw the request


class SageMakerEndpoint:
    """A SageMaker real-time endpoint, through sagemaker-runtime InvokeEndpoint.

    Retried (once, within `aws_clients.ENDPOINT_BUDGET_S`): connection failures and throttling, which
    never reached the model. Never retried: a read timeout (the container is still working on it) and
    any answer of the container itself (its 503 says it is busy: the API's client retries later).
    """

    def __init__(self, endpoint_name: str, client: Any | None = None, *, clock=time.monotonic, sleep=time.sleep,
                 max_attempts: int = aws_clients.ENDPOINT_MAX_ATTEMPTS):
        self.name = endpoint_name
        self._client = client
        self.max_attempts = max_attempts
        self._clock = clock
        self._sleep = sleep

    def predict(self, image: bytes, attributes: Sequence[str] | None = None,
                facts: dict[str, Any] | None = None) -> AttributePrediction:
        return parse_prediction(self.invoke(request_body(image, attributes, facts)))

    def invoke(self, body: bytes) -> bytes:
        """POST a JSON body to the endpoint under the retry rules above; the answer's bytes."""
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        check_body_size(body)
        client = self._client or aws_clients.client("sagemaker-runtime")
        where = f"endpoint {self.name!r}"
        started = self._clock()
        for attempt in range(1, self.max_attempts + 1):
            try:
                with telemetry.subsegment("sagemaker InvokeEndpoint", service="sagemaker-runtime",
                                         operation="InvokeEndpoint", endpoint=self.name, attempt=attempt):
                    response = client.invoke_endpoint(EndpointName=self.name, ContentType=CONTENT_TYPE,
                                                      Accept=CONTENT_TYPE, Body=body)
                    return response["Body"].read()
            except ClientError as exc:
                throttled = exc.response.get("Error", {}).get("Code") in THROTTLING_CODES
                if throttled and self._may_retry(attempt, started):
                    self._sleep(aws_clients.ENDPOINT_RETRY_BACKOFF_S)
                    continue
                raise _client_error(exc, where) from exc
            except ReadTimeoutError as exc:
                read_s = getattr(getattr(client, "meta", None), "config", None)
                read_s = getattr(read_s, "read_timeout", None) or aws_clients.ENDPOINT_READ_TIMEOUT_S
                raise EndpointError(504, f"the {where} did not answer within {read_s:g} s, try again later") from exc
            except BotoConnectionError as exc:
                if self._may_retry(attempt, started):
                    self._sleep(aws_clients.ENDPOINT_RETRY_BACKOFF_S)
                    continue
                raise EndpointError(503, f"the {where} could not be reached ({exc}), try again shortly") from exc
            except BotoCoreError as exc:
                raise EndpointError(502, f"the {where} could not be called: {exc}") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _may_retry(self, attempt: int, started: float) -> bool:
        """Another attempt is allowed, and a whole one (backoff, connect, read) fits in the endpoint budget."""
        if attempt >= self.max_attempts:
            return False
        attempt_s = (aws_clients.ENDPOINT_RETRY_BACKOFF_S + aws_clients.ENDPOINT_CONNECT_TIMEOUT_S
                     + aws_clients.ENDPOINT_READ_TIMEOUT_S)
        return self._clock() - started + attempt_s <= aws_clients.ENDPOINT_BUDGET_S


def _client_error(exc: Any, where: str) -> EndpointError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message", "")
    if code == "ModelError":
        # The container answered non-200: its status and body travel in OriginalStatusCode/OriginalMessage.
        original = exc.response.get("OriginalStatusCode")
        if original is not None:
            return error_for_status(int(original), exc.response.get("OriginalMessage"), where)
        return EndpointError(502, f"the model at {where} failed: {message}")
    if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "InternalDependencyException"):
        return EndpointError(503, f"the {where} is busy or not ready ({code}), try again shortly")
    if code == "ValidationError":
        return EndpointError(502, f"the {where} rejected the call ({message}); check ENDPOINT_NAME")
    return EndpointError(502, f"the {where} failed ({code}): {message}")


class HttpEndpoint:
    """The inference server over plain HTTP (local mode: gunicorn on 127.0.0.1)."""

    def __init__(self, url: str, timeout_s: float = aws_clients.ENDPOINT_READ_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.name = self.url
        self.timeout_s = timeout_s

    def predict(self, image: bytes, attributes: Sequence[str] | None = None,
                facts: dict[str, Any] | None = None) -> AttributePrediction:
        return parse_prediction(self.invoke(request_body(image, attributes, facts)))

    def invoke(self, body: bytes) -> bytes:
        """POST a JSON body to `<url>/invocations`; the answer's bytes."""
        check_body_size(body)
        where = f"{self.url}/invocations"
        request = urllib.request.Request(
            where, data=body, headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise error_for_status(exc.code, exc.read(), where) from exc
        except (TimeoutError, socket.timeout) as exc:
            raise EndpointError(504, f"{where} did not answer within {self.timeout_s:g} s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise EndpointError(504, f"{where} did not answer within {self.timeout_s:g} s") from exc
            raise EndpointError(503, f"cannot reach the inference server at {where}: {exc.reason}") from exc


def endpoint_for(name: str | None, url: str | None, read_timeout: float | None = None) -> "SageMakerEndpoint | HttpEndpoint":
    """The endpoint a setting names: HTTP in local mode (`url`), else SageMaker. With `read_timeout`, one
    attempt that waits at most that long for the answer (an optional call in a chain of calls)."""
    if url:
        return HttpEndpoint(url) if read_timeout is None else HttpEndpoint(url, timeout_s=read_timeout)
    if read_timeout is None:
        return SageMakerEndpoint(name)  # type: ignore[arg-type]
    return SageMakerEndpoint(name, aws_clients.client("sagemaker-runtime", read_timeout),  # type: ignore[arg-type]
                             max_attempts=1)
