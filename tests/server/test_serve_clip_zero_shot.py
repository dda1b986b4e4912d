"""The real `serve` program on 127.0.0.1 serving the tiny CLIP artifact: the AWS post's prompt form, schema-driven
tags with calibrated thresholds, interrogation and JSON Lines tags answer as the contract says, every bad input is
a 4xx `{"error": ...}`, `ClipService.tag_images` answers exactly as HTTP does, and requests and answers are
validated against loom/openapi.json (as tests/server/test_serve_clip_search.py does for embed and search)."""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from endpoint_contract import CLIP_REQUEST, JSON_ANSWER, JSON_REQUEST, LINE_ANSWER, LINE_REQUEST, TINY_PNG, check_contract, contract, photo_b64, post, products

from runtime.clip_service import ClipService
from loom.artifact import PhrasePaths, read_clip_manifest, read_phrase_tables
from loom.schema import DISPLAY_ATTRIBUTES

pytestmark = pytest.mark.slow
ZERO_SHOT_REQUEST = contract({"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in
                                        ("ClipPromptRequest", "ClipTagsRequest", "ClipInterrogateRequest")]})
VISIBLE = DISPLAY_ATTRIBUTES


@pytest.fixture
def server(tiny_clip_server):
    return tiny_clip_server


@pytest.fixture(scope="module")
def service(tiny_clip):
    return ClipService.load(tiny_clip.clip_dir, device="cpu")


def answer(server, body, content_type="application/json"):
    status, _, raw = post(server, body, content_type)
    assert status == 200, raw
    return json.loads(raw)


def test_the_artifact_carries_schema_thresholds_and_phrase_tables(tiny_clip):
    manifest = read_clip_manifest(tiny_clip.clip_dir)
    assert {"Pattern", "baseColour", "Sleeve Length", "Fabric"} <= {a["name"] for a in manifest["schema"]["attributes"]}
    thresholds = {name: a["threshold"] for name, a in manifest["calibration"]["attributes"].items()}
    assert all(0 < thresholds[name] <= 1 for name in VISIBLE)  # the attributes the drawer draws are calibrated
    assert thresholds["Fabric"] is None  # the photo cannot show the fabric: 0.95 is shown at no threshold
    assert manifest["calibration"]["attributes"]["Fabric"]["reason"] == "not_enough_evidence"
    # The attribute model's rule (loom/calibration.py): 0.95 shown with 95 % confidence, >= 59 stated photos.
    assert manifest["calibration"]["target_precision"] == 0.95 and manifest["calibration"]["confidence"] == 0.95
    assert manifest["calibration"]["min_stated"] == 59
    for name in VISIBLE:
        entry = manifest["calibration"]["attributes"][name]
        assert entry["stated"] >= 59 and entry["lower_bound"] >= 0.95 and entry["precision"] >= entry["lower_bound"]
    tables = read_phrase_tables(tiny_clip.clip_dir)
    assert list(tables)[:3] == ["catalog-pattern", "catalog-sleeve-length", "catalog-colour"]  # calibrated first
    assert {"lighting", "mediums", "movements", "photography"} <= set(tables)
    vectors = np.load(PhrasePaths.of(tiny_clip.clip_dir).embeddings)
    assert vectors.dtype == np.float16 and vectors.shape == (sum(map(len, tables.values())), 64)


