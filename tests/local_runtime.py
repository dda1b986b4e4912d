"""A real boto3 `sagemaker-runtime` client whose InvokeEndpoint requests reach a local `serve` on 127.0.0.1.

boto3 builds and signs the request exactly as it would for AWS (botocore's serializer decides the headers:
with no `ContentType` it sends no Content-Type header); a `before-send` hook then posts that body, with its
Content-Type and Accept headers, to the server's `/invocations` and hands the server's answer back to botocore,
which parses it as the service's response (`Body` a StreamingBody, `ContentType`). A 4xx/5xx from the
container becomes botocore's `ModelError`, as SageMaker reports container errors. Shared by the tests that run
the design documents' snippets and the SDK's predictor; nothing here talks to AWS.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

FORWARDED = ("Content-Type", "Accept")


def runtime_client(server_url: str, region: str = "us-east-1", client_factory=None):
    """A sagemaker-runtime client (boto3's, or `client_factory`'s) whose InvokeEndpoint calls go to
    `server_url`/invocations; the endpoint name is not used."""
    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.config import Config

    client = (client_factory or boto3.client)(
        "sagemaker-runtime", region_name=region, aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}))
    sent: list[dict] = []
    target = urlsplit(server_url)

    def forward(request, **_):
        headers = {name: _text(request.headers[name]) for name in FORWARDED if name in request.headers}
        sent.append({"url": request.url, "headers": headers, "body": request.body})
        body = request.body if isinstance(request.body, bytes) else (request.body or b"")
        # http.client sends exactly these headers (urllib would add a form Content-Type to a body without one).
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            status, answer, content_type = response.status, response.read(), response.getheader("Content-Type")
        finally:
            connection.close()
        if status >= 400:  # SageMaker answers a container error as 424 ModelError with the container's message
            error = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": status,
                     "Message": f"Received client error ({status}) from model with message \"{answer.decode()}\"",
                     "__type": "ModelError"}
            return AWSResponse(request.url, 424, {"x-amzn-ErrorType": "ModelError",
                                                  "Content-Type": "application/json"}, _Raw(json.dumps(error).encode()))
        return AWSResponse(request.url, status, {"Content-Type": content_type or "application/json"}, _Raw(answer))

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", forward)
    client.sent = sent  # what boto3 sent, for tests that check the wire form
    return client


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Raw:
    """The raw-response object AWSResponse and botocore's StreamingBody read (`stream()`, `read()`, `close()`)."""

    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data

    def read(self, *_args, **_kwargs) -> bytes:
        data, self._data = self._data, b""
        return data

    def close(self) -> None:  # StreamingBody.close() (the SDK's JSONDeserializer closes the stream)
        self._data = b""
