"""The shared SageMaker job helpers: retries, S3 URIs, uploads that skip, names, tags, waiting."""

from __future__ import annotations

import pytest
from moto import mock_aws

from operations import sagemaker_jobs as jobs
from operations.sagemaker_jobs import JobConfigError

REGION = "us-east-1"


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = jobs.aws_client("s3", region=REGION)
        client.create_bucket(Bucket="loom-test")
        yield client


def test_clients_use_standard_retries(s3):
    retries = s3.meta.config.retries
    assert retries["mode"] == "standard"
    assert retries["total_max_attempts"] == jobs.TOTAL_MAX_ATTEMPTS


@pytest.mark.parametrize("uri,expected", [
    ("s3://loom-data/a/b.csv", ("loom-data", "a/b.csv")),
    ("s3://loom-data/", ("loom-data", "")),
    ("s3://loom-data", ("loom-data", "")),
])
def test_parse_s3_uri(uri, expected):
    assert jobs.parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["loom-data/a", "https://x/y", "s3://Bad_Bucket/x", "s3:///key", ""])
def test_parse_s3_uri_refuses_non_s3(uri):
    with pytest.raises(JobConfigError):
        jobs.parse_s3_uri(uri)


def test_prefix_and_uri_helpers():
    assert jobs.as_prefix("s3://b/x") == "s3://b/x/"
    assert jobs.as_prefix("s3://b/x//") == "s3://b/x/"
    assert jobs.s3_uri("b", "/data/train/") == "s3://b/data/train/"


def test_upload_skips_files_already_there_with_the_same_size(s3, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"a" * 10)
    (tmp_path / "b.jpg").write_bytes(b"b" * 20)
    (tmp_path / "notes.txt").write_text("not an image")
    first = jobs.upload_folder(s3, tmp_path, "s3://loom-test/data/images", "*.jpg", progress=False)
    assert sorted(first.uploaded) == ["data/images/a.jpg", "data/images/b.jpg"]
    assert first.skipped == [] and first.bytes_sent == 30

    (tmp_path / "b.jpg").write_bytes(b"B" * 21)  # changed size: sent again
    (tmp_path / "c.jpg").write_bytes(b"c")
    second = jobs.upload_folder(s3, tmp_path, "s3://loom-test/data/images/", "*.jpg", progress=False)
    assert sorted(second.uploaded) == ["data/images/b.jpg", "data/images/c.jpg"]
    assert second.skipped == ["data/images/a.jpg"]
    body = s3.get_object(Bucket="loom-test", Key="data/images/b.jpg")["Body"].read()
    assert body == b"B" * 21
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="loom-test")["Contents"]]
    assert "data/images/notes.txt" not in keys


def test_upload_folder_refuses_missing_or_empty_folder(s3, tmp_path):
    with pytest.raises(JobConfigError, match="not a folder"):
        jobs.upload_folder(s3, tmp_path / "nope", "s3://loom-test/x/")
    with pytest.raises(JobConfigError, match="no files"):
        jobs.upload_folder(s3, tmp_path, "s3://loom-test/x/", "*.jpg")


def test_job_names():
    from datetime import datetime, timezone

    assert jobs.default_job_name("train", datetime(2026, 11, 5, 14, 23, 1, tzinfo=timezone.utc)) == \
        "loom-train-20261105-142301"
    assert jobs.validate_job_name("a" * 63) == "a" * 63
    for bad in ("a" * 64, "has_underscore", "-leading", "trailing-", "", "dots.in.name"):
        with pytest.raises(JobConfigError, match="not valid"):
            jobs.validate_job_name(bad)


def test_parse_tags():
    assert jobs.parse_tags(["team=ml", " cost-center = 42 ", "empty="]) == [
        {"Key": "team", "Value": "ml"}, {"Key": "cost-center", "Value": "42"}, {"Key": "empty", "Value": ""},
    ]
    assert jobs.parse_tags(None) == []
    for bad, why in (("novalue", "key=value"), ("=x", "key=value"), ("aws:x=1", "not allowed")):
        with pytest.raises(JobConfigError, match=why):
            jobs.parse_tags([bad])
    with pytest.raises(JobConfigError, match="twice"):
        jobs.parse_tags(["a=1", "a=2"])


def test_backoff_grows_to_a_cap():
    delays = jobs.backoff_delays(initial=2, factor=2, maximum=10)
    assert [next(delays) for _ in range(5)] == [2, 4, 8, 10, 10]


