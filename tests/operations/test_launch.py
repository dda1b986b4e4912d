"""`python -m operations.launch` against moto: the request it sends, uploads, waiting, failure reporting."""

from __future__ import annotations

import json
import re

import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

from loom.schema import AttributeSchema
from operations import launch
from training.metrics_regex import METRIC_DEFINITIONS
from operations import sagemaker_jobs as jobs
from operations.sagemaker_jobs import JobConfigError

REGION = "us-east-1"
BUCKET = "loom-test"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-training:latest"
ROLE = "arn:aws:iam::123456789012:role/loom-sagemaker"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def aws(monkeypatch, fake_aws_credentials):
    """moto in-process, dummy credentials, and a record of the API parameters each call was given."""
    sent: dict[str, list[dict]] = {}
    make_client = jobs.aws_client

    def recording_client(service, **kwargs):
        client = make_client(service, **kwargs)

        def record(params, model, **_):
            sent.setdefault(model.name, []).append(json.loads(json.dumps(params, default=str)))

        client.meta.events.register("provide-client-params.*.*", record)
        return client

    monkeypatch.setattr(jobs, "aws_client", recording_client)
    monkeypatch.setattr(jobs.time, "sleep", lambda s: sent.setdefault("sleep", []).append(s))
    with mock_aws():
        jobs.aws_client("s3", region=REGION).create_bucket(Bucket=BUCKET)
        yield sent


def backend():
    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]


def script_states(monkeypatch, states):
    """Before each DescribeTrainingJob, set moto's stored job to the next of `states` (moto jumps to Completed)."""
    remaining = list(states)
    make_client = jobs.aws_client

    def client(service, **kwargs):
        c = make_client(service, **kwargs)

        def advance(params, **_):
            job = backend().training_jobs[params["TrainingJobName"]]
            if remaining:
                for key, value in remaining.pop(0).items():
                    setattr(job, key, value)

        c.meta.events.register("provide-client-params.sagemaker.DescribeTrainingJob", advance)
        return c

    monkeypatch.setattr(jobs, "aws_client", client)


def prepared_folder(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "vqa_train.csv").write_text("id,Question,Answer\n1,q,a\n")
    (data / "vqa_val.csv").write_text("id,Question,Answer\n2,q,a\n")
    AttributeSchema.from_names(["baseColour", "Sleeve Length"]).save(data / "attribute_schema.json")
    images = tmp_path / "images"
    images.mkdir()
    for pid in ("1", "2"):
        (images / f"{pid}.jpg").write_bytes(b"\xff\xd8 fake jpeg " + pid.encode())
    return data, images


BASE_ARGS = ["--image-uri", IMAGE, "--role-arn", ROLE, "--bucket", BUCKET]


