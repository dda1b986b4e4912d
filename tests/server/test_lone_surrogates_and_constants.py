"""Valid JSON that is not text: a lone UTF-16 surrogate ("\\ud800") in a string, and the non-JSON constants
NaN / Infinity. They are refused where the JSON is read (loom.json_limits.loads_request) with a 400 that
names the field, on the attribute server, its JSON Lines lines (a bad line gets its own error line) and the
CLIP server; before the fix they were 500s (a tokenizer's TypeError, Werkzeug's UnicodeEncodeError while
encoding the answer). RFC 8259 section 8.2: strings with unpaired surrogates are valid JSON but their
behaviour is unpredictable; section 6: NaN and Infinity are not permitted."""

from __future__ import annotations

import json

import pytest

from clip_stub import StubEmbedder
from endpoint_contract import RGB_PNG, RecordingPredictor, b64
from inference.server.app import create_app
from loom.errors import StatusError
from loom.json_limits import lone_surrogate_at, loads_request
from runtime.clip_service import ClipService

JSONL = "application/jsonlines"
SURROGATE = '"\\ud800"'  # the JSON text of a string holding one lone surrogate


def test_loads_request_names_the_field_holding_a_lone_surrogate():
    for text, field in [('{"id": %s}' % SURROGATE, "'id'"), ('{"texts": ["a", %s]}' % SURROGATE, "'texts'[1]"),
                        ('{%s: 1}' % SURROGATE, "a key"), ('{"a": {"b": [%s]}}' % SURROGATE, "'a'['b'][0]")]:
        with pytest.raises(StatusError) as caught:
            loads_request(text)
        assert caught.value.status == 400 and field in caught.value.message, (text, caught.value.message)
    assert loads_request('{"ok": "\\u00e9\\ud83d\\ude00"}') == {"ok": "\u00e9\U0001F600"}  # a surrogate pair is fine
    assert lone_surrogate_at({"ok": ["plain", 1, None]}) is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant):
    with pytest.raises(StatusError) as caught:
        loads_request('{"id": %s}' % constant)
    assert caught.value.status == 400 and constant.lstrip("-") in caught.value.message


@pytest.fixture()
def client():
    return create_app(RecordingPredictor()).test_client()


def test_a_prompt_with_a_lone_surrogate_is_a_400_naming_it(client):
    body = '{"image": "%s", "prompt": %s}' % (b64(RGB_PNG), SURROGATE)
    response = client.post("/invocations", data=body, content_type="application/json")
    assert response.status_code == 400, response.data[:300]
    assert "'prompt'" in response.get_json()["error"] and "surrogate" in response.get_json()["error"]


def test_a_jsonlines_line_with_a_lone_surrogate_id_gets_its_own_error_line(client):
    body = "\n".join([json.dumps({"id": "a", "image": b64(RGB_PNG)}),
                      '{"id": %s, "image": "%s"}' % (SURROGATE, b64(RGB_PNG)),
                      json.dumps({"id": "c", "image": b64(RGB_PNG)})])
    response = client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 200, response.data[:300]
    answers = [json.loads(text) for text in response.data.decode("utf-8").splitlines()]
    assert [answer["id"] for answer in answers] == ["a", None, "c"]
    assert "attributes" in answers[0] and "attributes" in answers[2]
    assert answers[1]["error"].startswith("line 2:") and "surrogate" in answers[1]["error"]


@pytest.fixture()
def clip_client():
    return create_app(ClipService(StubEmbedder(), None)).test_client()


@pytest.mark.parametrize("request_text, field", [
    ('{"task": "search", "text": %s}' % SURROGATE, "'text'"),
    ('{"task": "embed", "texts": ["shirt", %s]}' % SURROGATE, "'texts'[1]"),
    ('{"image": "%s", "prompt": ["a", %s]}' % (b64(RGB_PNG), SURROGATE), "'prompt'[1]"),
])
def test_clip_texts_with_a_lone_surrogate_are_a_400_naming_the_field(clip_client, request_text, field):
    response = clip_client.post("/invocations", data=request_text, content_type="application/json")
    assert response.status_code == 400, response.data[:300]
    assert field in response.get_json()["error"]


def test_clip_jsonlines_line_with_a_lone_surrogate_gets_its_own_error_line(clip_client):
    body = "\n".join([json.dumps({"id": "a", "image": b64(RGB_PNG)}),
                      '{"id": %s, "image": "%s"}' % (SURROGATE, b64(RGB_PNG))])
    response = clip_client.post("/invocations", data=body, content_type=JSONL)
    assert response.status_code == 200, response.data[:300]
    answers = [json.loads(text) for text in response.data.decode("utf-8").splitlines()]
    assert answers[0]["id"] == "a" and len(answers[0]["embedding"]) == 4
    assert answers[1]["id"] is None and "surrogate" in answers[1]["error"]
