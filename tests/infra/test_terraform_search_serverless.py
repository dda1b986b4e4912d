"""modules/search with backend "opensearch_serverless", applied alone against a local moto server.

The whole-stack moto test (tests/infra/test_terraform.py) covers the search module with the embedded backend.
This one applies only the module (a small root with one `module` block), on an API, Lambda, role and KMS
key made beforehand with boto3 on the same server, then a second plan (must be empty) and destroy.
moto 5.2.5 lacks parts of OpenSearch Serverless: tests/moto_harness.py `_opensearch_serverless` patches
them, each patch explained there. It checks wiring, not OpenSearch behaviour (moto runs no collection).
About 75 s: the provider waits a fixed 30 s before its first status read after creating, and again after
deleting, a collection (hashicorp/terraform-provider-aws, internal/service/opensearchserverless/
collection.go, waitCollectionCreated / waitCollectionDeleted: Delay 30 s), whatever the server answers.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from fixtures_terraform import (TF_DIR, _boto, _ok, _resources, _statements, _tf, moto_tf_env)

pytestmark = pytest.mark.usefixtures("require_terraform")

# The fixtures and helpers of the whole-stack moto test (same offline Terraform, same moto server).

ACCOUNT = "123456789012"
BUCKET = "loom-data-123456789012-us-east-1"
CLIP_DATA_URL = f"s3://{BUCKET}/models/clip-1/output/model.tar.gz"
COLLECTION = "loom-search"  # modules/search: "${name_prefix}-search"
INGEST_ROLE = f"arn:aws:iam::{ACCOUNT}:role/loom-ingest"

ROOT_TF = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}

provider "aws" {
  max_retries = 2 # fail fast on an API moto lacks instead of retrying for minutes
}

variable "inputs" {
  type = map(string)
}

module "search" {
  source = "./modules/search"

  name_prefix         = "loom"
  bucket_name         = "%(bucket)s"
  kms_key_arn         = var.inputs.kms_key_arn
  repository_arn      = "arn:aws:ecr:us-east-1:%(account)s:repository/loom-inference"
  image_uri           = "%(account)s.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url      = "%(model)s"
  search_backend      = "opensearch_serverless"
  ingest_role_arns    = ["%(ingest)s"]
  api_id              = var.inputs.api_id
  lambda_function_arn = var.inputs.lambda_function_arn
  lambda_role_arn     = var.inputs.lambda_role_arn
}

output "lambda_environment" {
  value = module.search.lambda_environment
}
""" % {"account": ACCOUNT, "bucket": BUCKET, "model": CLIP_DATA_URL, "ingest": INGEST_ROLE}


def _prerequisites(client) -> dict[str, str]:
    """What the root module would pass in: the API, its Lambda and role, the project key."""
    iam, lam = client("iam"), client("lambda")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="loom-api-lambda", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:  # moto stores the zip; it never runs it
        archive.writestr("inference/api/handler.py", "def handler(event, context):\n    return {}\n")
    function = lam.create_function(FunctionName="loom-api", Runtime="python3.12", Role=role["Arn"],
                                   Handler="inference.api.handler.handler", Code={"ZipFile": code.getvalue()})
    api = client("apigatewayv2").create_api(Name="loom-api", ProtocolType="HTTP")
    key = client("kms").create_key(Description="loom")["KeyMetadata"]
    return {"kms_key_arn": key["Arn"], "api_id": api["ApiId"], "lambda_function_arn": function["FunctionArn"],
            "lambda_role_arn": role["Arn"]}


