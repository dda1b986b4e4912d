"""Terraform checks: fmt, validate, `terraform test` (mock provider) and a real apply / plan /
destroy against a local moto server, followed by boto3 checks of the wiring.

Terraform and the hashicorp/aws provider come with the machine image (never from a registry):
when either is missing every test here skips with a loud `SKIP:` line naming what is missing.
Nothing here can reach real AWS: the provider and boto3 only ever see http://127.0.0.1:<port>,
dummy credentials, no profile, and an HTTPS proxy that goes nowhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from fixtures_terraform import (ROOT, TERRAFORM, TF_DIR, _boto, _copy_module, _kill_group, _ok, _resources, _statements, _tf,
                                moto_tf_env)

pytestmark = pytest.mark.usefixtures("require_terraform")


ENDPOINT_NAME = "loom-endpoint"
BUCKET = "loom-data-123456789012-us-east-1"
MODEL_DATA_URL = f"s3://{BUCKET}/models/job-1/output/model.tar.gz"
IMAGE_TAG = "0123abc"
CLIP_DATA_URL = f"s3://{BUCKET}/models/clip-1/output/model.tar.gz"
CLIP_ENDPOINT_NAME = "loom-clip"  # modules/search: "${name_prefix}-clip"
FULL_LIFECYCLE = os.environ.get("LOOM_TF_MOTO_LIFECYCLE") == "1"
















@pytest.fixture(scope="session")
def tf_mock_dir(tmp_path_factory: pytest.TempPathFactory, tf_env: dict[str, str]) -> Path:
    workdir = _copy_module(tmp_path_factory.mktemp("tfmock") / "terraform")
    _ok(_tf(["init", "-backend=false", "-input=false", "-no-color"], workdir, tf_env), "terraform init")
    return workdir


@pytest.fixture(scope="session")
def tf_test_process(tf_mock_dir: Path, tf_env: dict[str, str]) -> subprocess.Popen[str]:
    """`terraform test` started early in the background: it overlaps the moto apply, which spends
    most of its time in the provider's S3 lifecycle steady-state wait (55 s by design)."""
    return subprocess.Popen(
        [TERRAFORM, "test", "-no-color"],
        cwd=tf_mock_dir,
        env=tf_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


# ---------------------------------------------------------------------------------------------
# fmt, validate, terraform test
# ---------------------------------------------------------------------------------------------
def test_terraform_fmt(tf_env: dict[str, str]) -> None:
    result = _tf(["fmt", "-check", "-recursive", "-diff", "-no-color"], TF_DIR, tf_env)
    _ok(result, "terraform fmt -check -recursive (run `terraform -chdir=terraform fmt -recursive`)")


def test_terraform_validate(tf_mock_dir: Path, tf_env: dict[str, str], tf_test_process: subprocess.Popen[str]) -> None:
    # Requesting tf_test_process starts `terraform test` now, so it runs beside the later tests.
    result = _tf(["validate", "-json", "-no-color"], tf_mock_dir, tf_env)
    report = json.loads(result.stdout)
    assert report["valid"], json.dumps(report["diagnostics"], indent=2)
    assert report["warning_count"] == 0, json.dumps(report["diagnostics"], indent=2)


def test_version_constraints_admit_the_shipped_tools() -> None:
    for versions_tf in [TF_DIR / "versions.tf", *sorted(TF_DIR.glob("modules/*/versions.tf"))]:
        text = versions_tf.read_text()
        assert 'source  = "hashicorp/aws"' in text, versions_tf
        assert 'version = ">= 5.40, < 6.0"' in text, f"{versions_tf}: AWS provider constraint must admit 5.100.0"
        assert 'required_version = ">= 1.9.0, < 2.0.0"' in text, f"{versions_tf}: must admit Terraform 1.11.4"
    providers = set()
    for tf_file in TF_DIR.rglob("*.tf"):
        if ".terraform" not in tf_file.parts:
            providers.update(line.split('"')[1] for line in tf_file.read_text().splitlines() if line.strip().startswith("source ") and "hashicorp/" in line)
    assert providers == {"hashicorp/aws"}, f"only the mirrored AWS provider is available offline: {providers}"
    modules = {p.parent.name for p in TF_DIR.glob("modules/*/main.tf")}
    assert modules == {"kms", "storage", "registry", "training", "endpoint", "api", "ci", "search"}
    for module in TF_DIR.glob("modules/*"):
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (module / name).is_file(), f"{module.name} lacks {name}"


def test_every_variable_is_typed_described_and_validated_where_it_matters() -> None:
    import hcl2

    for variables_tf in [TF_DIR / "variables.tf", *sorted(TF_DIR.glob("modules/*/variables.tf"))]:
        for block in hcl2.loads(variables_tf.read_text()).get("variable", []):
            for quoted_name, body in block.items():
                name = quoted_name.strip('"')
                where = f"{variables_tf.relative_to(ROOT)}: variable {name}"
                assert "type" in body, f"{where} has no type"
                assert body.get("description"), f"{where} has no description"
                is_free_form = name in {"tags", "environment", "model_environment"} or body["type"].strip('"') in ("${bool}", "bool")
                assert is_free_form or body.get("validation"), f"{where} has no validation"


def test_terraform_test_with_mock_provider(tf_test_process: subprocess.Popen[str]) -> None:
    try:
        output, _ = tf_test_process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        _kill_group(tf_test_process)
        output, _ = tf_test_process.communicate()
        pytest.fail("terraform test did not finish in 300 s:\n" + output[-6000:])
    finally:
        _kill_group(tf_test_process)
    assert tf_test_process.returncode == 0, output[-8000:]
    assert "Success!" in output and " 0 failed" in output, output[-4000:]
    summary = [line for line in output.splitlines() if line.startswith("Success!")]
    passed = int(summary[0].split()[1])
    assert passed >= 25, f"expected the full suite of runs, got: {summary}"








@pytest.mark.slow
def test_apply_plan_destroy_against_moto(tmp_path: Path, tf_env: dict[str, str], moto_server: str) -> None:
    env = moto_tf_env(tf_env, moto_server)
    assert env["AWS_ENDPOINT_URL"] == moto_server and moto_server.startswith("http://127.0.0.1:")

    workdir = _copy_module(tmp_path / "terraform")
    # Fail fast on an API moto lacks instead of retrying for minutes.
    (workdir / "zz_test_override.tf").write_text('provider "aws" {\n  max_retries = 2\n}\n')
    if not FULL_LIFECYCLE:
        # The provider waits at least 55 s after creating a bucket lifecycle configuration (ten
        # identical reads 5 s apart, by design, for S3's eventual consistency). The lifecycle
        # rules are asserted by `terraform test`; here they are left out to keep the suite short.
        # LOOM_TF_MOTO_LIFECYCLE=1 applies them too.
        (workdir / "modules" / "storage" / "zz_test_override.tf").write_text(
            'resource "aws_s3_bucket_lifecycle_configuration" "data" {\n  count = 0\n}\n\n'
            'resource "aws_s3_bucket_lifecycle_configuration" "logs" {\n  count = 0\n}\n'
        )
    lambda_zip = tmp_path / "lambda.zip"
    with zipfile.ZipFile(lambda_zip, "w") as archive:  # moto stores the zip; it never runs it
        archive.writestr("inference/api/handler.py", "def handler(event, context):\n    return {}\n")
    tfvars = tmp_path / "moto.tfvars.json"
    tfvars.write_text(
        json.dumps(
            {
                "model_data_url": MODEL_DATA_URL,
                "inference_image_tag": IMAGE_TAG,
                "github_repository": "example-org/loom",
                "lambda_zip_path": str(lambda_zip),
                "kms_deletion_window_days": 7,
                # moto, like S3, writes access logs into the log bucket: let destroy empty it.
                "force_destroy": True,
                # The search module rides on the same apply (a second whole-stack apply would double the
                # run time): Serverless Inference CLIP endpoint, its role, POST /search, the Lambda's grant.
                "search": {"model_data_url": CLIP_DATA_URL, "backend": "embedded"},
                # POST /restyle too (off by default; `terraform test` checks the default has none of it).
                "enable_restyle": True,
            }
        )
    )
    var_file = f"-var-file={tfvars}"
    timings: dict[str, float] = {}

    def timed(step: str, args: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        result = _tf(args, workdir, env, timeout=timeout)
        timings[step] = round(time.monotonic() - start, 1)
        return result

    _ok(timed("init", ["init", "-input=false", "-no-color"], 120), "terraform init")
    _ok(timed("apply", ["apply", "-auto-approve", "-input=false", "-no-color", var_file], 300), "terraform apply")
    plan = timed("plan", ["plan", "-detailed-exitcode", "-input=false", "-no-color", var_file], 120)
    assert plan.returncode == 0, f"second plan is not empty (exit {plan.returncode}):\n{plan.stdout[-6000:]}\n{plan.stderr[-3000:]}"

    outputs = {k: v["value"] for k, v in json.loads(_tf(["output", "-json"], workdir, env).stdout).items()}
    try:
        _check_wiring(_boto(moto_server), outputs)
    finally:
        destroy = timed("destroy", ["destroy", "-auto-approve", "-input=false", "-no-color", var_file], 300)
        print(f"\nterraform against moto, seconds: {timings}")
    _ok(destroy, "terraform destroy")
    _check_nothing_left(_boto(moto_server))


# ---------------------------------------------------------------------------------------------
# Rollouts outside Terraform: the endpoint module, `loom rollout` and the state moves, against moto
# ---------------------------------------------------------------------------------------------
_ROLLOUT_ROOT = """
provider "aws" {
  max_retries = 2
}

variable "model_data_url" {
  type = string
}

variable "rollouts_outside_terraform" {
  type    = bool
  default = false
}

module "endpoint" {
  source                     = "./modules/endpoint"
  endpoint_name              = "%(endpoint)s"
  account_id                 = "123456789012"
  partition                  = "aws"
  region                     = "us-east-1"
  bucket_name                = "%(bucket)s"
  kms_key_arn                = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  repository_arn             = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri                  = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:%(tag)s"
  model_data_url             = var.model_data_url
  rollouts_outside_terraform = var.rollouts_outside_terraform
  tags                       = { project = "loom" }
}
"""


def _changes(plan_json: str) -> list[tuple[str, str | None, list[str]]]:
    """(address, previous address, actions) of every resource a saved plan changes or moves."""
    changes = json.loads(plan_json)["resource_changes"]
    return [(c["address"], c.get("previous_address"), c["change"]["actions"])
            for c in changes if c["change"]["actions"] != ["no-op"] or c.get("previous_address")]


@pytest.mark.slow
def test_rollouts_outside_terraform_against_moto(tmp_path: Path, tf_env: dict[str, str], moto_server: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The problem and the fix, end to end: after a `loom rollout` a default Terraform plan moves the
    endpoint back to Terraform's configuration (with the provider's UpdateEndpoint, which sends no
    RetainAllVariantProperties); with rollouts_outside_terraform = true, reached by one state move, the
    plan is empty, also after an instance type change that re-registered autoscaling. The `moved` block
    keeps endpoints created before the two endpoint blocks existed."""
    from moto_harness import aws_env

    from operations import rollout

    env = moto_tf_env(tf_env, moto_server)
    workdir = tmp_path / "tf"
    shutil.copytree(TF_DIR / "modules" / "endpoint", workdir / "modules" / "endpoint")
    (workdir / "main.tf").write_text(_ROLLOUT_ROOT % {"endpoint": ENDPOINT_NAME, "bucket": BUCKET, "tag": IMAGE_TAG})
    variables = ["-var", f"model_data_url={MODEL_DATA_URL}"]
    opted_in = [*variables, "-var", "rollouts_outside_terraform=true"]
    address = "module.endpoint.aws_sagemaker_endpoint"
    timings: dict[str, float] = {}

    def tf(step: str, *args: str) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        result = _tf([*args, "-no-color"] if args[0] != "state" else list(args), workdir, env, timeout=120)
        timings[step] = round(time.monotonic() - start, 1)
        return result

    def rollout_main(*argv: str) -> int:
        clients = rollout.Clients.create("us-east-1", endpoint_url=moto_server, aws_access_key_id="test",
                                         aws_secret_access_key="test")
        return rollout.main(["--endpoint", ENDPOINT_NAME, *argv], clients=clients, sleep=lambda s: None)

    for key, value in aws_env(moto_server).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    sagemaker = _boto(moto_server)("sagemaker")

    _ok(tf("init", "init", "-input=false"), "terraform init")
    _ok(tf("apply", "apply", "-auto-approve", "-input=false", *variables), "terraform apply")
    try:
        terraform_config = sagemaker.describe_endpoint(EndpointName=ENDPOINT_NAME)["EndpointConfigName"]

        # State written before the endpoint had two blocks: the moved block adopts it, changing nothing.
        _ok(tf("state mv (old address)", "state", "mv", f"{address}.this[0]", f"{address}.this"), "state mv")
        _ok(tf("plan (moved)", "plan", "-input=false", "-out=moved.tfplan", *variables), "terraform plan")
        assert _changes(tf("show", "show", "-json", "moved.tfplan").stdout) == [
            (f"{address}.this[0]", f"{address}.this", ["no-op"])]
        _ok(tf("apply (moved)", "apply", "-input=false", "moved.tfplan"), "terraform apply")

        # A rollout of a new artifact; by default Terraform's next plan undoes it.
        assert rollout_main("--model-data", f"s3://{BUCKET}/models/job-2/output/model.tar.gz") == 0
        rolled = sagemaker.describe_endpoint(EndpointName=ENDPOINT_NAME)["EndpointConfigName"]
        assert rolled != terraform_config and rolled.startswith(f"{ENDPOINT_NAME}-r")
        _ok(tf("plan (default)", "plan", "-input=false", "-out=default.tfplan", *variables), "terraform plan")
        default_plan = json.loads(tf("show", "show", "-json", "default.tfplan").stdout)
        undo = [c["change"] for c in default_plan["resource_changes"] if c["address"] == f"{address}.this[0]"][0]
        assert undo["actions"] == ["update"]
        assert (undo["before"]["endpoint_config_name"], undo["after"]["endpoint_config_name"]) == (rolled, terraform_config)

        # Opting in: one state move, then the plan leaves the endpoint alone: the role may read all of
        # models/, and the guard against deleting the served configuration appears.
        _ok(tf("state mv (opt in)", "state", "mv", f"{address}.this[0]", f"{address}.rollouts_outside_terraform[0]"), "state mv")
        _ok(tf("plan (opt in)", "plan", "-input=false", "-out=optin.tfplan", *opted_in), "terraform plan")
        assert sorted(_changes(tf("show", "show", "-json", "optin.tfplan").stdout)) == [
            ("module.endpoint.aws_iam_role_policy.model", None, ["update"]),
            ("module.endpoint.terraform_data.rollout_guard[0]", None, ["create"])]
        _ok(tf("apply (opt in)", "apply", "-input=false", "optin.tfplan"), "terraform apply")
        assert tf("plan (after opt in)", "plan", "-input=false", "-detailed-exitcode", *opted_in).returncode == 0
        # Terraform-side model changes now make a model and configuration the endpoint does not use (the
        # guard lets them through: the endpoint serves a `loom rollout` configuration).
        other = ["-var", f"model_data_url=s3://{BUCKET}/models/job-3/output/model.tar.gz", *opted_in[2:]]
        _ok(tf("plan (terraform-side change)", "plan", "-input=false", "-out=other.tfplan", *other), "terraform plan")
        assert {a for a, _, _ in _changes(tf("show", "show", "-json", "other.tfplan").stdout)} == {
            "module.endpoint.aws_sagemaker_model.this", "module.endpoint.aws_sagemaker_endpoint_configuration.this"}

        # An instance type change deregisters autoscaling and registers it again as Terraform made it.
        assert rollout_main("--instance-type", "ml.g6.2xlarge") == 0
        endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT_NAME)
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        assert config["ProductionVariants"][0]["InstanceType"] == "ml.g6.2xlarge"
        second = tf("plan (after type change)", "plan", "-input=false", "-detailed-exitcode", *opted_in)
        assert second.returncode == 0, second.stdout[-4000:]
    finally:
        destroy = tf("destroy", "destroy", "-auto-approve", "-input=false", *opted_in)
        print(f"\nrollouts outside terraform against moto, seconds: {timings}")
    _ok(destroy, "terraform destroy")






def _check_wiring(client, outputs: dict) -> None:
    sagemaker, lam, iam = client("sagemaker"), client("lambda"), client("iam")
    apigw, autoscaling, ecr, s3 = client("apigatewayv2"), client("application-autoscaling"), client("ecr"), client("s3")

    # Outputs the README and operations.launch rely on.
    assert outputs["endpoint_name"] == ENDPOINT_NAME
    assert outputs["bucket_name"] == BUCKET
    assert outputs["training_repository_url"].endswith("/loom-training")
    assert outputs["inference_repository_url"].endswith("/loom-inference")
    assert outputs["inference_image_uri"] == f"{outputs['inference_repository_url']}:{IMAGE_TAG}"
    for role in ("training_role_arn", "endpoint_role_arn", "lambda_role_arn", "ci_role_arn"):
        assert outputs[role].startswith("arn:aws:iam::123456789012:role/"), role
    assert outputs["api_url"], "api_url output is empty"

    # Endpoint -> config -> model.
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT_NAME)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    assert variant["ModelName"] == outputs["model_name"]
    assert "KmsKeyId" not in config, "ml.g5 rejects KmsKeyId (NVMe instance storage)"
    model = sagemaker.describe_model(ModelName=outputs["model_name"])
    assert model["PrimaryContainer"]["Image"] == outputs["inference_image_uri"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA_URL
    # The server gives up loading 120 s before SageMaker's start-up health check window ends.
    assert model["PrimaryContainer"]["Environment"] == {"MAX_BODY_MB": "20", "MODEL_LOAD_TIMEOUT": "1380"}
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 1500
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 1200
    deployment = endpoint["LastDeploymentConfig"]
    assert deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert {a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]} == {
        f"{ENDPOINT_NAME}-invocation-5xx", f"{ENDPOINT_NAME}-model-latency-p90"}
    assert model["ExecutionRoleArn"] == outputs["endpoint_role_arn"]

    # Model role: only its artifact prefix (plus batch input) readable, only its image pullable.
    model_role = outputs["endpoint_role_arn"].split("/")[-1]
    model_policy = _statements(iam.get_role_policy(RoleName=model_role, PolicyName="model-and-batch")["PolicyDocument"])
    assert _resources(model_policy, "s3:GetObject") == {
        f"arn:aws:s3:::{BUCKET}/models/job-1/output/*",
        f"arn:aws:s3:::{BUCKET}/batch/input/*",
    }
    inference_repo = ecr.describe_repositories(repositoryNames=["loom-inference"])["repositories"][0]
    assert _resources(model_policy, "ecr:BatchGetImage") == {inference_repo["repositoryArn"]}

    # Lambda: environment names the endpoint; role names exactly this endpoint and this model.
    function = lam.get_function_configuration(FunctionName=outputs["lambda_function_name"])
    env = function["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == ENDPOINT_NAME
    assert env["SEARCH_ENDPOINT_NAME"] == CLIP_ENDPOINT_NAME and env["SEARCH_BACKEND"] == "embedded"
    assert env["BEDROCK_MODEL_ID"] == "us.anthropic.claude-sonnet-5-5"
    assert env["POWERTOOLS_SERVICE_NAME"] == "loom-api" and env["DESCRIPTION_BACKEND"] == "bedrock"
    assert (env["RESTYLE_MODEL_ID"], env["RESTYLE_REGION"], env["RESTYLE_BUCKET"]) == (
        "stability.sd3-5-large-v1:0", "us-west-2", BUCKET)
    assert function["Handler"] == "inference.api.handler.handler" and function["Runtime"] == "python3.12"
    assert function["Timeout"] < 30 and function["TracingConfig"]["Mode"] == "Active"
    assert function["LoggingConfig"]["LogFormat"] == "JSON" and function["LoggingConfig"]["ApplicationLogLevel"] == "INFO"
    # No reservation by default: a new account (concurrency quota 10) refuses any.
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=function["FunctionName"])
    lambda_role = outputs["lambda_role_arn"].split("/")[-1]
    lambda_policy = _statements(
        iam.get_role_policy(RoleName=lambda_role, PolicyName="invoke-endpoint-and-model")["PolicyDocument"]
    )
    assert _resources(lambda_policy, "sagemaker:InvokeEndpoint") == {endpoint["EndpointArn"]}
    assert _resources(lambda_policy, "bedrock:InvokeModel") == {
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-5-5",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-5-5",
    }

    # POST /restyle: the Stability model in its Region, restyle/ of the bucket, the key through S3 only.
    restyle_policy = _statements(iam.get_role_policy(RoleName=lambda_role, PolicyName="restyle")["PolicyDocument"])
    assert _resources(restyle_policy, "bedrock:InvokeModel") == {
        "arn:aws:bedrock:us-west-2::foundation-model/stability.sd3-5-large-v1:0"}
    assert _resources(restyle_policy, "s3:PutObject") == {f"arn:aws:s3:::{BUCKET}/restyle/*"}
    assert _resources(restyle_policy, "kms:GenerateDataKey") == {outputs["kms_key_arn"]}

    # HTTP API: every route -> the Lambda integration, IAM auth, payload 2.0, 30 s.
    api_id = next(a["ApiId"] for a in apigw.get_apis()["Items"] if a["Name"] == "loom-api")
    routes = {r["RouteKey"]: r for r in apigw.get_routes(ApiId=api_id)["Items"]}
    assert set(routes) == {"POST /describe", "POST /attributes", "POST /search", "POST /tags", "POST /interrogate",
                           "POST /restyle"}
    assert sorted(routes) == outputs["api_routes"]
    for route in routes.values():
        assert route["AuthorizationType"] == "AWS_IAM"
        integration = apigw.get_integration(ApiId=api_id, IntegrationId=route["Target"].split("/")[-1])
        assert function["FunctionArn"] in integration["IntegrationUri"]
        assert integration["PayloadFormatVersion"] == "2.0" and integration["TimeoutInMillis"] == 30000
    stage = apigw.get_stage(ApiId=api_id, StageName="$default")
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 5  # derived from 10 executions, 28 s timeout
    assert stage["AccessLogSettings"]["DestinationArn"].endswith(":log-group:/aws/apigateway/loom-api")

    _check_search_wiring(client, outputs, function, lambda_role)

    # Autoscaling on the endpoint variant.
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        (f"endpoint/{ENDPOINT_NAME}/variant/AllTraffic", 1, 2)
    ]
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [
        p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for p in policies
    ] == ["SageMakerVariantInvocationsPerInstance"]

    # SageMaker's log groups exist before SageMaker writes to them: encrypted, with retention.
    groups = {g["logGroupName"]: g for g in client("logs").describe_log_groups(logGroupNamePrefix="/aws/sagemaker/")["logGroups"]}
    assert set(groups) == {f"/aws/sagemaker/Endpoints/{ENDPOINT_NAME}", "/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TransformJobs"}
    assert all(g.get("kmsKeyId") == outputs["kms_key_arn"] and g.get("retentionInDays") == 365 for g in groups.values())

    # Alarms on the endpoint, the Lambda and the API.
    alarms = {a["AlarmName"] for a in client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert {"loom-api-lambda-errors", "loom-api-lambda-throttles", "loom-api-lambda-duration", "loom-api-5xx",
            "loom-api-latency-p90", f"{ENDPOINT_NAME}-invocation-5xx"} <= alarms

    # Registry and bucket defaults.
    for repo in ecr.describe_repositories()["repositories"]:
        assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"]["scanOnPush"]
        assert repo["encryptionConfiguration"]["encryptionType"] == "KMS"
    sse = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == outputs["kms_key_arn"]
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    assert any(
        s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in _statements(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    )
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert s3.get_bucket_logging(Bucket=BUCKET)["LoggingEnabled"]["TargetBucket"] == f"{BUCKET}-logs"
    if FULL_LIFECYCLE:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
        assert {r["ID"] for r in rules} >= {"expire-checkpoints", "expire-batch-output", "expire-data-capture"}

    # CI role: only this repository's main branch and v* tags, only the two repositories.
    ci_role = iam.get_role(RoleName=outputs["ci_role_arn"].split("/")[-1])["Role"]
    trust = ci_role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    subjects = trust["Statement"][0]["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"]
    assert set(subjects) == {"repo:example-org/loom:ref:refs/heads/main", "repo:example-org/loom:ref:refs/tags/v*"}
    ci_policy = _statements(iam.get_role_policy(RoleName=ci_role["RoleName"], PolicyName="push-loom-images")["PolicyDocument"])
    repo_arns = {r["repositoryArn"] for r in ecr.describe_repositories()["repositories"]}
    assert _resources(ci_policy, "ecr:PutImage") == repo_arns and len(repo_arns) == 2


def _check_search_wiring(client, outputs: dict, function: dict, lambda_role: str) -> None:
    """modules/search with the embedded backend: a Serverless Inference CLIP endpoint on its own model and
    role, and the API Lambda allowed to invoke exactly that endpoint."""
    sagemaker, iam = client("sagemaker"), client("iam")
    endpoint = sagemaker.describe_endpoint(EndpointName=CLIP_ENDPOINT_NAME)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    # Serverless Inference: memory and concurrency, no instance type, no key (AWS refuses KmsKeyId there).
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}, variant
    assert "InstanceType" not in variant and "KmsKeyId" not in config
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == CLIP_DATA_URL
    assert model["PrimaryContainer"]["Image"] == outputs["inference_image_uri"]
    assert model["EnableNetworkIsolation"] is True
    clip_role = model["ExecutionRoleArn"].split("/")[-1]
    assert clip_role != outputs["endpoint_role_arn"].split("/")[-1], "the CLIP model has its own role"
    clip_policy = _statements(iam.get_role_policy(RoleName=clip_role, PolicyName="clip-model")["PolicyDocument"])
    assert _resources(clip_policy, "s3:GetObject") == {f"arn:aws:s3:::{BUCKET}/models/clip-1/output/*"}
    search_policy = _statements(iam.get_role_policy(RoleName=lambda_role, PolicyName="search")["PolicyDocument"])
    assert _resources(search_policy, "sagemaker:InvokeEndpoint") == {endpoint["EndpointArn"]}
    assert not any(a.startswith(("es:", "aoss:")) for s in search_policy for a in (
        s["Action"] if isinstance(s["Action"], list) else [s["Action"]])), "embedded backend: no OpenSearch grant"

    # POST /search, /tags, /interrogate: the same Lambda, proxy integration, a permission for exactly each route.
    apigw = client("apigatewayv2")
    api_id = next(a["ApiId"] for a in apigw.get_apis()["Items"] if a["Name"] == "loom-api")
    grants = _statements(client("lambda").get_policy(FunctionName=function["FunctionName"])["Policy"])
    for path in ("search", "tags", "interrogate"):
        route = next(r for r in apigw.get_routes(ApiId=api_id)["Items"] if r["RouteKey"] == f"POST /{path}")
        integration = apigw.get_integration(ApiId=api_id, IntegrationId=route["Target"].split("/")[-1])
        assert integration["IntegrationType"] == "AWS_PROXY" and function["FunctionArn"] in integration["IntegrationUri"]
        grant = next(g for g in grants if g["Sid"] == f"AllowHttpApi-POST-{path}")
        assert grant["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(f":{api_id}/*/POST/{path}")


def _check_nothing_left(client) -> None:
    sagemaker = client("sagemaker")
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []
    assert client("s3").list_buckets()["Buckets"] == []
    assert client("ecr").describe_repositories()["repositories"] == []
    assert client("lambda").list_functions()["Functions"] == []
    assert client("apigatewayv2").get_apis()["Items"] == []
    assert client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert client("logs").describe_log_groups()["logGroups"] == []
    iam = client("iam")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("loom-")] == []
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    kms = client("kms")
    states = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] for k in kms.list_keys()["Keys"]]
    assert all(state == "PendingDeletion" for state in states), states  # KMS never deletes at once
