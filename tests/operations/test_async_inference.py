"""`loom async`: the InvokeEndpointAsync request (checked by botocore's Stubber against the real
sagemaker-runtime model), the shard upload and the result collection against moto's S3, and the shard's
round trip through the real inference app (the same JSON Lines format as Batch Transform)."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from endpoint_contract import RGB_PNG, RecordingPredictor

from inference.server.app import create_app
from operations import async_inference

BUCKET = "loom-data-123456789012-us-east-1"
ENDPOINT = "loom-endpoint-async"
OUTPUT = f"s3://{BUCKET}/async/output/{ENDPOINT}/abc.out"
FAILURE = f"s3://{BUCKET}/async/failure/{ENDPOINT}/abc-error.out"


@pytest.fixture
def aws(fake_aws_credentials):
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
        with Stubber(runtime) as stub:
            yield s3, runtime, stub
            stub.assert_no_pending_responses()


def write_shard(path, ids):
    image = base64.b64encode(RGB_PNG).decode()
    path.write_text("".join(json.dumps({"id": i, "image": image, "attributes": ["Fit"]}) + "\n" for i in ids))
    return path


def submitted(aws, tmp_path, ids=("38642", "1544")):
    s3, runtime, stub = aws
    shard = write_shard(tmp_path / "shard-0001.jsonl", ids)
    expected = {"EndpointName": ENDPOINT, "InputLocation": ANY, "ContentType": "application/jsonlines",
                "Accept": "application/jsonlines", "InvocationTimeoutSeconds": 3600, "InferenceId": ANY}
    stub.add_response("invoke_endpoint_async", {"InferenceId": "shard-0001-x", "OutputLocation": OUTPUT,
                                                "FailureLocation": FAILURE}, expected)
    return shard, async_inference.submit(shard, endpoint=ENDPOINT, bucket=BUCKET, s3=s3, runtime=runtime)


def test_submit_uploads_the_shard_and_invokes_the_endpoint(aws, tmp_path):
    s3 = aws[0]
    shard, receipt = submitted(aws, tmp_path)
    assert receipt["input"].startswith(f"s3://{BUCKET}/async/input/{ENDPOINT}/shard-0001-")
    bucket, key = async_inference.split_s3_uri(receipt["input"])
    uploaded = s3.get_object(Bucket=bucket, Key=key)
    assert uploaded["Body"].read() == shard.read_bytes() and uploaded["ContentType"] == "application/jsonlines"
    assert (receipt["output"], receipt["failure"], receipt["ids"]) == (OUTPUT, FAILURE, ["38642", "1544"])


def test_collect_is_pending_then_writes_what_the_server_answered(aws, tmp_path):
    s3 = aws[0]
    shard, receipt = submitted(aws, tmp_path)
    out = tmp_path / "results.jsonl"
    assert async_inference.collect(receipt, out, s3=s3)["state"] == "pending" and not out.exists()
    # What the container writes to OutputLocation: the real app's answer to the uploaded shard.
    response = create_app(RecordingPredictor()).test_client().post(
        "/invocations", data=shard.read_bytes(), content_type="application/jsonlines",
        headers={"Accept": "application/jsonlines"})
    assert response.status_code == 200
    bucket, key = async_inference.split_s3_uri(OUTPUT)
    s3.put_object(Bucket=bucket, Key=key, Body=response.get_data())
    result = async_inference.collect(receipt, out, s3=s3)
    assert result == {"state": "done", "products": 2, "errors": 0, "out": str(out)}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["38642", "1544"]


def test_collect_reports_a_failure_and_refuses_a_foreign_result(aws, tmp_path):
    s3 = aws[0]
    _, receipt = submitted(aws, tmp_path)
    bucket, key = async_inference.split_s3_uri(FAILURE)
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"error": "the model did not answer within REQUEST_TIMEOUT_S"}')
    result = async_inference.collect(receipt, tmp_path / "r.jsonl", s3=s3)
    assert result["state"] == "failed" and "REQUEST_TIMEOUT_S" in result["reason"]
    bucket, key = async_inference.split_s3_uri(OUTPUT)
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"id": "other", "attributes": {}}\n')
    with pytest.raises(ValueError, match="does not answer this shard"):
        async_inference.collect(receipt, tmp_path / "r.jsonl", s3=s3)


def test_collect_waits_by_polling_until_its_deadline(aws, tmp_path):
    s3 = aws[0]
    _, receipt = submitted(aws, tmp_path)
    now, sleeps = [0.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    result = async_inference.collect(receipt, tmp_path / "r.jsonl", s3=s3, wait_s=65, poll_s=30,
                                     clock=lambda: now[0], sleep=sleep)
    assert result["state"] == "pending" and sleeps == [30, 30, 5]


def test_a_shard_that_is_not_products_is_refused_before_any_call(aws, tmp_path):
    s3, runtime, _ = aws
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x"}\n')
    with pytest.raises(ValueError, match="line 1 is not a product"):
        async_inference.submit(bad, endpoint=ENDPOINT, bucket=BUCKET, s3=s3, runtime=runtime)
    with pytest.raises(ValueError, match="timeout"):
        async_inference.submit(write_shard(tmp_path / "s.jsonl", ["1"]), endpoint=ENDPOINT, bucket=BUCKET, s3=s3,
                               runtime=runtime, timeout_s=3601)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_loom_async_is_a_command():
    from operations.cli import COMMANDS

    assert COMMANDS["async"][0] == "operations.async_inference"
    with pytest.raises(SystemExit) as info:
        async_inference.main(["--help"])
    assert info.value.code == 0