@pytest.mark.slow
def test_serverless_collection_apply_plan_destroy_against_moto(
    tmp_path: Path, tf_env: dict[str, str], moto_server: str
) -> None:
    env = moto_tf_env(tf_env, moto_server)
    client = _boto(moto_server)
    inputs = _prerequisites(client)

    workdir = tmp_path / "root"
    for module in ("search", "instance_storage"):  # the search module uses instance_storage
        shutil.copytree(TF_DIR / "modules" / module, workdir / "modules" / module)
    (workdir / "main.tf").write_text(ROOT_TF)
    tfvars = tmp_path / "inputs.tfvars.json"
    tfvars.write_text(json.dumps({"inputs": inputs}))
    var_file = f"-var-file={tfvars}"
    timings: dict[str, float] = {}

    def timed(step: str, args: list[str]):
        start = time.monotonic()
        result = _tf(args, workdir, env, timeout=180)
        timings[step] = round(time.monotonic() - start, 1)
        return result

    _ok(timed("init", ["init", "-input=false", "-no-color"]), "terraform init")
    _ok(timed("apply", ["apply", "-auto-approve", "-input=false", "-no-color", var_file]), "terraform apply")
    try:
        plan = timed("plan", ["plan", "-detailed-exitcode", "-input=false", "-no-color", var_file])
        assert plan.returncode == 0, f"second plan is not empty (exit {plan.returncode}):\n{plan.stdout[-6000:]}\n{plan.stderr[-3000:]}"
        outputs = {k: v["value"] for k, v in json.loads(_tf(["output", "-json"], workdir, env).stdout).items()}
        _check_collection_wiring(client, inputs, outputs["lambda_environment"])
    finally:
        destroy = timed("destroy", ["destroy", "-auto-approve", "-input=false", "-no-color", var_file])
        print(f"\nsearch module (OpenSearch Serverless) against moto, seconds: {timings}")
    _ok(destroy, "terraform destroy")

    aoss = client("opensearchserverless")
    assert aoss.list_collections()["collectionSummaries"] == []
    for kind in ("encryption", "network"):
        assert aoss.list_security_policies(type=kind)["securityPolicySummaries"] == [], kind
    with pytest.raises(aoss.exceptions.ResourceNotFoundException):
        aoss.get_access_policy(name=f"{COLLECTION}-data", type="data")
    assert client("sagemaker").list_endpoints()["Endpoints"] == []


def _check_collection_wiring(client, inputs: dict[str, str], lambda_environment: dict[str, str]) -> None:
    aoss = client("opensearchserverless")
    collection = aoss.batch_get_collection(names=[COLLECTION])["collectionDetails"][0]
    assert collection["type"] == "VECTORSEARCH"
    assert collection["kmsKeyArn"] == inputs["kms_key_arn"], "encrypted under the project key"
    assert lambda_environment == {
        "SEARCH_ENDPOINT_NAME": "loom-clip",
        "SEARCH_BACKEND": "opensearch_serverless",
        "SEARCH_MAX_REQUEST_BYTES": "4000000",
        "OPENSEARCH_ENDPOINT": collection["collectionEndpoint"],
        "OPENSEARCH_INDEX": lambda_environment["OPENSEARCH_INDEX"],
    }
    index = f"index/{COLLECTION}/{lambda_environment['OPENSEARCH_INDEX']}"

    # Data access: the API Lambda reads, the ingest role writes; both only the product index.
    data = aoss.get_access_policy(name=f"{COLLECTION}-data", type="data")["accessPolicyDetail"]["policy"]
    by_principal = {tuple(rule["Principal"]): rule["Rules"] for rule in data}
    reader = by_principal[(inputs["lambda_role_arn"],)]
    assert [r["Resource"] for r in reader] == [[index]]
    assert set(reader[0]["Permission"]) == {"aoss:ReadDocument", "aoss:DescribeIndex"}
    writer = by_principal[(INGEST_ROLE,)]
    assert [r["Resource"] for r in writer] == [[index]] and "aoss:WriteDocument" in writer[0]["Permission"]

    # The Lambda's IAM grant names exactly this collection.
    lambda_role = inputs["lambda_role_arn"].split("/")[-1]
    grant = _statements(client("iam").get_role_policy(RoleName=lambda_role, PolicyName="search")["PolicyDocument"])
    assert _resources(grant, "aoss:APIAccessAll") == {collection["arn"]}