def test_spot_job_request_as_sent_and_stored(aws, tmp_path, capsys):
    data, images = prepared_folder(tmp_path)
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps({"max_steps": 300, "learning_rate": 3e-3, "baseline": False,
                                   "lora_target_modules": ["q", "v"]}))
    code = launch.main([
        *BASE_ARGS, "--job-name", "loom-train-test-1", "--upload-data", str(data), "--upload-images", str(images),
        "--base-model", "s3://loom-test/data/base/tiny/", "--hyperparameters", str(hp_file), "--hp", "batch_size=32",
        "--kms-key-arn", KMS, "--spot", "--max-run-hours", "2", "--max-wait-hours", "4", "--tag", "project=loom", "--tag", "owner=ml",
        "--wait",
    ])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == "s3://loom-test/models/loom-train-test-1/output/model.tar.gz"

    job = backend().training_jobs["loom-train-test-1"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job.input_data_config}
    assert channels == {
        "train": "s3://loom-test/data/train/",
        "validation": "s3://loom-test/data/validation/",
        "images": "s3://loom-test/data/images/",
        "base_model": "s3://loom-test/data/base/tiny/",
    }
    assert job.hyper_parameters == {"max_steps": "300", "learning_rate": "0.003", "baseline": "false",
                                    "lora_target_modules": "q,v", "batch_size": "32"}
    assert all(isinstance(v, str) for v in job.hyper_parameters.values())
    # ml.g5 has NVMe instance storage: SageMaker refuses VolumeKmsKeyId there (API_ResourceConfig.html).
    assert job.resource_config == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert job.output_data_config == {"S3OutputPath": "s3://loom-test/models", "KmsKeyId": KMS}
    assert job.enable_managed_spot_training is True
    assert job.stopping_condition == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert job.checkpoint_config == {"S3Uri": "s3://loom-test/checkpoints/loom-train-test-1/",
                                     "LocalPath": "/opt/ml/checkpoints"}
    assert job.tags == [{"Key": "project", "Value": "loom"}, {"Key": "owner", "Value": "ml"}]
    assert job.algorithm_specification["TrainingImage"] == IMAGE and job.role_arn == ROLE
    # moto overwrites MetricDefinitions in what it stores, so check what was sent.
    sent = aws["CreateTrainingJob"][0]
    definitions = sent["AlgorithmSpecification"]["MetricDefinitions"]
    assert definitions[: len(METRIC_DEFINITIONS)] == METRIC_DEFINITIONS
    assert {d["Name"] for d in definitions[len(METRIC_DEFINITIONS):]} == {
        "validation:exact_match:basecolour", "validation:baseline_exact_match:basecolour",
        "validation:exact_match:sleeve_length", "validation:baseline_exact_match:sleeve_length"}

    s3 = jobs.aws_client("s3", region=REGION)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"data/train/vqa_train.csv", "data/train/attribute_schema.json", "data/validation/vqa_val.csv",
            "data/images/1.jpg", "data/images/2.jpg"} <= keys


def test_second_upload_skips_what_is_there(aws, tmp_path, capsys):
    data, images = prepared_folder(tmp_path)
    for name in ("loom-a", "loom-b"):
        assert launch.main([*BASE_ARGS, "--job-name", name, "--upload-data", str(data),
                            "--upload-images", str(images)]) == 0
    out = capsys.readouterr().out
    assert "prepared data: 3 uploaded, 0 already in S3" in out
    assert "prepared data: 0 uploaded, 3 already in S3" in out
    assert "images: 0 uploaded, 2 already in S3" in out
    assert out.strip().splitlines()[-1] == "s3://loom-test/models/loom-b/output/model.tar.gz"


def test_wait_streams_transitions_and_backs_off(aws, monkeypatch, capsys):
    script_states(monkeypatch, [
        {"training_job_status": "InProgress", "secondary_status": "Starting"},
        {"training_job_status": "InProgress", "secondary_status": "Downloading"},
        {"training_job_status": "InProgress", "secondary_status": "Training"},
        {"training_job_status": "InProgress", "secondary_status": "Training"},
        {"training_job_status": "InProgress", "secondary_status": "Uploading"},
        {"training_job_status": "Completed", "secondary_status": "Completed"},
    ])
    assert launch.main([*BASE_ARGS, "--job-name", "loom-poll", "--wait"]) == 0
    out = capsys.readouterr().out
    statuses = re.findall(r"training job status: (\w+ / \w+)", out)
    assert statuses == ["InProgress / Starting", "InProgress / Downloading", "InProgress / Training",
                        "InProgress / Uploading", "Completed / Completed"]
    assert aws["sleep"] == [5, 7.5, 11.25, 16.875, 25.3125]
    assert len(aws["DescribeTrainingJob"]) == 6


def test_failed_job_is_reported_with_its_reason(aws, monkeypatch, capsys):
    script_states(monkeypatch, [
        {"training_job_status": "InProgress", "secondary_status": "Training"},
        {"training_job_status": "Failed", "secondary_status": "Failed",
         "failure_reason": "AlgorithmError: CUDA out of memory (exit code 1)"},
    ])
    code = launch.main([*BASE_ARGS, "--job-name", "loom-fails", "--wait"])
    captured = capsys.readouterr()
    assert code == 1
    assert "training job loom-fails ended Failed: AlgorithmError: CUDA out of memory (exit code 1)" in captured.err
    assert "model.tar.gz" not in captured.out


