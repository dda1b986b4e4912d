"""The real `serve` program on 127.0.0.1 serving the tiny CLIP artifact with its index bundle: the manifest's
kind picks the CLIP service, embed and search answer as the issue specifies, JSON Lines and raw images embed
for Batch Transform, and every bad input is a 4xx `{"error": ...}` that leaves the worker alive. Requests and
answers are checked against loom/openapi.json, as tests/server/test_flask_app.py does for the attribute model."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from endpoint_contract import CLIP_REQUEST, JSON_ANSWER, JSON_REQUEST, LINE_ANSWER, LINE_REQUEST, TINY_PNG, check_contract, photo_b64, post, products

from runtime.embedder import ClipEmbedder

pytestmark = pytest.mark.slow






@pytest.fixture
def server(tiny_clip_server):
    return tiny_clip_server








def test_embed_texts_match_the_embedder(server, tiny_clip):
    status, _, raw = post(server, {"task": "embed", "texts": ["green shirt", "red striped long sleeves"]})
    assert status == 200, raw
    body = json.loads(raw)
    assert set(body) == {"embeddings", "dimension", "normalized"}
    assert body["dimension"] == 64 and body["normalized"] is True
    vectors = np.array(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    local = ClipEmbedder.load(tiny_clip.clip_dir, device="cpu").embed_texts(["green shirt", "red striped long sleeves"])
    assert np.allclose(vectors, local, atol=1e-5)


def test_embed_an_image_as_json_and_as_raw_bytes(server, tiny_clip):
    b64 = photo_b64(tiny_clip, products(tiny_clip)[0]["id"])
    status, _, raw = post(server, {"task": "embed", "image": b64})
    assert status == 200, raw
    from_json = json.loads(raw)["embeddings"]
    status, _, raw = post(server, base64.b64decode(b64), "image/jpeg")
    assert status == 200, raw
    assert len(from_json) == 1 and np.allclose(from_json, json.loads(raw)["embeddings"], atol=1e-6)


def test_search_by_text_ranks_green_shirts_first(server, tiny_clip):
    status, _, raw = post(server, {"task": "search", "text": "green shirt", "k": 10})
    assert status == 200, raw
    body = json.loads(raw)
    assert body["index"] == {"backend": "embedded", "size": tiny_clip.index_manifest["count"]}
    results = body["results"]
    assert len(results) == 10 and all(set(r) == {"id", "score", "name", "attributes"} for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert all(-1.0 <= r["score"] <= 1.0 for r in results)
    assert sum(r["attributes"]["baseColour"] == "Green" for r in results) >= 9


def test_search_filters_are_honoured_exactly(server):
    filters = {"Pattern": "Checked", "Sleeve Length": ["Sleeveless", "Short Sleeves"]}
    status, _, raw = post(server, {"task": "search", "text": "red shirt", "k": 50, "filters": filters})
    assert status == 200, raw
    results = json.loads(raw)["results"]
    assert results and all(r["attributes"]["Pattern"] == "Checked" and r["attributes"]["Sleeve Length"]
                           in ("Sleeveless", "Short Sleeves") for r in results)


def test_search_by_a_shopper_photo_finds_the_same_kind_of_shirt(server, tiny_clip):
    target = products(tiny_clip)[3]
    status, _, raw = post(server, {"task": "search", "image": photo_b64(tiny_clip, target["id"], seed=4), "k": 5})
    assert status == 200, raw
    keys = ("baseColour", "Pattern", "Sleeve Length")
    top = json.loads(raw)["results"][0]["attributes"]
    assert all(top[k] == target["attributes"][k] for k in keys)


def test_jsonlines_batch_gives_one_embedding_per_line(server, tiny_clip):
    ids = [p["id"] for p in products(tiny_clip)[:3]]
    lines = [json.dumps({"id": i, "image": photo_b64(tiny_clip, i)}) for i in ids]
    lines.insert(1, json.dumps({"id": "bad", "image": "not base64!"}))
    status, headers, raw = post(server, "\n".join(lines).encode(), "application/jsonlines")
    assert status == 200, raw
    out = [json.loads(line) for line in raw.decode().splitlines()]
    assert [o["id"] for o in out] == [ids[0], "bad", ids[1], ids[2]]
    assert "error" in out[1] and "line 2" in out[1]["error"]
    assert all(len(o["embedding"]) == 64 for o in out if o["id"] != "bad")




@pytest.mark.parametrize("body, needle", [
    ({"task": "search", "text": ""}, "non-empty"),
    ({"task": "search", "text": "   "}, "non-empty"),
    ({"task": "search", "text": "shirt", "k": 0}, "'k'"),
    ({"task": "search", "text": "shirt", "k": 51}, "'k'"),
    ({"task": "search", "text": "shirt", "k": "5"}, "'k'"),
    ({"task": "search", "text": "shirt", "k": True}, "'k'"),
    ({"task": "search", "text": "shirt", "filters": {"colour": "Green"}}, "unknown filter field"),
    ({"task": "search", "text": "shirt", "filters": {"baseColour": 3}}, "filters.baseColour"),
    ({"task": "search", "text": "shirt", "filters": ["Green"]}, "'filters'"),
    ({"task": "search", "text": "shirt", "image": TINY_PNG}, "exactly one"),
    ({"task": "search"}, "exactly one"),
    ({"task": "search", "image": "%%%"}, "base64"),
    ({"task": "search", "image": TINY_PNG}, "image"),
    ({"task": "search", "text": "shirt", "extra": 1}, "unexpected fields"),
    ({"task": "embed", "texts": []}, "'texts'"),
    ({"task": "embed", "texts": ["ok", ""]}, "non-empty"),
    ({"task": "embed", "texts": "green"}, "'texts'"),
    ({"task": "embed", "texts": ["x" * 1001]}, "longer than"),
    ({"task": "embed"}, "exactly one"),
    ({"task": "classify", "text": "x"}, "'task'"),
    ({"image": TINY_PNG}, "'task'"),
    ([1, 2], "JSON object"),
])
def test_bad_inputs_are_4xx_with_an_error(server, body, needle):
    status, headers, raw = post(server, body)
    assert 400 <= status < 500, raw
    assert headers.get("Content-Type", "").startswith("application/json")
    check_contract(json.loads(raw), "Error")
    error = json.loads(raw)["error"]
    assert needle in error
    # The schema refuses every structural mistake; what only the server can tell (an attribute the index lacks,
    # bytes that are not base64 or not an image) is valid against it.
    assert CLIP_REQUEST.is_valid(body) == (needle in ("unknown filter field", "base64", "image"))


def test_requests_and_answers_follow_the_openapi_contract(server, tiny_clip):
    first = products(tiny_clip)[0]
    photo = photo_b64(tiny_clip, first["id"])
    requests = {
        "ClipEmbeddings": [{"task": "embed", "texts": ["green shirt", "red striped long sleeves"]},
                           {"task": "embed", "image": photo}],
        "ClipSearchResponse": [{"task": "search", "text": "green shirt"},
                               {"task": "search", "image": photo, "k": 50,
                                "filters": {"baseColour": first["attributes"]["baseColour"],
                                            "Pattern": ["Solid", "Striped", "Checked"]}},
                               {"task": "search", "text": "green shirt", "filters": {"baseColour": "No such"}}],
    }
    for schema_name, bodies in requests.items():
        for body in bodies:
            JSON_REQUEST.validate(body)
            status, _, raw = post(server, body)
            assert status == 200, raw
            answer = json.loads(raw)
            check_contract(answer, schema_name)
            JSON_ANSWER.validate(answer)  # exactly one of the operation's answers
    status, _, raw = post(server, base64.b64decode(photo), "image/jpeg")
    assert status == 200, raw
    check_contract(json.loads(raw), "ClipEmbeddings")
    lines = [{"id": first["id"], "image": photo}, {"id": 7, "image": "not base64!"}, {"image": photo}]
    for line in lines:
        LINE_REQUEST.validate(line)
    status, headers, raw = post(server, "\n".join(map(json.dumps, lines)).encode(), "application/jsonlines")
    assert status == 200 and headers["Content-Type"].startswith("application/jsonlines"), raw
    answers = [json.loads(line) for line in raw.decode().splitlines()]
    assert [a["id"] for a in answers] == [first["id"], 7, None] and "error" in answers[1]
    for answer in answers:
        check_contract(answer, "ClipEmbeddingResult")
        LINE_ANSWER.validate(answer)


def test_malformed_json_and_bad_raw_images_are_4xx_and_the_worker_lives(server):
    status, _, raw = post(server, b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(raw)["error"]
    status, _, raw = post(server, b"GIF89a-broken", "image/png")
    assert status == 400 and "error" in json.loads(raw)
    status, _, raw = post(server, b"\n\n", "application/jsonlines")
    assert status == 400 and "no records" in json.loads(raw)["error"]
    assert server.ping() == 200
