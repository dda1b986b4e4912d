"""A JSON Lines line's `id` is echoed in its answer line, so it is bounded (loom.json_limits.line_id,
loom/openapi.json LineId: a string of at most 256 characters or an integer of at most 256 digits): a 1 MB id
used to come back as 1 MB, nested objects were echoed, and NaN ids were written as bare NaN (not JSON).
Both servers: the attribute server and the CLIP server."""

from __future__ import annotations

import json

import pytest

from endpoint_contract import RGB_PNG, RecordingPredictor, b64
from inference.server.app import create_app
from loom.json_limits import MAX_ID_CHARS
from runtime.clip_service import ClipService
from clip_stub import StubEmbedder

JSONL = "application/jsonlines"
GOOD_IDS = ["p1", "x" * MAX_ID_CHARS, 7, -(10 ** (MAX_ID_CHARS - 1)), None]
BAD_IDS = ["x" * (MAX_ID_CHARS + 1), "y" * 1_000_000, {"nested": {"deep": [1, 2, 3]}}, [1, 2], 1.5, True,
           10 ** MAX_ID_CHARS]


@pytest.fixture(params=["attributes", "clip"])
def client(request):
    if request.param == "clip":
        return create_app(ClipService(StubEmbedder(), None)).test_client()
    return create_app(RecordingPredictor()).test_client()


def answer_lines(client, ids) -> tuple[list[dict], int]:
    body = "\n".join(json.dumps({"id": product_id, "image": b64(RGB_PNG)}) for product_id in ids)
    response = client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 200, response.data[:300]
    return [json.loads(text) for text in response.data.decode().splitlines()], len(response.data)


def test_ids_within_the_bound_are_echoed(client):
    answers, _ = answer_lines(client, GOOD_IDS)
    assert [answer["id"] for answer in answers] == GOOD_IDS
    assert not any("error" in answer for answer in answers)


def test_other_ids_get_their_line_an_error_with_a_short_quote_and_the_answer_stays_small(client):
    answers, size = answer_lines(client, ["ok"] + BAD_IDS)
    assert answers[0]["id"] == "ok" and "error" not in answers[0]
    for number, answer in enumerate(answers[1:], start=2):
        assert answer["id"] is None, answer
        assert answer["error"].startswith(f"line {number}:") and "'id' must be" in answer["error"]
        assert len(answer["error"]) < 400
    assert size < 20_000  # the 1 MB id is not echoed