def test_stopped_job_exits_non_zero(aws, monkeypatch, capsys):
    script_states(monkeypatch, [{"training_job_status": "Stopped", "secondary_status": "Stopped"}])
    assert launch.main([*BASE_ARGS, "--job-name", "loom-stopped", "--wait"]) == 1
    assert "ended Stopped: no FailureReason given" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--job-name", "bad_name"], "not valid"),
    (["--job-name", "x" * 64], "not valid"),
    (["--hp", "no_such_setting=1"], "unknown hyperparameter"),
    (["--hp", "batch_size=many"], "expected an integer"),
    (["--spot", "--max-run-hours", "10", "--max-wait-hours", "5"], "at least the max run time"),
    (["--checkpoint-s3", "s3://loom-test/ck/"], "add --spot"),
    (["--tag", "oops"], "key=value"),
    (["--upload-data", "/nonexistent"], "not a prepared-data folder"),
    (["--train", "not-a-uri"], "not an S3 URI"),
])
def test_bad_arguments_start_nothing(aws, capsys, extra, message):
    assert launch.main([*BASE_ARGS, *extra]) == 2
    assert message in capsys.readouterr().err
    assert "CreateTrainingJob" not in aws


def test_without_bucket_every_location_must_be_given(aws, capsys):
    assert launch.main(["--image-uri", IMAGE, "--role-arn", ROLE]) == 2
    assert "give --train or --bucket" in capsys.readouterr().err


def test_on_demand_request_has_no_spot_settings():
    spec = launch.TrainingJobSpec(
        job_name="loom-x", image_uri=IMAGE, role_arn=ROLE, train_uri="s3://bkt/t", validation_uri="s3://bkt/v",
        images_uri="s3://bkt/i", output_uri="s3://bkt/models/", hyperparameters={"epochs": 1.5},
    )
    request = launch.training_job_request(spec)
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": launch.DEFAULT_MAX_RUN_S}
    assert request["HyperParameters"] == {"epochs": "1.5"}
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bkt/models"}
    assert "VolumeKmsKeyId" not in request["ResourceConfig"]
    assert launch.model_artifact_uri(spec.output_uri, "loom-x") == "s3://bkt/models/loom-x/output/model.tar.gz"


def test_volume_key_only_for_ebs_backed_instance_types():
    # ml.g5 and other NVMe instance-storage types refuse VolumeKmsKeyId (API_ResourceConfig.html);
    # the output key is sent for every type.
    def request_for(instance_type):
        spec = launch.TrainingJobSpec(
            job_name="loom-x", image_uri=IMAGE, role_arn=ROLE, train_uri="s3://bkt/t", validation_uri="s3://bkt/v",
            images_uri="s3://bkt/i", output_uri="s3://bkt/models/", instance_type=instance_type, kms_key_arn=KMS,
        )
        return launch.training_job_request(spec)

    for local_storage in ("ml.g5.2xlarge", "ml.p4d.24xlarge", "ml.g6e.xlarge", "ml.m6id.large", "ml.p6-b200.48xlarge"):
        request = request_for(local_storage)
        assert "VolumeKmsKeyId" not in request["ResourceConfig"], local_storage
        assert request["OutputDataConfig"]["KmsKeyId"] == KMS
    ebs = request_for("ml.m5.xlarge")
    assert ebs["ResourceConfig"]["VolumeKmsKeyId"] == KMS and ebs["OutputDataConfig"]["KmsKeyId"] == KMS


def test_hyperparameters_become_strings():
    assert launch.hyperparameters_as_strings(
        {"a": 1, "b": 0.5, "c": True, "d": "x", "e": ["q", "v"], "f": (1, 2)}
    ) == {"a": "1", "b": "0.5", "c": "true", "d": "x", "e": "q,v", "f": "1,2"}


@pytest.mark.parametrize("value,message", [
    ({"k": 1}, "dict value"),
    ([["q"], ["v"]], "nested value"),
    (None, "no value"),
    (["a,b"], "contains a comma"),
    ("x" * 2501, "the limit is 2500"),
])
def test_hyperparameters_refuse_what_sagemaker_cannot_take(value, message):
    with pytest.raises(JobConfigError, match=message) as info:
        launch.hyperparameters_as_strings({"lora": value})
    assert "'lora'" in str(info.value)


