"""The SageMaker Python SDK (3.x: sagemaker-train, sagemaker-serve, sagemaker-core) driving Loom, without AWS.

Run by tests/operations/test_sdk_path.py with the Python of the virtualenv that holds the SDK (`make test-sdk` builds it
in .cache/sdk-venv, apart from the project's .venv), as

    <sdk python> tests/sdk_checks.py train|deploy|invoke SERVER_URL

Each check prints one JSON line: what the SDK sent, for the test to assert on.

- train: `ModelTrainer` with Loom's training image, the fashion post's hyperparameters and channel names, and
  the post's metric definitions. The SageMaker API client the SDK builds is wrapped in botocore's Stubber
  (botocore validates every request against the service model before the stub answers; the stub's responses
  are validated too); the CreateTrainingJob request is returned.
- deploy: the SDK's model, endpoint-config and endpoint resources (`sagemaker.core.resources.Model`,
  `EndpointConfig`, `Endpoint`; the 3.x `ModelBuilder` also creates its model through `Model.create`) with Loom's serving image and
  artifact; Stubber again; the three requests are returned.
- invoke: `Endpoint.invoke` with the SDK's `JSONSerializer` and `JSONDeserializer`, the SDK's predictor in
  3.x, through a sagemaker-runtime client whose requests reach `serve` on 127.0.0.1 (tests/local_runtime.py);
  the fashion post's prompt request and Loom's attribute request, and the decoded answers.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/loom-training"
TRAIN_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/loom-training:1"
SERVE_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/loom-inference:1"
BUCKET = "loom-example-bucket"
MODEL_DATA = f"s3://{BUCKET}/models/loom-job/output/model.tar.gz"


def quiet_sdk() -> None:
    """No telemetry, no credentials lookup beyond these, no shared AWS config."""
    config = Path(tempfile.mkdtemp()) / "sdk-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ.update({"SAGEMAKER_USER_CONFIG_OVERRIDE": str(config), "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                       "AWS_EC2_METADATA_DISABLED": "true",
                       # The SDK checks the role with iam:SimulatePrincipalPolicy unless told not to (no IAM here).
                       "SAGEMAKER_VALIDATE_ROLE": "false"})


def boto_session():
    import boto3

    return boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)


def sdk_client(session, service: str = "sagemaker"):
    """The client the SDK's resources use for `session` (sagemaker-core caches one per session and region)."""
    from sagemaker.core.resources import Base

    return Base.get_sagemaker_client(session=session, region_name=None, service_name=service)


