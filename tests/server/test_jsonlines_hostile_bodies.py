"""JSON Lines bodies built to cost the server more than they are worth: many tiny lines, junk after a valid
product, lines past the deadline. In-process (the Flask test client) with a recording predictor."""

from __future__ import annotations

import json
import time

from endpoint_contract import RGB_PNG, RecordingPredictor, b64
from inference.server.app import create_app
from clip_stub import StubEmbedder
from inference.server.jsonlines import MAX_LINES
from loom.json_limits import count_lines
from runtime.clip_service import ClipService

JSONL = "application/jsonlines"


def line(product_id, **extra) -> str:
    return json.dumps({"id": product_id, "image": b64(RGB_PNG), **extra})


def test_count_lines_matches_splitlines():
    for body in [b"", b"a", b"a\n", b"a\r\nb", b"a\rb\n\nc", b"\n\n", b"a\r\n\r\n", b"x\ry\r"]:
        assert count_lines(body) == len(body.splitlines()), body


def test_more_lines_than_the_limit_are_refused_at_once_with_413():
    # The reviewer's body: 16 valid lines then "1\n" x 2,097,152 (4.2 MB) took 17.5 s against a 5 s deadline
    # and made a 288 MB answer. It must be refused before any line is read or any model call runs.
    fake = RecordingPredictor()
    client = create_app(fake, request_timeout_s=5.0).test_client()
    body = "".join(line(f"p{n}") + "\n" for n in range(16)) + "1\n" * 2_097_152
    started = time.monotonic()
    response = client.post("/invocations", data=body, content_type=JSONL)
    elapsed = time.monotonic() - started
    assert response.status_code == 413, response.data[:300]
    assert str(MAX_LINES) in response.get_json()["error"]
    assert len(response.data) < 1000
    assert fake.calls == [] and fake.batches == []
    assert elapsed < 5.0, elapsed


def test_a_body_at_the_line_limit_is_answered_with_one_bounded_line_each():
    fake = RecordingPredictor()
    client = create_app(fake, request_timeout_s=60.0).test_client()
    body = line("ok") + "\n" + "1\n" * (MAX_LINES - 1)
    response = client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 200
    answers = [json.loads(text) for text in response.data.decode().splitlines()]
    assert len(answers) == MAX_LINES
    assert answers[0]["id"] == "ok" and "attributes" in answers[0]
    assert all("error" in answer for answer in answers[1:])
    assert len(response.data) < 200 * MAX_LINES


def test_lines_past_the_deadline_are_not_parsed_and_a_pending_product_keeps_its_answer(monkeypatch):
    # A valid product, then lines that each take time to read: the product must be answered (its partial
    # batch flushed before the time runs out), not lost in a whole-request 504; the lines never read get an
    # error line with their line number and no id (they are not parsed past the deadline).
    import inference.server.jsonlines as jsonlines

    fake = RecordingPredictor()
    client = create_app(fake, request_timeout_s=1.0, batch_products=16).test_client()
    real_read = jsonlines.read_line
    read: list[int] = []

    def slow_read(index, *args, **kwargs):
        read.append(index)
        if index > 0:
            time.sleep(0.1)
        return real_read(index, *args, **kwargs)

    monkeypatch.setattr(jsonlines, "read_line", slow_read)
    parsed: list[bytes] = []
    real_loads = json.loads
    monkeypatch.setattr(jsonlines.json, "loads", lambda text, *a, **k: (parsed.append(text), real_loads(text, *a, **k))[1])
    body = "\n".join([line("first")] + [json.dumps({"id": f"junk{n}", "image": 1}) for n in range(40)])
    response = client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 200, response.data[:300]
    answers = [real_loads(text) for text in response.data.decode().splitlines()]
    assert len(answers) == 41
    assert answers[0]["id"] == "first" and "attributes" in answers[0]
    last_read = max(read)
    assert last_read < 40  # the deadline stopped the reading
    for index, answer in enumerate(answers[last_read + 1:], start=last_read + 1):
        assert answer["id"] is None and answer["error"].startswith(f"line {index + 1}: not answered")
    assert len(parsed) == len(read)  # only the lines read were parsed: none after the deadline


def test_the_clip_server_refuses_more_lines_than_the_limit_too():
    client = create_app(ClipService(StubEmbedder(), None)).test_client()
    body = line("p0") + "\n" + "1\n" * MAX_LINES
    response = client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 413, response.data[:300]
    assert str(MAX_LINES) in response.get_json()["error"]
