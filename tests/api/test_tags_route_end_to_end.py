"""End to end: `POST /tags` and `POST /interrogate` through the API Lambda handler in local mode against the
real `serve` program (gunicorn on 127.0.0.1) holding the tiny CLIP (fixture `tiny_clip`) and, for the
caption, the tiny attribute model that `train` fine-tuned (fixture `trained_artifact`).

No stub between the API Gateway event and the models: the events are real HTTP API v2 samples, every
endpoint call crosses a socket, and the answers are checked against the endpoint contract (loom/openapi.json).
"""

from __future__ import annotations

import json
import time

import pytest

from api_events import call, event
from endpoint_contract import check_contract, photo_b64, post, products

from inference.api.describe import subject_from_attributes
from inference.server.local_server import LocalServer
from loom.schema import DEFAULT_PRODUCT_NOUN, DISPLAY_ATTRIBUTES

pytestmark = pytest.mark.slow
VISIBLE = DISPLAY_ATTRIBUTES


@pytest.fixture
def clip_only(monkeypatch, tiny_clip_server):
    """The API with the CLIP endpoint alone (SEARCH_ENDPOINT_URL), as local mode points it."""
    for key in ("ENDPOINT_NAME", "ENDPOINT_URL", "SEARCH_ENDPOINT_NAME", "OPENSEARCH_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEARCH_ENDPOINT_URL", tiny_clip_server.url)
    monkeypatch.setenv("SEARCH_BACKEND", "embedded")
    return tiny_clip_server


@pytest.fixture(scope="module")
def attribute_server(trained_artifact, tmp_path_factory):
    with LocalServer(trained_artifact.model_dir,
                     log_path=tmp_path_factory.mktemp("clip_api_e2e_attributes") / "serve.log") as server:
        server.wait_ready(180)
        yield server


def api(path: str, **body) -> tuple[int, dict]:
    return call(event(path, body=json.dumps(body)))


def direct(server, body: dict) -> dict:
    """The CLIP endpoint's own answer to the same request (what the Lambda must pass on unchanged)."""
    status, _, raw = post(server, body)
    assert status == 200, raw
    return json.loads(raw)


def shirts(tiny_clip, count: int) -> list[tuple[dict, str]]:
    """(true attributes, shopper's photo in base64) of the first `count` catalog products."""
    return [(p["attributes"], photo_b64(tiny_clip, p["id"], seed=i)) for i, p in enumerate(products(tiny_clip)[:count])]


def test_tags_through_the_api_are_the_endpoints_tags(clip_only, tiny_clip):
    stated_right = []
    for truth, image in shirts(tiny_clip, 8):
        status, body = api("/tags", image=image)
        assert status == 200, body
        check_contract(body, "ClipTagsResponse")
        assert body == direct(clip_only, {"task": "tags", "image": image})  # passed on unchanged
        assert set(VISIBLE) <= set(body["tags"]) | set(body["withheld"])
        assert body["withheld"]["Fabric"]["reason"] == "not_enough_evidence"  # a photo cannot show the fabric
        stated_right += [tag["value"] == truth[name] for name, tag in body["tags"].items() if name in VISIBLE]
    # Thresholds at which 95 % precision is shown: what is stated about the drawn attributes is right.
    assert len(stated_right) >= 12 and sum(stated_right) / len(stated_right) >= 0.9, stated_right


def test_caller_labels_and_their_threshold_reach_the_endpoint(clip_only, tiny_clip):
    (truth, image), = shirts(tiny_clip, 1)
    colours = sorted({p["attributes"]["baseColour"] for p in products(tiny_clip)})
    request = {"labels": {"baseColour": colours}, "min_probability": 0.5}
    status, body = api("/tags", image=image, **request)
    assert status == 200, body
    assert body == direct(clip_only, {"task": "tags", "image": image, **request})
    tag = {**body["tags"], **body["withheld"]}["baseColour"]
    assert set(tag["probabilities"]) == set(colours) and set(body["tags"]) | set(body["withheld"]) == {"baseColour"}


def test_the_endpoints_refusals_reach_the_client_with_their_reason(clip_only, tiny_clip):
    (_, image), = shirts(tiny_clip, 1)
    status, body = api("/tags", image=image, attributes=["Colour"])
    assert status == 400 and "unknown attributes ['Colour']" in body["error"], body
    status, body = api("/tags", image=image, labels={"Pattern": ["Striped"]}, attributes=["baseColour"])
    assert status == 400 and "'labels' names attributes ['Pattern']" in body["error"], body


@pytest.mark.parametrize("mode", ["fast", "classic", "best"])
def test_interrogation_with_the_clip_endpoint_alone_has_no_caption(clip_only, tiny_clip, mode):
    (_, image), = shirts(tiny_clip, 1)
    started = time.monotonic()
    status, body = api("/interrogate", image=image, mode=mode, max_terms=4)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert status == 200, body
    check_contract(body, "ClipInterrogation")
    assert body["caption"] is None and "caption_error" not in body and 1 <= len(body["terms"]) <= 4
    assert body == direct(clip_only, {"task": "interrogate", "image": image, "mode": mode, "max_terms": 4})
    print(f"POST /interrogate mode={mode}: {elapsed_ms:.0f} ms through the handler (tiny CLIP, 127.0.0.1)")


def test_with_both_endpoints_the_caption_is_the_stated_attributes(clip_only, attribute_server, tiny_clip,
                                                                  monkeypatch):
    monkeypatch.setenv("ENDPOINT_URL", attribute_server.url)
    monkeypatch.setenv("DESCRIPTION_BACKEND", "offline")
    for _, image in shirts(tiny_clip, 3):
        status, attributes = api("/attributes", image=image)
        assert status == 200, attributes
        assert attributes["attributes"], "the tiny attribute model states the colour of a synthetic shirt"
        caption = subject_from_attributes(attributes["attributes"], DEFAULT_PRODUCT_NOUN)
        withheld = [w["value"] for w in attributes["withheld"].values() if w.get("value")]
        status, body = api("/interrogate", image=image, mode="classic")
        assert status == 200, body
        check_contract(body, "ClipInterrogation")
        assert body["caption"] == caption and body["prompt"].startswith(caption + ", ")
        assert not any(value in caption for value in withheld if value not in attributes["attributes"].values())
        # The CLIP endpoint given the same caption answers the same prompt.
        assert body == direct(clip_only, {"task": "interrogate", "image": image, "mode": "classic", "caption": caption})


def test_a_failing_attribute_endpoint_costs_the_caption_only(clip_only, tiny_clip, monkeypatch):
    monkeypatch.setenv("ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    (_, image), = shirts(tiny_clip, 1)
    status, body = api("/interrogate", image=image)
    assert status == 200, body
    assert body["caption"] is None and "could not describe the photo (503:" in body["caption_error"]
    assert {k: v for k, v in body.items() if k != "caption_error"} == direct(clip_only, {"task": "interrogate",
                                                                                        "image": image})
