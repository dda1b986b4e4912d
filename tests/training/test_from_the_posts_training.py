"""The fashion post's training job, run by the real `train` program (docs/from-the-posts.md, section 4):
its hyperparameters, its channel names, one CSV with an `Id` header, no schema file, no validation channel,
and its metric definitions read from the log.
"""

from __future__ import annotations

import csv
import io
import json
import re
from contextlib import redirect_stdout

import pytest

from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE

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