def test_the_posts_prompt_form_answers_one_probability_per_prompt_in_order(server, tiny_clip, service):
    target = next(p for p in products(tiny_clip) if p["attributes"]["baseColour"] == "Green")
    image = photo_b64(tiny_clip, target["id"])
    prompts = ["a photo of a red shirt", "a photo of a green shirt", "a photo of a blue shirt"]
    body = answer(server, {"image": image, "prompt": prompts})
    # The sample handler returns probs.tolist() of a (1, n) softmax: [[p_1, ..., p_n]] (see docs/zero-shot.md).
    assert isinstance(body, list) and len(body) == 1 and len(body[0]) == 3
    assert abs(sum(body[0]) - 1) < 1e-4 and int(np.argmax(body[0])) == 1
    # Verbatim prompts, CLIP's own temperature: the same numbers as the model computes them in-process.
    vector = service.embedder.embed_images([Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")])
    texts = service.embedder.embed_texts(prompts, templated=False)
    logits = service.embedder.logit_scale * (texts @ vector[0])
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(body[0], expected, atol=1e-5)


def test_tags_state_what_passed_its_calibrated_threshold_and_withhold_the_rest(server, tiny_clip):
    manifest = read_clip_manifest(tiny_clip.clip_dir)
    thresholds = {name: a["threshold"] for name, a in manifest["calibration"]["attributes"].items()}
    for target in products(tiny_clip)[:8]:
        body = answer(server, {"task": "tags", "image": photo_b64(tiny_clip, target["id"])})
        check_contract(body, "ClipTagsResponse")
        assert set(body["tags"]) | set(body["withheld"]) == {a["name"] for a in manifest["schema"]["attributes"]}
        for name, tag in body["tags"].items():
            assert tag["probability"] >= thresholds[name] and tag["value"] == target["attributes"][name]
            assert set(tag["probabilities"]) == set(next(a["values"] for a in manifest["schema"]["attributes"]
                                                         if a["name"] == name))
        for name, withheld in body["withheld"].items():
            # every attribute of the schema was calibrated; one with no threshold is never stated
            if thresholds[name] is None:
                assert withheld["reason"] == "not_enough_evidence"
            else:
                assert withheld["reason"] == "below_threshold" and withheld["probability"] < thresholds[name]
        assert body["withheld"]["Fabric"]["reason"] == "not_enough_evidence"


def test_tags_for_chosen_attributes_and_caller_labels(server, tiny_clip):
    target = next(p for p in products(tiny_clip) if p["attributes"]["Pattern"] == "Striped")
    image = photo_b64(tiny_clip, target["id"])
    body = answer(server, {"task": "tags", "image": image, "attributes": ["Pattern"]})
    assert set(body["tags"]) | set(body["withheld"]) == {"Pattern"}
    labels = {"Pattern": ["Striped", "Checked"], "Style": ["striped", "plain"]}
    body = answer(server, {"task": "tags", "image": image, "labels": labels})
    assert body["tags"] == {} and {w["reason"] for w in body["withheld"].values()} == {"not_calibrated"}
    assert body["withheld"]["Pattern"]["value"] == "Striped"
    assert list(body["withheld"]["Pattern"]["probabilities"]) == ["Striped", "Checked"]
    body = answer(server, {"task": "tags", "image": image, "labels": labels, "min_probability": 0.5})
    assert body["tags"]["Pattern"]["value"] == "Striped" and body["tags"]["Pattern"]["probability"] >= 0.5
    check_contract(body, "ClipTagsResponse")


def test_interrogation_in_each_mode(server, tiny_clip):
    target = products(tiny_clip)[2]
    image = photo_b64(tiny_clip, target["id"])
    words = {target["attributes"][name].lower() for name in ("baseColour", "Pattern")}
    fast = answer(server, {"task": "interrogate", "image": image})
    assert fast["caption"] is None and len(fast["terms"]) == 6 and fast["prompt"] == ", ".join(
        t["text"] for t in fast["terms"])
    assert [t["similarity"] for t in fast["terms"]] == sorted((t["similarity"] for t in fast["terms"]), reverse=True)
    classic = answer(server, {"task": "interrogate", "image": image, "mode": "classic", "max_terms": 3,
                              "caption": "a shirt on a plain background"})
    assert classic["prompt"].startswith("a shirt on a plain background, ") and len(classic["terms"]) == 3
    best = answer(server, {"task": "interrogate", "image": image, "mode": "best", "max_terms": 32})
    for body in (fast, classic, best):
        check_contract(body, "ClipInterrogation")
        assert words <= {t["text"] for t in body["terms"]}, body


def test_jsonlines_tags_lines_beside_embed_lines(server, tiny_clip):
    ids = [p["id"] for p in products(tiny_clip)[:4]]
    lines = [{"id": ids[0], "image": photo_b64(tiny_clip, ids[0]), "task": "tags"},
             {"id": ids[1], "image": photo_b64(tiny_clip, ids[1])},
             {"id": "bad", "image": photo_b64(tiny_clip, ids[2]), "task": "tags", "labels": {"Pattern": []}},
             {"id": ids[3], "image": photo_b64(tiny_clip, ids[3]), "task": "tags", "attributes": ["Pattern"]},
             {"id": "other", "image": photo_b64(tiny_clip, ids[3]), "task": "interrogate"}]
    for line in lines[:2] + lines[3:4]:
        LINE_REQUEST.validate(line)
    status, headers, raw = post(server, "\n".join(map(json.dumps, lines)).encode(), "application/jsonlines")
    assert status == 200 and headers["Content-Type"].startswith("application/jsonlines"), raw
    out = [json.loads(line) for line in raw.decode().splitlines()]
    assert [o["id"] for o in out] == [ids[0], ids[1], "bad", ids[3], "other"]
    assert set(out[0]) == {"id", "tags", "withheld"} and len(out[1]["embedding"]) == 64
    assert "line 3" in out[2]["error"] and "labels.Pattern" in out[2]["error"]
    assert set(out[3]["tags"]) | set(out[3]["withheld"]) == {"Pattern"}
    assert "line 5" in out[4]["error"] and "'task'" in out[4]["error"]
    for o in out:
        LINE_ANSWER.validate(o)
    check_contract(out[0], "ClipTagsResult")
    direct = answer(server, {"task": "tags", "image": lines[0]["image"]})
    assert {k: out[0][k] for k in ("tags", "withheld")} == direct  # the batched path answers as the single one


def test_tag_images_answers_exactly_as_the_endpoint(server, tiny_clip, service):
    ids = [p["id"] for p in products(tiny_clip)[:5]]
    encoded = [photo_b64(tiny_clip, i, seed=7) for i in ids]
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in encoded]
    local = service.tag_images(images)
    assert local == [answer(server, {"task": "tags", "image": b}) for b in encoded]
    chosen = service.tag_images(images[:2], attributes=["baseColour"], labels={"baseColour": ["Green", "Red"]},
                                min_probability=0.5)
    assert chosen == [answer(server, {"task": "tags", "image": b, "attributes": ["baseColour"],
                                      "labels": {"baseColour": ["Green", "Red"]}, "min_probability": 0.5})
                      for b in encoded[:2]]
    assert service.tag_images([]) == []
    from loom.errors import StatusError

    with pytest.raises(StatusError, match="unknown attributes"):
        service.tag_images(images, attributes=["Sleeve"])


NOT_AN_IMAGE = base64.b64encode(b"this is plain text, not a photo").decode()


@pytest.mark.parametrize("body, needle", [
    ({"image": TINY_PNG, "prompt": []}, "'prompt'"),
    ({"image": TINY_PNG, "prompt": ["p"] * 201}, "at most 200"),
    ({"prompt": ["a cat", "a dog"]}, "'image' is required"),
    ({"image": NOT_AN_IMAGE, "prompt": ["a cat", "a dog"]}, "image"),
    ({"task": "tags"}, "'image' is required"),
    ({"task": "tags", "image": NOT_AN_IMAGE}, "image"),
    ({"task": "tags", "image": "%%%"}, "base64"),
    ({"task": "tags", "image": TINY_PNG, "labels": {"Pattern": []}}, "labels.Pattern"),
    ({"task": "tags", "image": TINY_PNG, "labels": {"A": [f"v{i}" for i in range(150)],
                                                     "B": [f"w{i}" for i in range(51)]}}, "at most 200"),
    ({"task": "tags", "image": TINY_PNG, "attributes": ["Sleeve"]}, "unknown attributes"),
    ({"task": "tags", "image": TINY_PNG, "min_probability": 0.5}, "'min_probability'"),
    ({"task": "tags", "image": TINY_PNG, "colour": "red"}, "unexpected fields"),
    ({"task": "interrogate", "image": TINY_PNG, "mode": "slow"}, "'mode'"),
    ({"task": "interrogate", "image": TINY_PNG, "max_terms": 0}, "'max_terms'"),
    ({"task": "interrogate", "image": TINY_PNG, "max_terms": 33}, "'max_terms'"),
    ({"task": "interrogate", "image": TINY_PNG, "k": 3}, "unexpected fields"),
    ({"task": "interrogate"}, "'image' is required"),
    ({"task": "classify", "image": TINY_PNG}, "'task'"),
])
def test_bad_zero_shot_requests_are_4xx_with_an_error(server, body, needle):
    status, headers, raw = post(server, body)
    assert 400 <= status < 500, raw
    assert headers.get("Content-Type", "").startswith("application/json")
    check_contract(json.loads(raw), "Error")
    assert needle in json.loads(raw)["error"]
    # The schemas refuse every structural mistake; what only the server can tell (bytes that are not an image or
    # not base64, an attribute the schema lacks, more than 200 labels in all) is valid against them.
    server_only = needle in ("image", "base64", "unknown attributes") or body.get("labels", {}).get("A")
    assert ZERO_SHOT_REQUEST.is_valid(body) == bool(server_only), body
    assert not CLIP_REQUEST.is_valid(body)
    assert server.ping() == 200


def test_zero_shot_requests_and_answers_follow_the_openapi_contract(server, tiny_clip):
    image = photo_b64(tiny_clip, products(tiny_clip)[1]["id"], seed=random.Random(3).randint(0, 99))
    bodies = {"ClipPromptProbabilities": {"image": image, "prompt": ["a photo of a cat", "a photo of a dog"]},
              "ClipTagsResponse": {"task": "tags", "image": image, "attributes": ["Pattern", "Fabric"]},
              "ClipInterrogation": {"task": "interrogate", "image": image, "mode": "best", "caption": None}}
    for schema_name, body in bodies.items():
        JSON_REQUEST.validate(body)
        result = answer(server, body)
        check_contract(result, schema_name)
        JSON_ANSWER.validate(result)  # exactly one of the operation's answers
