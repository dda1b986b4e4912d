"""The endpoint calls of Loom's design documents, run against the real `serve` on 127.0.0.1
(docs/from-the-posts.md shows each snippet beside what it does here; the training job's snippet runs in
tests/training/test_from_the_posts_training.py).

Each snippet is the post's own code; only the AWS client object is made here: `smr_client` is a real boto3
sagemaker-runtime client whose requests go to the local server (tests/local_runtime.py). What the post reads
from the answer is what is asserted.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from endpoint_contract import check_contract
from local_runtime import runtime_client
from loom.artifact import read_manifest

endpoint_name = "loom-endpoint"  # any name: the local client does not route by it


def photo_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def clip_client(tiny_clip_server):
    return runtime_client(tiny_clip_server.url)


@pytest.fixture(scope="module")
def shopper_photo(tiny_clip) -> Path:
    return sorted((tiny_clip.catalog_dir / "images").glob("*.jpg"))[0]


# -- the multimodal post: CLIP prompt probabilities -----------------------------------------------------------

def test_the_clip_posts_call_byte_for_byte(clip_client, shopper_photo):
    smr_client = clip_client
    image = photo_b64(shopper_photo)
    # --- the post's snippet (no ContentType) ---
    payload = {"image": image, "prompt": ["a photo of a cat", "a photo of a dog"]}
    response = smr_client.invoke_endpoint(EndpointName=endpoint_name, Body=json.dumps(payload))
    out = response["Body"].read()
    probs = json.loads(out)[0]
    # --- what the post reads ---
    assert len(probs) == 2 and abs(sum(probs) - 1) < 1e-4 and all(0 <= p <= 1 for p in probs)
    # boto3 sent the body with no Content-Type at all: the server read it as JSON.
    assert "Content-Type" not in smr_client.sent[-1]["headers"]
    assert response["ContentType"] == "application/json"


def test_the_clip_posts_call_with_octet_stream_and_with_json_gives_the_same_numbers(clip_client, shopper_photo):
    payload = json.dumps({"image": photo_b64(shopper_photo), "prompt": ["a photo of a red shirt",
                                                                        "a photo of a blue shirt"]})
    answers = [json.loads(clip_client.invoke_endpoint(EndpointName=endpoint_name, Body=payload,
                                                      **kwargs)["Body"].read())
               for kwargs in ({}, {"ContentType": "application/octet-stream"}, {"ContentType": "application/json"})]
    assert answers[0] == answers[1] == answers[2]


# -- the interrogator sample -----------------------------------------------------------------------------------

def test_the_interrogator_samples_call(clip_client, shopper_photo):
    # The sample calls sagemaker.Predictor(..., serializer=JSONSerializer()).predict(...); the SDK's JSON
    # serializer sends application/json (tests/operations/test_sdk_path.py runs it through the SDK itself).
    data = {"inputs": photo_b64(shopper_photo), "parameters": {"max_length": 50, "max_flavors": 32}}
    response = clip_client.invoke_endpoint(EndpointName=endpoint_name, ContentType="application/json",
                                           Body=json.dumps(data))
    result = json.loads(response["Body"].read())
    check_contract(data, "InterrogatorRequest")
    check_contract(result, "InterrogatorResponse")
    assert set(result) == {"outputs"} and isinstance(result["outputs"], str) and result["outputs"]
    assert len(result["outputs"].split()) <= 50


def test_max_flavors_and_max_length_shape_the_prompt(clip_client, shopper_photo):
    def outputs(parameters):
        body = json.dumps({"inputs": photo_b64(shopper_photo), "parameters": parameters})
        return json.loads(clip_client.invoke_endpoint(EndpointName=endpoint_name, Body=body)["Body"].read())["outputs"]

    full = outputs({"max_flavors": 32})
    one = outputs({"max_flavors": 1})
    assert one and full.startswith(one) and len(one) <= len(full)
    short = outputs({"max_flavors": 32, "max_length": 3})
    assert len(short.split()) <= 3 or short == one  # whole terms dropped; the first one always stays


# -- the fashion post: the attribute model ---------------------------------------------------------------------

def test_the_fashion_posts_question_is_answered_under_its_own_key(trained_server, trained_artifact):
    smr_client = runtime_client(trained_server.url)
    photo = sorted((trained_artifact.catalog_dir / "images").glob("*.jpg"))[0]
    schema = read_manifest(trained_artifact.model_dir)["schema"]
    for kwargs in ({"ContentType": "application/json"}, {}):  # the SDK's JSONSerializer, and no type at all
        payload = {"prompt": "What is the sleeve length of the shirt in this picture?", "image": photo_b64(photo)}
        response = smr_client.invoke_endpoint(EndpointName=endpoint_name, Body=json.dumps(payload), **kwargs)
        resp = json.loads(response["Body"].read())
        # the post reads resp["Sleeve Length"]; Loom's own fields are still there
        assert resp["Sleeve Length"] in schema.attributes["Sleeve Length"].values, resp
        assert resp["answer"] == f"Sleeve Length: {resp['Sleeve Length']}" and 0 <= resp["confidence"] <= 1
        check_contract(resp, "PromptResponse")
