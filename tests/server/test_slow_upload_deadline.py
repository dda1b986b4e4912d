"""A slow upload must not hold an admission past the request's deadline: the body is read within it
(request_parsing.read_body with the admission's time_left), else 408 and the admission is given back.
RFC 9110 section 15.5.9: 408 Request Timeout, the server did not receive a complete request in time."""

from __future__ import annotations

import io
import json
import socket
import time

from werkzeug.test import EnvironBuilder, run_wsgi_app

from endpoint_contract import RecordingPredictor
from inference.server.app import create_app


def post_stream(app, stream, length: int, **environ) -> tuple[int, dict]:
    """POST /invocations with `stream` as the body's wsgi.input (the test client wants a seekable one)."""
    env = EnvironBuilder(method="POST", path="/invocations", content_type="application/json").get_environ()
    env.update({"wsgi.input": stream, "CONTENT_LENGTH": str(length), **environ})
    body, status, _ = run_wsgi_app(app, env)
    return int(status.split()[0]), json.loads(b"".join(body))


class Trickle(io.RawIOBase):
    """A body stream that gives one byte every `pause` seconds."""

    def __init__(self, size: int, pause: float):
        self.left, self.pause = size, pause

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.left:
            return 0
        time.sleep(self.pause)
        buffer[0:1] = b"{"
        self.left -= 1
        return 1


def test_a_trickling_body_is_408_at_the_deadline_and_frees_its_admission():
    app = create_app(RecordingPredictor(), request_timeout_s=0.5, max_pending=1)
    client = app.test_client()
    started = time.monotonic()
    status, answer = post_stream(app, Trickle(1000, 0.05), 1000)
    elapsed = time.monotonic() - started
    assert status == 408, answer
    assert "REQUEST_TIMEOUT_S" in answer["error"]
    assert elapsed < 1.5, elapsed
    # max_pending=1: the admission is back, the next request is admitted (400 for its bad JSON, not 503)
    assert client.post("/invocations", data="{", content_type="application/json").status_code == 400


def test_a_silent_client_socket_is_408_at_the_deadline_under_gunicorn():
    # gunicorn hands the client's socket as environ["gunicorn.socket"]; a client that sends its headers and
    # then nothing would block a read for ever: each read waits at most the time left.
    app = create_app(RecordingPredictor(), request_timeout_s=0.5, max_pending=1)
    server_side, client_side = socket.socketpair()
    try:
        stream = server_side.makefile("rb")
        started = time.monotonic()
        status, answer = post_stream(app, stream, 1000, **{"gunicorn.socket": server_side})
        elapsed = time.monotonic() - started
        assert status == 408, answer
        assert elapsed < 1.5, elapsed
        assert server_side.gettimeout() is None  # blocking again for the answer
    finally:
        server_side.close()
        client_side.close()
