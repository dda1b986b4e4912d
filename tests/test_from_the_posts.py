"""The client code of Loom's design documents, run against Loom: the real `serve` on 127.0.0.1 and the real
`train` program (docs/from-the-posts.md shows each snippet beside what it does here).

Each snippet is the post's own code; only the AWS client object is made here: `smr_client` is a real boto3
sagemaker-runtime client whose requests go to the local server (tests/local_runtime.py), and the training
job's folders stand in for what SageMaker mounts from the post's S3 channels. What the post reads from the
answer is what is asserted.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from local_runtime import runtime_client
from loom.artifact import read_manifest
from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE

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
    # serializer sends application/json (tests/test_sdk_path.py runs it through the SDK itself).
    data = {"inputs": photo_b64(shopper_photo), "parameters": {"max_length": 50, "max_flavors": 32}}
    response = clip_client.invoke_endpoint(EndpointName=endpoint_name, ContentType="application/json",
                                           Body=json.dumps(data))
    result = json.loads(response["Body"].read())
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
    assert len(short.split()) <= 3 or short == one  # whole terms dropped; the first term always stays


# -- the fashion post: the attribute model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion_server(trained_artifact, tmp_path_factory):
    from inference.server.local_server import LocalServer

    with LocalServer(trained_artifact.model_dir, log_path=tmp_path_factory.mktemp("posts") / "serve.log") as server:
        server.wait_ready(180)
        yield server


def test_the_fashion_posts_question_is_answered_under_its_own_key(fashion_server, trained_artifact):
    smr_client = runtime_client(fashion_server.url)
    photo = sorted((trained_artifact.catalog_dir / "images").glob("*.jpg"))[0]
    schema = read_manifest(trained_artifact.model_dir)["schema"]
    for kwargs in ({"ContentType": "application/json"}, {}):  # the SDK's JSONSerializer, and no type at all
        payload = {"prompt": "What is the sleeve length of the shirt in this picture?", "image": photo_b64(photo)}
        response = smr_client.invoke_endpoint(EndpointName=endpoint_name, Body=json.dumps(payload), **kwargs)
        resp = json.loads(response["Body"].read())
        # the post reads resp["Sleeve Length"]; Loom's own fields are still there
        assert resp["Sleeve Length"] in schema.attributes["Sleeve Length"].values, resp
        assert resp["answer"] == f"Sleeve Length: {resp['Sleeve Length']}" and 0 <= resp["confidence"] <= 1


# -- the fashion post: the training job ------------------------------------------------------------------------

SEED_PRODUCTS = 60


@pytest.fixture(scope="module")
def seed_job(trained_artifact, tmp_path_factory):
    """The post's job: hyperparameters {"epochs": 10, "file-name": "vqa_train.csv"}, channels `images` and
    `input_file` (one CSV with an `Id,Question,Answer` header, no schema file, no validation channel).
    Loom adds only what the post's job took from its own container: the base model (the tiny stand-in, as a
    `base_model` channel), the tiny base's optimiser settings without its step cap, and cpu."""
    from training.tiny_base import TINY_BASE_HYPERPARAMETERS
    from training.train import main

    root = tmp_path_factory.mktemp("seed_job")
    rows = []
    for name in ("vqa_train.csv", "vqa_val.csv"):
        with (trained_artifact.data_dir / name).open(newline="") as handle:
            rows += list(csv.reader(handle))[1:]
    products = sorted({row[0] for row in rows})[:SEED_PRODUCTS]
    rows = [row for row in rows if row[0] in products]
    data = root / "ml" / "input" / "data"
    (data / "input_file").mkdir(parents=True)
    with (data / "input_file" / "vqa_train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("Id", "Question", "Answer"), *rows])
    (data / "images").symlink_to((trained_artifact.catalog_dir / "images").resolve(), target_is_directory=True)
    (data / "base_model").symlink_to(trained_artifact.base_dir.resolve(), target_is_directory=True)
    hyperparameters = {k: v for k, v in TINY_BASE_HYPERPARAMETERS.items() if k != "max_steps"}
    hyperparameters.update({"epochs": 10, "file-name": "vqa_train.csv",  # the post's, verbatim
                            "device": "cpu", "quality_gate": "false", "log_every": "5"})
    config = root / "ml" / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--sm-root", str(root / "ml")])
    failure = root / "ml" / "output" / "failure"
    assert code == 0, f"{failure.read_text() if failure.exists() else ''}\n{out.getvalue()[-3000:]}"
    model = root / "ml" / "model"
    return {"log": out.getvalue(), "metrics": json.loads((model / "metrics.json").read_text()),
            "manifest": json.loads((model / "loom_manifest.json").read_text()), "rows": rows, "model": model}


def test_the_seed_job_trains_on_what_the_post_gives(seed_job):
    data = seed_job["metrics"]["data"]
    assert data["train_channel"] == "input_file" and data["train_file"].endswith("input_file/vqa_train.csv")
    assert data["schema"].startswith("inferred from the answers")
    assert data["validation"].startswith("0.2 of the products of") and data["validation_products"] > 0
    assert data["train_products"] + data["validation_products"] == SEED_PRODUCTS
    # both hyperparameters are honoured and recorded
    assert seed_job["manifest"]["hyperparameters"]["train_file"] == "vqa_train.csv"
    assert seed_job["manifest"]["hyperparameters"]["epochs"] == "10.0"
    assert seed_job["metrics"]["training"]["epochs"] == pytest.approx(10, abs=0.2)


def test_the_inferred_schema_is_the_catalogs(seed_job):
    schema = seed_job["manifest"]["schema"]
    assert {a["name"] for a in schema["attributes"]} == {*DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE}
    questions = {row[2].split(":")[0]: row[1] for row in seed_job["rows"]}
    assert all(questions[a["label"]] == a["question"] for a in schema["attributes"])
    assert schema["type_attribute"] == PRODUCT_TYPE_ATTRIBUTE
    # validation products are held out of training: their predictions are of products not trained on
    predictions = seed_job["model"] / "evaluation" / "predictions.csv"
    with predictions.open(newline="") as handle:
        validation_ids = {row["id"] for row in csv.DictReader(handle)}
    assert len(validation_ids) == seed_job["metrics"]["data"]["validation_products"]


def test_the_posts_metric_regexes_find_the_loss(seed_job):
    # The post's MetricDefinitions, verbatim; SageMaker applies each regex to every log line.
    losses = [float(m.group(1)) for line in seed_job["log"].splitlines()
              if (m := re.search(r"Loss: ([0-9\.]+)", line))]
    epochs = [float(m.group(1)) for line in seed_job["log"].splitlines()
              if (m := re.search(r"Epoch Loss: ([0-9\.]+)", line))]
    assert len(epochs) == 10 and all(loss >= 0 for loss in losses) and len(losses) > len(epochs)
    assert epochs[-1] < epochs[0]  # it learns
