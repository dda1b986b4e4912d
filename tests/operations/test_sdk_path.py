"""The SageMaker Python SDK (3.x, the optional extra `loom[sdk]`) trains with Loom's training image, deploys
Loom's artifact with Loom's serving image, and calls the endpoint with its JSON serializer, without AWS.

The SDK (about 126 packages, 950 MB with mlflow) lives in a virtualenv of its own so that the project's .venv,
the images and the Lambda zip never carry it: `make test-sdk` builds .cache/sdk-venv and runs this file.
The SDK's side runs in that virtualenv (tests/sdk_checks.py, one subprocess per check); this side checks what
it sent against what Loom reads: the hyperparameters through training/config.py, the channels through the
`train` program's folders, the answers against the server's contract. Without the SDK it prints a loud SKIP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON = os.environ.get("LOOM_SDK_PYTHON") or str(ROOT / ".cache" / "sdk-venv" / "bin" / "python")


def _sdk_ready() -> bool:
    try:
        return subprocess.run([SDK_PYTHON, "-c", "import sagemaker.train, sagemaker.core.resources"],
                              capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not _sdk_ready():
    print(f"\nSKIP: tests/operations/test_sdk_path.py needs the SageMaker Python SDK in {SDK_PYTHON}: run `make test-sdk` "
          "(or set LOOM_SDK_PYTHON to a Python with `pip install '.[sdk]'`)")
    pytest.skip("SKIP: the SageMaker Python SDK is not installed (make test-sdk installs it apart)",
                allow_module_level=True)


def sdk(check: str, *args: str, env: dict | None = None) -> dict:
    done = subprocess.run([SDK_PYTHON, str(ROOT / "tests" / "sdk_checks.py"), check, *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_sdks_trainer_launches_the_posts_job_on_loom_training_image():
    from training.config import from_hyperparameters
    from training.train import JobPaths

    request = sdk("train")["create_training_job"]
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/loom-training:1")
    # the post's hyperparameters, as the SDK sends them (strings), are what Loom's train program reads
    assert request["HyperParameters"] == {"epochs": "10", "file-name": "vqa_train.csv"}
    config = from_hyperparameters(request["HyperParameters"])
    assert (config.epochs, config.max_steps, config.train_file) == (10.0, 0, "vqa_train.csv")
    # the post's channels: SageMaker mounts each as SM_CHANNEL_<NAME>; the train program finds the CSV's
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {"images": "s3://loom-example-bucket/images/", "input_file": "s3://loom-example-bucket/vqa/"}
    env = {f"SM_CHANNEL_{name.upper()}": f"/opt/ml/input/data/{name}" for name in channels}
    paths = JobPaths.resolve(env=env)
    assert str(paths.images) == "/opt/ml/input/data/images"
    # (the alias applies when the folder exists: tests/training/test_from_the_posts_training.py runs the job)
    assert {d["Regex"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]} == {
        r"Loss: ([0-9\.]+)", r"Epoch Loss: ([0-9\.]+)"}


def test_the_sdks_model_classes_deploy_loom_artifact_on_loom_serving_image():
    sent = sdk("deploy")
    container = sent["CreateModel"]["PrimaryContainer"]
    assert container["Image"].endswith("/loom-inference:1")
    assert container["ModelDataUrl"].endswith("/output/model.tar.gz")
    assert sent["CreateEndpointConfig"]["ProductionVariants"][0]["ModelName"] == sent["CreateModel"]["ModelName"]
    assert sent["CreateEndpoint"]["EndpointConfigName"] == sent["CreateEndpointConfig"]["EndpointConfigName"]


def test_the_sdks_predictor_and_json_serializer_against_serve(trained_server, trained_artifact):
    from loom.artifact import read_manifest

    photo = sorted((trained_artifact.catalog_dir / "images").glob("*.jpg"))[0]
    result = sdk("invoke", trained_server.url, env={"LOOM_SDK_IMAGE": str(photo)})
    schema = read_manifest(trained_artifact.model_dir)["schema"]
    assert result["prompt"]["Sleeve Length"] in schema.attributes["Sleeve Length"].values
    assert set(result["attributes"]) >= {"attributes", "withheld", "confidence"}
    asked = {**result["attributes"]["attributes"], **result["attributes"]["withheld"]}
    assert set(asked) == {"Sleeve Length"}
    # the SDK's JSONSerializer sent application/json and asked for JSON back
    assert all(s["headers"] == {"Content-Type": "application/json", "Accept": "application/json"}
               for s in result["sent"])
