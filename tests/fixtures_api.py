"""Fixtures for the API Lambda: the SageMaker runtime and Bedrock clients under botocore's Stubber (which
validates every request and response against the real service models), canned replies for them, and a
scripted HTTP server on 127.0.0.1 standing in for an endpoint in local mode."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from inference.api import aws_clients

ENDPOINT_ANSWER = {
    "attributes": {"baseColour": "Red", "Sleeve Length": "Long Sleeves", "Pattern": "Striped"},
    "confidence": {"baseColour": 0.95, "Sleeve Length": 0.9, "Pattern": 0.3},
    "raw": {}, "unknown_values": [], "model": {"name": "loom-blip2-lora"},
}  # fmt: skip


FULL = "A red striped shirt with long-sleeved comfort."


def endpoint_reply(data=ENDPOINT_ANSWER):
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def converse_reply(text, stop="end_turn"):
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}  # fmt: skip


@pytest.fixture
def aws(monkeypatch):
    """SageMaker mode with stubbed clients installed in the container cache."""
    for key in ("ENDPOINT_URL", "BEDROCK_MODEL_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_NAME", "loom-endpoint")
    monkeypatch.setenv("DESCRIPTION_BACKEND", "bedrock")
    creds = dict(region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    sm, br = aws_clients.new_client("sagemaker-runtime", **creds), aws_clients.new_client("bedrock-runtime", **creds)
    stubs = SimpleNamespace(sagemaker=Stubber(sm), bedrock=Stubber(br))
    aws_clients.use_client("sagemaker-runtime", sm)
    aws_clients.use_client("bedrock-runtime", br)
    with stubs.sagemaker, stubs.bedrock:
        yield stubs
        stubs.sagemaker.assert_no_pending_responses()  # also proves that refused requests made no call
        stubs.bedrock.assert_no_pending_responses()
    aws_clients.use_client("sagemaker-runtime", None)
    aws_clients.use_client("bedrock-runtime", None)


class Server:
    """A real HTTP server on 127.0.0.1 that answers each POST with the next scripted (status, headers, body)."""

    def __init__(self, replies, delay_s: float = 0.0):
        self.replies = list(replies)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": data})
                time.sleep(delay_s)
                status, headers, body = outer.replies.pop(0) if len(outer.replies) > 1 else outer.replies[0]
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that timed out and hung up is expected here

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


