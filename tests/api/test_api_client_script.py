"""scripts/api_client.py against the real handler behind a tiny HTTP server on 127.0.0.1 that turns each
request into an API Gateway HTTP API v2 event; the SigV4 signature it sends is recomputed with botocore."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from api_events import CONTEXT, event, png
from api_lambda_harness import ATTRIBUTE_ANSWER
from inference.api import handler

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import api_client  # noqa: E402

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


class Gateway(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        Gateway.seen.append({"path": self.path, "headers": headers, "body": body})
        evt = event(self.path, body=body, content_type=headers.get("content-type"))
        response = handler.handler(evt, CONTEXT)
        data = response["body"].encode()
        self.send_response(response["statusCode"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway(monkeypatch, tmp_path):
    # A local inference server stands in for the endpoint: the handler's own HTTP transport (local mode).
    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = json.dumps(ATTRIBUTE_ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), cls) for cls in (Gateway, Endpoint)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    monkeypatch.setenv("ENDPOINT_URL", f"http://127.0.0.1:{servers[1].server_address[1]}")
    monkeypatch.setenv("DESCRIPTION_BACKEND", "offline")
    Gateway.seen = []
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(40, 30))
    yield f"http://127.0.0.1:{servers[0].server_address[1]}", photo
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_sigv4_signed_request_is_answered_and_its_signature_recomputes(gateway, monkeypatch):
    url, photo = gateway
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: CREDENTIALS)
    status, answer = api_client.call(f"{url}/describe", api_client.request_body(photo, language="pt"), "iam",
                                     region="us-east-1")
    assert status == 200 and answer["language"] == "pt" and answer["attributes"]["baseColour"] == "Red"
    sent = Gateway.seen[-1]["headers"]
    authorization = sent["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and \
        "/us-east-1/execute-api/aws4_request" in authorization
    # Recompute the signature from what arrived, as API Gateway would (botocore's SigV4 implementation).
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(method="POST", url=f"{url}/describe", data=Gateway.seen[-1]["body"].encode(),
                         headers={name: sent[name] for name in signed})
    request.context["timestamp"] = sent["x-amz-date"]
    auth = SigV4Auth(CREDENTIALS, "execute-api", "us-east-1")
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert authorization.endswith(f"Signature={expected}")


def test_a_bearer_token_is_sent_and_errors_come_back_as_json(gateway):
    url, photo = gateway
    status, answer = api_client.call(f"{url}/attributes", api_client.request_body(photo, product_type="shirt"),
                                     "jwt", token="header.payload.signature")
    assert status == 200 and "description" not in answer
    assert Gateway.seen[-1]["headers"]["authorization"] == "Bearer header.payload.signature"
    status, answer = api_client.call(f"{url}/attributes", api_client.request_body(photo, language="pt"), "none")
    assert status == 400 and "'language'" in answer["error"]


def test_the_command_line_prints_the_answer(gateway):
    url, photo = gateway
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_client.py"), url, str(photo), "--auth", "none",
                           "--route", "attributes"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    # The subprocess has no ENDPOINT_URL of its own: the server answers from this process.
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["attributes"]["baseColour"] == "Red"
