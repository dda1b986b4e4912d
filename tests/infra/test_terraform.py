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
from fixtures_terraform import (AWS_PROVIDER_DIR, ROOT, TERRAFORM, TF_DIR, _boto, _copy_module, _kill_group, _ok, _resources,
                                _statements, _tf, moto_tf_env)

pytestmark = pytest.mark.usefixtures("require_terraform")


ENDPOINT_NAME = "loom-endpoint"
BUCKET = "loom-data-123456789012-us-east-1"
MODEL_DATA_URL = f"s3://{BUCKET}/models/job-1/output/model.tar.gz"
IMAGE_TAG = "0123abc"
CLIP_DATA_URL = f"s3://{BUCKET}/models/clip-1/output/model.tar.gz"
CLIP_ENDPOINT_NAME = "loom-clip"  # modules/search: "${name_prefix}-clip"
CLIP_IMAGE_TAG = "0123abc-cpu"  # the serverless CLIP endpoint's CPU build (Serverless Inference: CPU only, 10 GB)
ASYNC_ENDPOINT_NAME = "loom-endpoint-async"  # modules/endpoint/async.tf: "${endpoint_name}-async"
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
    """Every versions.tf asks for AWS provider 5.66 or newer and still admits the mirrored 5.100.0.

    5.66.0 raised aws_sagemaker_endpoint's create and update waiters from 10 to 60 minutes
    (hashicorp/terraform-provider-aws CHANGELOG.md, 5.66.0, #39090); below it a large model's start-up or a
    blue/green rollout fails the apply. The resource has no `timeouts` block (checked against the 5.100.0
    schema in test_endpoint_resource_has_no_timeouts_block), so the floor is the only lever.
    """
    for versions_tf in [TF_DIR / "versions.tf", *sorted(TF_DIR.glob("modules/*/versions.tf"))]:
        text = versions_tf.read_text()
        assert 'source  = "hashicorp/aws"' in text, versions_tf
        assert 'version = ">= 5.66, < 6.0"' in text, f"{versions_tf}: AWS provider constraint must be >= 5.66 (endpoint waiters) and admit 5.100.0"
        assert 'required_version = ">= 1.9.0, < 2.0.0"' in text, f"{versions_tf}: must admit Terraform 1.11.4"
    assert _admits((5, 100, 0)) and _admits((5, 66, 0)) and not _admits((5, 65, 9)) and not _admits((6, 0, 0))
    providers = set()
    for tf_file in TF_DIR.rglob("*.tf"):
        if ".terraform" not in tf_file.parts:
            providers.update(line.split('"')[1] for line in tf_file.read_text().splitlines() if line.strip().startswith("source ") and "hashicorp/" in line)
    assert providers == {"hashicorp/aws"}, f"only the mirrored AWS provider is available offline: {providers}"
    modules = {p.parent.name for p in TF_DIR.glob("modules/*/main.tf")}
    assert modules == {"kms", "storage", "registry", "training", "endpoint", "api", "ci", "search", "instance_storage"}
    for module in TF_DIR.glob("modules/*"):
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (module / name).is_file(), f"{module.name} lacks {name}"


def _admits(version: tuple[int, int, int]) -> bool:
    """Whether the root module's AWS provider constraint (">= a.b, < c.d") admits `version`."""
    import re

    constraint = re.search(r'source\s*= "hashicorp/aws"\s*\n\s*version\s*= "([^"]+)"', (TF_DIR / "versions.tf").read_text()).group(1)
    ok = True
    for op, number in re.findall(r"(>=|<|<=|>|=)\s*([0-9.]+)", constraint):
        bound = tuple(int(part) for part in (number.split(".") + ["0", "0"])[:3])
        ok &= {">=": version >= bound, "<": version < bound, "<=": version <= bound, ">": version > bound, "=": version == bound}[op]
    return ok


def test_endpoint_resource_has_no_timeouts_block(tf_mock_dir: Path, tf_env: dict[str, str]) -> None:
    """If a provider version gains `timeouts` on aws_sagemaker_endpoint, set them in the endpoint and search
    modules (and this test fails to say so)."""
    result = _tf(["providers", "schema", "-json"], tf_mock_dir, tf_env)
    _ok(result, "terraform providers schema")
    schemas = json.loads(result.stdout)["provider_schemas"]["registry.terraform.io/hashicorp/aws"]["resource_schemas"]
    assert "timeouts" not in schemas["aws_sagemaker_endpoint"]["block"].get("block_types", {}), (
        "aws_sagemaker_endpoint now has a timeouts block: set create/update timeouts in modules/endpoint and modules/search")