def test_wait_reports_each_transition_once_and_backs_off():
    states = [
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"},
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"},
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training",
         "SecondaryStatusTransitions": [{"Status": "Training", "StatusMessage": "Training image download completed."}]},
        {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
    ]
    calls = iter(states)
    slept: list[float] = []
    lines: list[str] = []
    job = jobs.wait_for_job(lambda: next(calls), jobs.TRAINING_JOB, log=lines.append, sleep=slept.append,
                            delays=jobs.backoff_delays(1, 2, 3), clock=lambda: 0.0)
    assert job["TrainingJobStatus"] == "Completed"
    assert slept == [1, 2, 3]
    assert [line.split("  (")[0] for line in lines] == [
        "training job status: InProgress / Starting",
        "training job status: InProgress / Training: Training image download completed.",
        "training job status: Completed / Completed",
    ]


def test_wait_times_out_without_stopping_the_job():
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(TimeoutError, match="still InProgress"):
        jobs.wait_for_job(lambda: {"TransformJobStatus": "InProgress"}, jobs.TRANSFORM_JOB, log=lambda _: None,
                          sleep=lambda _: None, timeout_s=25, clock=lambda: next(ticks))


def test_failure_message_carries_the_reason():
    job = {"TransformJobStatus": "Failed", "FailureReason": "ClientError: model not found"}
    assert jobs.failure_message(job, jobs.TRANSFORM_JOB, "j1") == \
        "transform job j1 ended Failed: ClientError: model not found"
    assert "no FailureReason" in jobs.failure_message({"TransformJobStatus": "Stopped"}, jobs.TRANSFORM_JOB, "j")


# Instance types with local NVMe storage refuse VolumeKmsKeyId / KmsKeyId (API_ResourceConfig.html,
# API_TransformResources.html, API_CreateEndpointConfig.html); the list of such SageMaker types is
# https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html.
INSTANCE_STORAGE = {
    "ml.g5.2xlarge": True, "ml.g5.48xlarge": True, "ml.g6.xlarge": True, "ml.g6e.12xlarge": True,
    "ml.g4dn.xlarge": True, "ml.p3dn.24xlarge": True, "ml.p4d.24xlarge": True, "ml.p4de.24xlarge": True,
    "ml.p5.48xlarge": True, "ml.p5e.48xlarge": True, "ml.p5en.48xlarge": True, "ml.p6-b200.48xlarge": True,
    "ml.trn1.32xlarge": True, "ml.trn1n.32xlarge": True, "ml.c5d.xlarge": True, "ml.m5d.large": True,
    "ml.r5d.2xlarge": True, "ml.m6id.large": True, "ml.c6id.xlarge": True, "ml.c7gd.large": True, "ml.r6gd.xlarge": True,
    "ml.m5.xlarge": False, "ml.c5.2xlarge": False, "ml.c5n.xlarge": False, "ml.p3.2xlarge": False,
    "ml.g4ad.xlarge": True, "ml.inf2.xlarge": False, "ml.m7i.large": False, "ml.c6i.large": False, "ml.t3.medium": False,
}


@pytest.mark.parametrize("instance_type, expected", sorted(INSTANCE_STORAGE.items()))
def test_instance_storage_rule(instance_type, expected):
    assert jobs.has_instance_storage(instance_type) is expected
    key = "arn:aws:kms:us-east-1:123456789012:key/k"
    assert jobs.volume_kms_key(instance_type, key) == (None if expected else key)
    assert jobs.volume_kms_key(instance_type, None) is None


@pytest.mark.parametrize("bad", ["g5.2xlarge", "ml.g5", "", "ml..xlarge"])
def test_instance_storage_rule_refuses_non_instance_types(bad):
    with pytest.raises(JobConfigError, match="not a SageMaker instance type"):
        jobs.has_instance_storage(bad)


def test_terraform_instance_storage_module_applies_the_same_rule():
    """Terraform decides KmsKeyId with its own regex (HCL cannot import Python), in the one module the
    endpoint and search modules share (terraform/modules/instance_storage): same answers."""
    import re
    from pathlib import Path

    import hcl2

    main_tf = Path(__file__).resolve().parents[2] / "terraform" / "modules" / "instance_storage" / "main.tf"
    local = next(b for b in hcl2.loads(main_tf.read_text())["locals"] if "pattern" in b)
    pattern = local["pattern"].strip('"').encode().decode("unicode_escape")
    for instance_type, expected in INSTANCE_STORAGE.items():
        assert bool(re.search(pattern, instance_type)) is expected, (instance_type, pattern)