def test_metric_definitions_read_the_train_programs_lines(tmp_path):
    data, _ = prepared_folder(tmp_path)
    lines = [
        "step 50 loss 0.12",
        "loom_metric train_loss=0.1234 step=50 learning_rate=9.5e-05",
        "loom_metric val_exact_match=0.93 val_baseline_exact_match=0.2",
        "loom_metric val_exact_match.sleeve_length=0.92",
    ]
    found = {}
    for definition in launch.metric_definitions(data):
        for line in lines:
            match = re.search(definition["Regex"], line)
            if match:
                found[definition["Name"]] = float(match.group(1))
    assert found == {"train:loss": 0.1234, "train:learning_rate": 9.5e-05, "validation:exact_match": 0.93,
                     "validation:baseline_exact_match": 0.2, "validation:exact_match:sleeve_length": 0.92}
    assert launch.metric_definitions(None) == METRIC_DEFINITIONS


def test_network_isolation_needs_the_staged_base_model_channel():
    # An isolated container reaches neither S3 nor the hub; SageMaker still copies the channels in, so the
    # base model must come as the base_model channel (loom stage-base). CreateTrainingJob,
    # EnableNetworkIsolation: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
    common = dict(job_name="loom-x", image_uri=IMAGE, role_arn=ROLE, train_uri="s3://bkt/t", validation_uri="s3://bkt/v",
                  images_uri="s3://bkt/i", output_uri="s3://bkt/models/", network_isolation=True)
    with pytest.raises(launch.JobConfigError, match="needs --base-model"):
        launch.training_job_request(launch.TrainingJobSpec(**common))
    request = launch.training_job_request(launch.TrainingJobSpec(**common, base_model_uri="s3://bkt/base/"))
    assert request["EnableNetworkIsolation"] is True
    assert [c["ChannelName"] for c in request["InputDataConfig"]][-1] == "base_model"
    plain = launch.training_job_request(launch.TrainingJobSpec(**{**common, "network_isolation": False}))
    assert "EnableNetworkIsolation" not in plain


def test_a_clip_artifact_comes_in_as_the_optional_clip_channel():
    # The `train` program reads it at /opt/ml/input/data/clip (training/job_folders.py); SageMaker names a
    # channel's folder after ChannelName: https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html
    args = launch.parse_args(["--image-uri", IMAGE, "--role-arn", ROLE, "--bucket", "bkt",
                              "--clip-artifact", "s3://bkt/data/clip"])
    request = launch.training_job_request(launch.spec_from_args(args, "loom-x"))
    clip = [c for c in request["InputDataConfig"] if c["ChannelName"] == "clip"]
    assert clip == [{"ChannelName": "clip", "InputMode": "File", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://bkt/data/clip/", "S3DataDistributionType": "FullyReplicated"}}}]
    plain = launch.training_job_request(launch.spec_from_args(launch.parse_args(
        ["--image-uri", IMAGE, "--role-arn", ROLE, "--bucket", "bkt"]), "loom-x"))
    assert "clip" not in [c["ChannelName"] for c in plain["InputDataConfig"]]


@pytest.mark.parametrize("flag, uri, ok", [
    ("--base-model", "s3://bkt/data/base-models/blip2/", True),
    ("--base-model", "s3://bkt/base-models/blip2/", False),     # the training role cannot read it
    ("--clip-artifact", "s3://bkt/models/clip-1/", False),    # models/ is write-only for the training role
    ("--clip-artifact", "s3://bkt/data/clip/", True),
    ("--images", "s3://other-bucket/images/", True),            # another bucket: its own policy decides
])
def test_channels_in_the_project_bucket_must_be_readable_by_the_training_role(flag, uri, ok):
    """terraform/modules/training/main.tf lets the role read data/ and checkpoints/ only: anything else in the
    bucket would fail inside the job with AccessDenied, after the instance started."""
    args = launch.parse_args(["--image-uri", IMAGE, "--role-arn", ROLE, "--bucket", "bkt", flag, uri])
    if ok:
        launch.spec_from_args(args, "job-1")
    else:
        with pytest.raises(jobs.JobConfigError, match="reads only data/"):
            launch.spec_from_args(args, "job-1")