def test_modules_read_account_partition_and_region_themselves() -> None:
    """No module takes account_id, partition or region as pass-through variables (issue: they read the
    provider's with aws_caller_identity, aws_partition, aws_region)."""
    import hcl2

    for variables_tf in sorted(TF_DIR.glob("modules/*/variables.tf")):
        names = {name.strip('"') for block in hcl2.loads(variables_tf.read_text()).get("variable", []) for name in block}
        assert not names & {"account_id", "partition", "region"}, f"{variables_tf.relative_to(ROOT)} passes {names & {'account_id', 'partition', 'region'}} through"
    import re

    passed = re.findall(r"(?m)^\s+(account_id|partition|region)\s+= local\.", (TF_DIR / "main.tf").read_text())
    assert passed == [], f"terraform/main.tf still passes {passed} to modules"


def test_lock_file_pins_the_supported_provider(tmp_path: Path, tf_env: dict[str, str]) -> None:
    """terraform/.terraform.lock.hcl is committed (two operators apply with the same provider build): it
    names the provider version the constraint admits, and `terraform init -lockfile=readonly` accepts the
    provider this machine has (its h1 hash for linux_amd64 matches). Other platforms' hashes are added
    with `terraform providers lock -platform=...` where the registry is reachable (docs/deploy.md)."""
    import re

    lock = (TF_DIR / ".terraform.lock.hcl").read_text()
    blocks = re.findall(r'provider "([^"]+)" \{', lock)
    assert blocks == ["registry.terraform.io/hashicorp/aws"], blocks
    version = re.search(r'version\s+= "([0-9.]+)"', lock).group(1)
    assert _admits(tuple(int(v) for v in version.split("."))), version
    assert re.search(r'constraints = ">= 5.66.0, < 6.0.0"', lock), "the lock must record the constraint of versions.tf"
    assert re.search(r'"h1:[A-Za-z0-9+/=]{44}"', lock), "the lock must carry at least one h1 hash"
    mirrored = sorted(p.name for p in AWS_PROVIDER_DIR.iterdir() if p.is_dir())
    assert version in mirrored, f"the lock names {version}; the machine has {mirrored}"
    workdir = _copy_module(tmp_path / "terraform")
    shutil.copy(TF_DIR / ".terraform.lock.hcl", workdir / ".terraform.lock.hcl")
    result = _tf(["init", "-backend=false", "-input=false", "-no-color", "-lockfile=readonly"], workdir, tf_env)
    _ok(result, "terraform init -lockfile=readonly with the committed lock file")
    assert (workdir / ".terraform.lock.hcl").read_text() == lock


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
                # run time): Serverless Inference CLIP endpoint (its own CPU image tag), its role, POST
                # /search, the Lambda's grant; then the same stack moved to a real-time CLIP endpoint.
                "search": {"model_data_url": CLIP_DATA_URL, "backend": "embedded", "image_tag": CLIP_IMAGE_TAG},
                # The asynchronous endpoint beside the real-time one.
                "async_inference": {"enabled": True},
                # POST /restyle too (off by default; `terraform test` checks the default has none of it).
                "enable_restyle": True,
                # Release tags only through a (protected) GitHub environment.
                "github_release_environment": "release",
            }
        )
    )
    var_file = f"-var-file={tfvars}"
    realtime_tfvars = tmp_path / "moto-realtime.tfvars.json"
    realtime = json.loads(tfvars.read_text())
    realtime["search"] = {"model_data_url": CLIP_DATA_URL, "backend": "embedded", "endpoint_type": "realtime"}
    realtime_tfvars.write_text(json.dumps(realtime))
    realtime_var_file = f"-var-file={realtime_tfvars}"
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
        # The CLIP endpoint moved from Serverless Inference to a real-time endpoint: a new model (network
        # isolated now) and configuration, the endpoint updated, the Lambda told the new request limit.
        _ok(timed("apply (search realtime)", ["apply", "-auto-approve", "-input=false", "-no-color", realtime_var_file], 300),
            "terraform apply (search realtime)")
        plan = timed("plan (search realtime)", ["plan", "-detailed-exitcode", "-input=false", "-no-color", realtime_var_file], 120)
        assert plan.returncode == 0, f"second plan (realtime search) is not empty (exit {plan.returncode}):\n{plan.stdout[-6000:]}\n{plan.stderr[-3000:]}"
        _check_realtime_search_wiring(_boto(moto_server), outputs)
    finally:
        destroy = timed("destroy", ["destroy", "-auto-approve", "-input=false", "-no-color", realtime_var_file], 300)
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
    for module in ("endpoint", "instance_storage"):  # the endpoint module uses instance_storage
        shutil.copytree(TF_DIR / "modules" / module, workdir / "modules" / module)
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

        # An instance type change deregisters autoscaling and registers it again as Terraform made it. moto's
        # caller is no IAM role or user (arn:aws:sts::...:user/moto) and it has no SimulatePrincipalPolicy: the
        # permission check is tested against Stubber (tests/operations/test_rollout.py), skipped here.
        assert rollout_main("--instance-type", "ml.g6.2xlarge", "--skip-permission-check") == 0
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
    assert model["PrimaryContainer"]["Environment"] == {"MAX_BODY_MB": "20", "MODEL_LOAD_TIMEOUT": "1380",
                                                        "MAX_PENDING_REQUESTS": "100", "MAX_BATCH_PRODUCTS": "16",
                                                        "BATCH_WAIT_MS": "0"}
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
    assert env["SEARCH_MAX_REQUEST_BYTES"] == "4000000", "Serverless Inference takes 4 MB requests"
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
    assert sorted((t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets) == [
        (f"endpoint/{ASYNC_ENDPOINT_NAME}/variant/AllTraffic", 0, 2),
        (f"endpoint/{ENDPOINT_NAME}/variant/AllTraffic", 1, 2),
    ]
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [
        p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for p in policies if p["ResourceId"].startswith(f"endpoint/{ENDPOINT_NAME}/")
    ] == ["SageMakerVariantInvocationsPerInstance"]
    _check_async_wiring(client, outputs)

    # SageMaker's log groups exist before SageMaker writes to them: encrypted, with retention.
    groups = {g["logGroupName"]: g for g in client("logs").describe_log_groups(logGroupNamePrefix="/aws/sagemaker/")["logGroups"]}
    assert set(groups) == {f"/aws/sagemaker/Endpoints/{ENDPOINT_NAME}", "/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TransformJobs",
                           f"/aws/sagemaker/Endpoints/{CLIP_ENDPOINT_NAME}", f"/aws/sagemaker/Endpoints/{ASYNC_ENDPOINT_NAME}"}
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

    # CI role: only this repository's main branch and its release environment, only the two repositories.
    ci_role = iam.get_role(RoleName=outputs["ci_role_arn"].split("/")[-1])["Role"]
    trust = ci_role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    subjects = trust["Statement"][0]["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"]
    # Release tags only through the protected environment; no refs/tags/* subject.
    assert set(subjects) == {"repo:example-org/loom:ref:refs/heads/main", "repo:example-org/loom:environment:release"}
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
    assert "ContainerStartupHealthCheckTimeoutInSeconds" not in variant, "Serverless Inference has its own 3-minute /ping window"
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == CLIP_DATA_URL
    # Its own CPU image (Serverless Inference: CPU only, 10 GB images), not the CUDA inference image.
    assert model["PrimaryContainer"]["Image"] == f"{outputs['inference_repository_url']}:{CLIP_IMAGE_TAG}"
    # Serverless Inference refuses network isolation (serverless-endpoints.html, feature exclusions).
    assert model["EnableNetworkIsolation"] is False
    assert model["PrimaryContainer"]["Environment"] == {"MAX_BODY_MB": "4", "MODEL_LOAD_TIMEOUT": "150"}
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


def _check_async_wiring(client, outputs: dict) -> None:
    """modules/endpoint/async.tf: the asynchronous endpoint's variant has the download and start-up windows
    the server's load timeout needs, and its model role may write the endpoint's own log group."""
    sagemaker, iam = client("sagemaker"), client("iam")
    assert outputs["async_endpoint_name"] == ASYNC_ENDPOINT_NAME
    endpoint = sagemaker.describe_endpoint(EndpointName=ASYNC_ENDPOINT_NAME)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["ModelDataDownloadTimeoutInSeconds"], variant["ContainerStartupHealthCheckTimeoutInSeconds"]) == (1200, 1500)
    assert config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{BUCKET}/async/output/{ASYNC_ENDPOINT_NAME}"
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA_URL
    model_role = outputs["endpoint_role_arn"].split("/")[-1]
    policy = _statements(iam.get_role_policy(RoleName=model_role, PolicyName="model-and-batch")["PolicyDocument"])
    assert f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/{ASYNC_ENDPOINT_NAME}:*" in _resources(policy, "logs:PutLogEvents")


def _check_realtime_search_wiring(client, outputs: dict) -> None:
    """The CLIP endpoint after moving to a real-time endpoint: instances, the project key on the volume, a
    network-isolated model in the inference image, a start-up window, and the Lambda told 6 MB."""
    sagemaker = client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=CLIP_ENDPOINT_NAME)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.c6i.xlarge" and "ServerlessConfig" not in variant
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 600
    assert config["KmsKeyId"] == outputs["kms_key_arn"]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["EnableNetworkIsolation"] is True
    assert model["PrimaryContainer"]["Image"] == outputs["inference_image_uri"]
    assert model["PrimaryContainer"]["Environment"] == {"MAX_BODY_MB": "6", "MODEL_LOAD_TIMEOUT": "480"}
    env = client("lambda").get_function_configuration(FunctionName=outputs["lambda_function_name"])["Environment"]["Variables"]
    assert env["SEARCH_MAX_REQUEST_BYTES"] == "6291456", "real-time InvokeEndpoint takes 6 MB"
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"] if m["ModelName"].startswith(CLIP_ENDPOINT_NAME)] == [variant["ModelName"]]


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
