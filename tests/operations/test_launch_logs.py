"""`loom launch --wait` shows the training job's CloudWatch log lines between its status changes.

Real botocore clients for CloudWatch Logs and SageMaker behind botocore's Stubber, which validates every
request and response against the real service models (moto's logs backend would accept requests the real
service refuses). The rules tested come from the CloudWatch Logs API reference, GetLogEvents: a page can be
partly full or empty while more events wait; the end of a stream is the returned nextForwardToken equal to
the nextToken sent; tokens expire after 24 hours
(https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_GetLogEvents.html), and
DescribeLogStreams/GetLogEvents answer ResourceNotFoundException for a group or stream that does not exist
(the `errors` of both operations in botocore's logs model). SageMaker names a training job's streams
`<job>/algo-<n>-<epoch>` in /aws/sagemaker/TrainingJobs.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber

from operations import launch
from operations import sagemaker_jobs as jobs
from operations.job_logs import TRAINING_LOG_GROUP, JobLogs

JOB = "loom-logs"
STREAM_A = f"{JOB}/algo-1-1764950000"
STREAM_B = f"{JOB}/algo-1-1764953600"  # a second stream appears later (a restarted job writes a new one)
T0 = 1764950000000


@pytest.fixture
def logs(fake_aws_credentials):
    client = jobs.aws_client("logs", region="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def streams(stub, *names, error=None):
    params = {"logGroupName": TRAINING_LOG_GROUP, "logStreamNamePrefix": JOB + "/"}
    if error:
        stub.add_client_error("describe_log_streams", error, "The specified log group does not exist.",
                              400, expected_params=params)
    else:
        stub.add_response("describe_log_streams", {"logStreams": [
            {"logStreamName": n, "creationTime": T0, "arn": f"arn:aws:logs:us-east-1:123456789012:log-group:"
             f"{TRAINING_LOG_GROUP}:log-stream:{n}", "storedBytes": 0} for n in names]}, params)


def events(stub, stream, sent_token, lines, returned_token, start_time=None):
    """One GetLogEvents page: `lines` are (offset ms, message)."""
    params = {"logGroupName": TRAINING_LOG_GROUP, "logStreamName": stream, "startFromHead": True}
    if sent_token:
        params["nextToken"] = sent_token
    if start_time is not None:
        params["startTime"] = start_time
    stub.add_response("get_log_events", {
        "events": [{"timestamp": T0 + ms, "message": text, "ingestionTime": T0 + ms + 5} for ms, text in lines],
        "nextForwardToken": returned_token, "nextBackwardToken": "b/0"}, params)


def test_a_group_not_created_yet_then_pages_until_the_token_repeats(logs):
    client, stub = logs
    tail = JobLogs(client, JOB, warn=pytest.fail)
    streams(stub, error="ResourceNotFoundException")        # the first job in the account creates the group
    assert tail.poll() == []
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(1, "loading the base model\n"), (2, "step 1 loss 2.31")], "f/1")
    events(stub, STREAM_A, "f/1", [], "f/2")                 # empty, but a new token: more may follow
    events(stub, STREAM_A, "f/2", [(3, "step 2 loss 1.90")], "f/3")
    events(stub, STREAM_A, "f/3", [], "f/3")                 # the same token back: the end for now
    assert tail.poll() == ["loading the base model", "step 1 loss 2.31", "step 2 loss 1.90"]
    streams(stub, STREAM_A)
    events(stub, STREAM_A, "f/3", [(4, "step 3 loss 1.52")], "f/4")
    events(stub, STREAM_A, "f/4", [], "f/4")
    assert tail.poll() == ["step 3 loss 1.52"]               # nothing shown twice
    streams(stub, STREAM_A)
    events(stub, STREAM_A, "f/4", [], "f/4")
    assert tail.poll() == []


def test_a_new_stream_is_followed_and_lines_interleave_by_time(logs):
    client, stub = logs
    tail = JobLogs(client, JOB, warn=pytest.fail)
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(1, "first instance")], "a/1")
    events(stub, STREAM_A, "a/1", [], "a/1")
    assert tail.poll() == ["first instance"]
    streams(stub, STREAM_A, STREAM_B)
    events(stub, STREAM_A, "a/1", [(10, "a late"), (30, "a later")], "a/2")
    events(stub, STREAM_A, "a/2", [], "a/2")
    events(stub, STREAM_B, None, [(20, "b resumed from checkpoint")], "b/1")
    events(stub, STREAM_B, "b/1", [], "b/1")
    assert tail.poll() == ["algo-1-1764950000 | a late", "algo-1-1764953600 | b resumed from checkpoint",
                           "algo-1-1764950000 | a later"]


def test_a_listed_stream_not_readable_yet_is_read_later(logs):
    client, stub = logs
    tail = JobLogs(client, JOB, warn=pytest.fail)
    streams(stub, STREAM_A)
    stub.add_client_error("get_log_events", "ResourceNotFoundException", "The specified log stream does not exist.")
    assert tail.poll() == []
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(1, "hello")], "f/1")
    events(stub, STREAM_A, "f/1", [], "f/1")
    assert tail.poll() == ["hello"]


def test_an_expired_token_restarts_at_the_last_timestamp_without_repeating(logs):
    client, stub = logs
    tail = JobLogs(client, JOB, warn=pytest.fail)
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(5, "x"), (5, "y")], "f/1")
    events(stub, STREAM_A, "f/1", [], "f/1")
    assert tail.poll() == ["x", "y"]
    streams(stub, STREAM_A)
    stub.add_client_error("get_log_events", "InvalidParameterException", "The specified nextToken is expired.")
    events(stub, STREAM_A, None, [(5, "x"), (5, "y"), (5, "z"), (6, "w")], "g/1", start_time=T0 + 5)
    events(stub, STREAM_A, "g/1", [], "g/1")
    assert tail.poll() == ["z", "w"]


def test_no_permission_is_said_once_and_the_wait_goes_on(logs):
    client, stub = logs
    warnings = []
    tail = JobLogs(client, JOB, warn=warnings.append)
    stub.add_client_error("describe_log_streams", "AccessDeniedException", "User is not authorized", 400)
    assert tail.poll() == [] and tail.poll() == []  # the second poll sends nothing (the Stubber has no more)
    assert len(warnings) == 1 and "logs:DescribeLogStreams and logs:GetLogEvents" in warnings[0]


def test_a_passing_failure_is_said_once_and_retried(logs):
    client, stub = logs
    warnings = []
    tail = JobLogs(client, JOB, warn=warnings.append)
    for _ in range(2):
        stub.add_client_error("describe_log_streams", "ServiceUnavailableException", "try later", 503)
    assert tail.poll() == [] and tail.poll() == []
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(1, "back")], "f/1")
    events(stub, STREAM_A, "f/1", [], "f/1")
    assert tail.poll() == ["back"]
    assert len(warnings) == 1 and "trying again" in warnings[0]


def test_a_failure_on_a_later_page_keeps_the_lines_already_read(logs):
    client, stub = logs
    warnings = []
    tail = JobLogs(client, JOB, warn=warnings.append)
    streams(stub, STREAM_A)
    events(stub, STREAM_A, None, [(1, "one"), (2, "two")], "f/1")
    stub.add_client_error("get_log_events", "ServiceUnavailableException", "try later", 503)
    assert tail.poll() == ["one", "two"]
    streams(stub, STREAM_A)
    events(stub, STREAM_A, "f/1", [(3, "three")], "f/2")  # goes on from the token of the page it had read
    events(stub, STREAM_A, "f/2", [], "f/2")
    assert tail.poll() == ["three"] and len(warnings) == 1


# ---------------------------------------------------------------------------------------------------------
# loom launch --wait, end to end with both clients stubbed

def description(status, secondary, message=None):
    now = datetime(2026, 12, 5, tzinfo=timezone.utc)
    job = {"TrainingJobName": JOB, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{JOB}",
           "ModelArtifacts": {"S3ModelArtifacts": f"s3://loom-test/models/{JOB}/output/model.tar.gz"},
           "TrainingJobStatus": status, "SecondaryStatus": secondary,
           "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
           "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
           "StoppingCondition": {"MaxRuntimeInSeconds": 86400}, "CreationTime": now}
    if message:
        job["SecondaryStatusTransitions"] = [{"Status": secondary, "StartTime": now, "StatusMessage": message}]
    if status == "Failed":
        job["FailureReason"] = "AlgorithmError: ExecuteUserScriptError"
    return job


@pytest.fixture
def stubbed_launch(fake_aws_credentials, monkeypatch):
    clients = {name: jobs.aws_client(name, region="us-east-1") for name in ("sagemaker", "logs")}
    stubs = {name: Stubber(client) for name, client in clients.items()}
    monkeypatch.setattr(jobs, "aws_client", lambda service, **_: clients[service])
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    for stub in stubs.values():
        stub.activate()
    stubs["sagemaker"].add_response("create_training_job", {"TrainingJobArn": description("x", "y")["TrainingJobArn"]})
    yield stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


ARGS = ["--image-uri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-training:abc", "--role-arn",
        "arn:aws:iam::123456789012:role/loom-sagemaker", "--bucket", "loom-test", "--job-name", JOB, "--wait"]


def test_launch_wait_interleaves_log_lines_with_status_changes(stubbed_launch, capsys):
    sm, lg = stubbed_launch["sagemaker"], stubbed_launch["logs"]
    describe = {"TrainingJobName": JOB}
    sm.add_response("describe_training_job", description("InProgress", "Starting"), describe)
    streams(lg, error="ResourceNotFoundException")
    sm.add_response("describe_training_job", description("InProgress", "Training", "Training in progress."), describe)
    streams(lg, STREAM_A)
    events(lg, STREAM_A, None, [(1, "loom_metric epoch=1 loss=2.31")], "f/1")
    events(lg, STREAM_A, "f/1", [], "f/1")
    sm.add_response("describe_training_job", description("InProgress", "Training", "Training in progress."), describe)
    streams(lg, STREAM_A)
    events(lg, STREAM_A, "f/1", [(2, "loom_metric epoch=2 loss=1.20"), (3, "merged; writing the artifact")], "f/2")
    events(lg, STREAM_A, "f/2", [], "f/2")
    sm.add_response("describe_training_job", description("Completed", "Completed"), describe)
    streams(lg, STREAM_A)
    events(lg, STREAM_A, "f/2", [(4, "done")], "f/3")            # the last lines, read with the final status
    events(lg, STREAM_A, "f/3", [], "f/3")
    assert launch.main(ARGS) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # an unexpected or malformed logs call would show up here
    out = [re.sub(r"  \(\+\d+s\)$", "", line) for line in captured.out.splitlines()]
    start = out.index("training job status: InProgress / Starting")
    assert out[start:] == [
        "training job status: InProgress / Starting",
        "training job status: InProgress / Training: Training in progress.",
        "loom_metric epoch=1 loss=2.31",
        "loom_metric epoch=2 loss=1.20",
        "merged; writing the artifact",
        "done",
        "training job status: Completed / Completed",
        f"s3://loom-test/models/{JOB}/output/model.tar.gz",
    ]


def test_launch_wait_no_logs_reads_no_log(stubbed_launch, capsys):
    sm = stubbed_launch["sagemaker"]
    sm.add_response("describe_training_job", description("Failed", "Failed"), {"TrainingJobName": JOB})
    assert launch.main([*ARGS, "--no-logs"]) == 1
    err = capsys.readouterr().err
    assert "ended Failed: AlgorithmError: ExecuteUserScriptError" in err
    assert "warning" not in err  # a logs call would find no stubbed answer and be reported as a warning
