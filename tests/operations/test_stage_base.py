"""`loom stage-base`: a bf16 copy of a base model staged in S3 as the training job's `base_model` channel
(moto stands in for S3), and the `train` program's side: a channel is loaded offline."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from operations import sagemaker_jobs as jobs

BUCKET = "loom-test-bucket"


@pytest.mark.slow
def test_stage_base_writes_a_bf16_copy_under_the_prefix(untrained_artifact, tmp_path, fake_aws_credentials,
                                                       monkeypatch, capsys):
    from safetensors import safe_open

    from operations.cli import main as loom

    with mock_aws():
        s3 = jobs.aws_client("s3", region="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        code = loom(["stage-base", "--base-model", str(untrained_artifact), "--s3-uri",
                     f"s3://{BUCKET}/base-models/tiny", "--region", "us-east-1"])
        assert code == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[-1] == f"s3://{BUCKET}/base-models/tiny/"
        summary = json.loads(lines[0])
        assert summary["dtype"] == "bf16" and summary["uploaded"] >= 3
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="base-models/tiny/")["Contents"]}
        assert {"base-models/tiny/config.json", "base-models/tiny/model.safetensors",
                "base-models/tiny/processor_config.json"} <= keys
        s3.download_file(BUCKET, "base-models/tiny/model.safetensors", str(tmp_path / "model.safetensors"))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert dtypes == {"BF16"}


def test_a_bad_s3_uri_is_refused(fake_aws_credentials, capsys):
    from operations.stage_base import main

    assert main(["--base-model", "x", "--s3-uri", "not-an-s3-uri"]) == 2
    assert "error:" in capsys.readouterr().err