def check_train() -> dict:
    from botocore.stub import Stubber
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.shapes import MetricDefinition
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig, StoppingCondition

    boto = boto_session()
    client = sdk_client(boto)
    stubber = Stubber(client)
    name = "loom-posts-job"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stubber.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:"
                                                                    f"training-job/{name}"})
    stubber.add_response("describe_training_job", {
        "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": MODEL_DATA}, "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting", "AlgorithmSpecification": {"TrainingImage": TRAIN_IMAGE,
                                                                  "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400}, "CreationTime": now})
    sent: list[dict] = []
    client.meta.events.register("before-parameter-build.sagemaker.CreateTrainingJob",
                                lambda params, **_: sent.append(json.loads(json.dumps(params, default=str))))
    trainer = ModelTrainer(
        training_image=TRAIN_IMAGE, role=ROLE, base_job_name="loom-posts",
        sagemaker_session=Session(boto_session=boto, sagemaker_client=client),
        compute=Compute(instance_type="ml.g5.2xlarge", instance_count=1, volume_size_in_gb=100),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=86400),
        output_data_config=OutputDataConfig(s3_output_path=f"s3://{BUCKET}/models"),
        hyperparameters={"epochs": 10, "file-name": "vqa_train.csv"},  # the fashion post's, verbatim
    ).with_metric_definitions([MetricDefinition(name="train:loss", regex=r"Loss: ([0-9\.]+)"),
                               MetricDefinition(name="train:epoch_loss", regex=r"Epoch Loss: ([0-9\.]+)")])
    with stubber:
        trainer.train(input_data_config=[InputData(channel_name="images", data_source=f"s3://{BUCKET}/images/"),
                                         InputData(channel_name="input_file",
                                                   data_source=f"s3://{BUCKET}/vqa/")], wait=False)
        stubber.assert_no_pending_responses()
    return {"create_training_job": sent[-1]}


def check_deploy() -> dict:
    from botocore.stub import Stubber
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant

    boto = boto_session()
    client = sdk_client(boto)
    stubber = Stubber(client)
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    environment = {"MAX_PENDING_REQUESTS": "4", "REQUEST_TIMEOUT_S": "60"}
    stubber.add_response("create_model", {"ModelArn": f"{arn}:model/loom"})
    stubber.add_response("describe_model", {"ModelName": "loom", "ModelArn": f"{arn}:model/loom", "CreationTime": now,
                                            "ExecutionRoleArn": ROLE,
                                            "PrimaryContainer": {"Image": SERVE_IMAGE, "ModelDataUrl": MODEL_DATA,
                                                                 "Environment": environment}})
    stubber.add_response("create_endpoint_config", {"EndpointConfigArn": f"{arn}:endpoint-config/loom"})
    stubber.add_response("describe_endpoint_config", {
        "EndpointConfigName": "loom", "EndpointConfigArn": f"{arn}:endpoint-config/loom", "CreationTime": now,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "loom", "InstanceType": "ml.g5.2xlarge",
                                "InitialInstanceCount": 1}]})
    stubber.add_response("create_endpoint", {"EndpointArn": f"{arn}:endpoint/loom"})
    stubber.add_response("describe_endpoint", {
        "EndpointName": "loom", "EndpointArn": f"{arn}:endpoint/loom", "EndpointConfigName": "loom",
        "EndpointStatus": "Creating", "CreationTime": now, "LastModifiedTime": now})
    sent: dict[str, dict] = {}
    for operation in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        client.meta.events.register(
            f"before-parameter-build.sagemaker.{operation}",
            lambda params, operation=operation, **_: sent.__setitem__(operation, json.loads(json.dumps(params))))
    with stubber:
        Model.create(model_name="loom", execution_role_arn=ROLE, session=boto,
                     primary_container=ContainerDefinition(image=SERVE_IMAGE, model_data_url=MODEL_DATA,
                                                           environment=environment))
        EndpointConfig.create(endpoint_config_name="loom", session=boto, production_variants=[
            ProductionVariant(variant_name="AllTraffic", model_name="loom", instance_type="ml.g5.2xlarge",
                              initial_instance_count=1)])
        Endpoint.create(endpoint_name="loom", endpoint_config_name="loom", session=boto)
        stubber.assert_no_pending_responses()
    return sent


def check_invoke(server_url: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from local_runtime import runtime_client
    from sagemaker.core.deserializers import JSONDeserializer
    from sagemaker.core.resources import Endpoint
    from sagemaker.core.serializers import JSONSerializer

    boto = boto_session()
    runtime = sdk_client(boto, "sagemaker-runtime")
    runtime_client(server_url, client_factory=lambda *_a, **_k: runtime)  # route this client to the server
    endpoint = Endpoint(endpoint_name="loom")._set_client_context(session=boto)
    endpoint.serializer, endpoint.deserializer = JSONSerializer(), JSONDeserializer()
    image = base64.b64encode(Path(os.environ["LOOM_SDK_IMAGE"]).read_bytes()).decode()
    prompt = endpoint.invoke(body={"prompt": "What is the sleeve length of the shirt in this picture?",
                                   "image": image}, content_type="application/json", accept="application/json")
    attributes = endpoint.invoke(body={"image": image, "attributes": ["Sleeve Length"]},
                                 content_type="application/json", accept="application/json")
    return {"prompt": prompt.body, "attributes": attributes.body, "sent": [
        {"headers": s["headers"], "body": json.loads(s["body"])["prompt" if "prompt" in json.loads(s["body"])
                                                                  else "attributes"]} for s in runtime.sent]}


if __name__ == "__main__":
    quiet_sdk()
    check = sys.argv[1]
    result = {"train": check_train, "deploy": check_deploy}.get(check)
    print(json.dumps(result() if result else check_invoke(sys.argv[2]), default=str))
