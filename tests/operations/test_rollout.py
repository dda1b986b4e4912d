"""`loom rollout`: the exact requests, in order, against botocore's Stubber (which validates every request
and response against the real SageMaker, Application Auto Scaling and CloudWatch service models), and
the retry behaviour against a loopback HTTP server that answers like SageMaker.

Rules encoded here, with their sources (SageMaker API reference and developer guide):
- UpdateEndpoint RetainAllVariantProperties=true keeps the variant's properties (instance count, weight);
  "production variants with the same name will be updated with the most recent DesiredInstanceCount from
  the response to DescribeEndpoint, regardless of the values of the InitialInstanceCount field in the new
  EndpointConfig": https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html,
  https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html
- ExcludeRetainedVariantProperties DesiredInstanceCount "overrides the existing variant instance counts
  using the InitialInstanceCount values" of the new configuration; the only other types are DesiredWeight
  and DataCaptureConfig (not supported). The instance type is not among them:
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html
- "If the update would change the instance type for any model that is a target for auto scaling, the
  update fails": deregister first (DeregisterScalableTarget, which also deletes its policies), register
  and put the policies again afterwards: endpoint-scaling-update.html above and
  https://docs.aws.amazon.com/autoscaling/application/APIReference/API_DeregisterScalableTarget.html
- Blue/green traffic shifting, canary size <= 50 % and linear steps 10-50 % of the fleet, rolling batches
  5-50 %; the new configuration keeps the variant name; a timeout larger than the waits:
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_RollingUpdatePolicy.html,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html,
  https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html
- KmsKeyId does not encrypt the local storage of instance types with NVMe instance storage (hardware-encrypted),
  so it is left out for them:
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpointConfig.html
- registering a SageMaker variant again and putting its target-tracking policy back needs
  sagemaker:DescribeEndpoint/DescribeEndpointConfig/UpdateEndpointWeightsAndCapacities,
  cloudwatch:PutMetricAlarm/DescribeAlarms/DeleteAlarms and iam:CreateServiceLinkedRole for the autoscaling
  service-linked role (only while it is missing: iam:GetRole on it): checked (iam:SimulatePrincipalPolicy)
  before the variant is deregistered, each action on the resource types it is authorised on (UpdateEndpoint on
  endpoint and endpoint-config, Create/DescribeEndpointConfig on endpoint-config, CreateModel on model:
  https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html):
  https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html,
  https://docs.aws.amazon.com/autoscaling/application/userguide/security_iam_id-based-policy-examples.html
- MaximumExecutionTimeoutInSeconds (600-28800) covers the whole deployment: a linear deployment waits between
  its steps, a rolling one starts and bakes every batch:
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_RollingUpdatePolicy.html,
  https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-rolling.html
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from operations import cli
from operations import rollout
from operations.rollout import Clients

NOW = datetime(2026, 11, 15, 10, 30, 0, tzinfo=timezone.utc)
ENDPOINT = "loom-endpoint"
ACCOUNT = "123456789012"
ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
OLD_CONFIG, OLD_MODEL = "loom-endpoint-1a2b3c4d", "loom-endpoint-5e6f7a8b"
NEW_NAME = "loom-endpoint-r20261115103000"  # rollout.resource_name(ENDPOINT, NOW)
BUCKET = "loom-data-123456789012-us-east-1"
REPO = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/loom-inference"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/loom-endpoint-sagemaker-model"
ALARMS = ["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"]
RESOURCE_ID = f"endpoint/{ENDPOINT}/variant/AllTraffic"
TAGS = [{"Key": "project", "Value": "loom"}]
# What Terraform's endpoint module sends (terraform/modules/endpoint/main.tf deployment_config), as
# DescribeEndpoint returns it in LastDeploymentConfig.
TERRAFORM_DEPLOYMENT = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600},
        "TerminationWaitInSeconds": 300,
        "MaximumExecutionTimeoutInSeconds": 7200,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in ALARMS]},
}
CONTAINER = {
    "Image": f"{REPO}:0123abc",
    "Mode": "SingleModel",
    "ModelDataUrl": f"s3://{BUCKET}/models/job-1/output/model.tar.gz",
    "Environment": {"MAX_BODY_MB": "20", "MODEL_LOAD_TIMEOUT": "1380"},
}
VARIANT = {
    "VariantName": "AllTraffic",
    "ModelName": OLD_MODEL,
    "InitialInstanceCount": 1,
    "InstanceType": "ml.m5.xlarge",
    "InitialVariantWeight": 1.0,
    "ModelDataDownloadTimeoutInSeconds": 1200,
    "ContainerStartupHealthCheckTimeoutInSeconds": 1500,
}
DATA_CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 25,
    "DestinationS3Uri": f"s3://{BUCKET}/capture/{ENDPOINT}",
    "KmsKeyId": KEY,
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}


def endpoint(status: str = "InService", config: str = OLD_CONFIG, count: int = 3, **extra: Any) -> dict[str, Any]:
    """DescribeEndpoint of Loom's endpoint, autoscaled from 1 to `count` instances."""
    return {
        "EndpointName": ENDPOINT, "EndpointArn": f"{ARN}:endpoint/{ENDPOINT}", "EndpointConfigName": config,
        "EndpointStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW,
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                                "CurrentInstanceCount": count, "DesiredInstanceCount": count}],
        "LastDeploymentConfig": TERRAFORM_DEPLOYMENT, **extra,
    }


def updating(stage: str, message: str, count: int = 3) -> dict[str, Any]:
    return endpoint("Updating", PendingDeploymentSummary={
        "EndpointConfigName": NEW_NAME, "StartTime": NOW,
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 0, "DesiredInstanceCount": count,
                                "VariantStatus": [{"Status": stage, "StatusMessage": message, "StartTime": NOW}]}]})


def endpoint_config(variant: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"EndpointConfigName": OLD_CONFIG, "EndpointConfigArn": f"{ARN}:endpoint-config/{OLD_CONFIG}",
            "ProductionVariants": [variant or VARIANT], "KmsKeyId": KEY, "DataCaptureConfig": DATA_CAPTURE,
            "CreationTime": NOW, **extra}


CREATED_MODEL = {"ModelArn": f"{ARN}:model/{NEW_NAME}"}
CREATED_CONFIG = {"EndpointConfigArn": f"{ARN}:endpoint-config/{NEW_NAME}"}
UPDATED = {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"}
REGISTERED = {"ScalableTargetARN": f"arn:aws:application-autoscaling:us-east-1:{ACCOUNT}:scalable-target/056abd"}
POLICY_PUT = {"PolicyARN": f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:scalingPolicy:2", "Alarms": []}
MODEL = {"ModelName": OLD_MODEL, "ModelArn": f"{ARN}:model/{OLD_MODEL}", "PrimaryContainer": CONTAINER,
         "ExecutionRoleArn": ROLE, "EnableNetworkIsolation": True, "CreationTime": NOW}


class Aws:
    """The five clients of `Clients`, each behind a Stubber; `calls` records every request in order as
    (client, operation), so the tests see which calls went to the retrying (read) and the non-retrying
    (write) clients."""

    def __init__(self) -> None:
        self.clients = Clients.create("us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        self.stubbers = {name: Stubber(getattr(self.clients, name)) for name in vars(self.clients)}
        self.calls: list[tuple[str, str]] = []
        for name in self.stubbers:
            client = getattr(self.clients, name)
            # First, so that it runs before the Stubber's handler answers the call.
            client.meta.events.register_first(
                "before-call.*.*", lambda model, _name=name, **_: self.calls.append((_name, model.name)))
            self.stubbers[name].activate()

    def expect(self, client: str, operation: str, response: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        self.stubbers[client].add_response(operation, response, params)

    def refuse(self, client: str, operation: str, code: str, message: str, status: int = 400) -> None:
        self.stubbers[client].add_client_error(operation, code, message, status)

    def done(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()
            stubber.deactivate()


@pytest.fixture()
def aws(fake_aws_credentials):
    stubs = Aws()
    yield stubs
    stubs.done()


def run(aws: Aws, *args: str) -> int:
    return rollout.main(["--endpoint", ENDPOINT, *args], clients=aws.clients, sleep=lambda s: None,
                        delays=iter(lambda: 10.0, None), now=NOW)


def read_current(aws: Aws, *, config: dict[str, Any] | None = None, model: bool = True, ep: dict[str, Any] | None = None) -> None:
    aws.expect("sagemaker", "describe_endpoint", ep or endpoint(), {"EndpointName": ENDPOINT})
    aws.expect("sagemaker", "describe_endpoint_config", config or endpoint_config(), {"EndpointConfigName": OLD_CONFIG})
    if model:
        aws.expect("sagemaker", "describe_model", MODEL, {"ModelName": OLD_MODEL})
        aws.expect("sagemaker", "list_tags", {"Tags": TAGS + [{"Key": "aws:cloudformation:stack", "Value": "x"}]},
                   {"ResourceArn": MODEL["ModelArn"]})
    aws.expect("sagemaker", "list_tags", {"Tags": TAGS}, {"ResourceArn": f"{ARN}:endpoint-config/{OLD_CONFIG}"})


def alarms_ok(aws: Aws, states: tuple[str, str] = ("OK", "OK")) -> None:
    aws.expect("cloudwatch", "describe_alarms",
               {"MetricAlarms": [{"AlarmName": n, "StateValue": s} for n, s in zip(ALARMS, states)]},
               {"AlarmNames": ALARMS, "AlarmTypes": ["MetricAlarm", "CompositeAlarm"]})


def new_config(**variant: Any) -> dict[str, Any]:
    return {"EndpointConfigName": NEW_NAME, "Tags": TAGS, "KmsKeyId": KEY, "DataCaptureConfig": DATA_CAPTURE,
            "ProductionVariants": [{**VARIANT, "ModelName": NEW_NAME, "InitialInstanceCount": 3, **variant}]}


# ---------------------------------------------------------------------------------------------------
# A model rollout


def test_model_rollout_keeps_the_autoscaled_count_and_copies_the_configuration(aws, capsys):
    new_data = f"s3://{BUCKET}/models/job-2/output/model.tar.gz"
    read_current(aws)
    alarms_ok(aws)
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL, {
        "ModelName": NEW_NAME, "Tags": TAGS, "ExecutionRoleArn": ROLE, "EnableNetworkIsolation": True,
        "PrimaryContainer": {**CONTAINER, "ModelDataUrl": new_data}})
    # Everything of the current configuration (KMS key, data capture, timeouts, weight) but the model;
    # InitialInstanceCount is the current count (3), not the configuration's 1.
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG,
               new_config())
    aws.expect("sagemaker_write", "update_endpoint", UPDATED, {
        "EndpointName": ENDPOINT, "EndpointConfigName": NEW_NAME, "RetainAllVariantProperties": True,
        "DeploymentConfig": TERRAFORM_DEPLOYMENT})
    aws.expect("sagemaker", "describe_endpoint", updating("Creating", "Launching 3 instances"))
    aws.expect("sagemaker", "describe_endpoint", updating("Baking", "Watching the rollback alarms"))
    aws.expect("sagemaker", "describe_endpoint", endpoint(config=NEW_NAME))

    assert run(aws, "--model-data", new_data) == 0

    assert aws.calls == [
        ("sagemaker", "DescribeEndpoint"), ("sagemaker", "DescribeEndpointConfig"), ("sagemaker", "DescribeModel"),
        ("sagemaker", "ListTags"), ("sagemaker", "ListTags"), ("cloudwatch", "DescribeAlarms"),
        ("sagemaker_write", "CreateModel"), ("sagemaker_write", "CreateEndpointConfig"),
        ("sagemaker_write", "UpdateEndpoint"),
        ("sagemaker", "DescribeEndpoint"), ("sagemaker", "DescribeEndpoint"), ("sagemaker", "DescribeEndpoint"),
    ]
    out = capsys.readouterr().out
    assert "Creating (Launching 3 instances)" in out and "Baking (Watching the rollback alarms)" in out
    assert "instance count kept at 3" in out and "blue/green all-at-once" in out
    assert f"rolled out: {ENDPOINT} serves {NEW_NAME} (was {OLD_CONFIG}) on 3 x ml.m5.xlarge" in out


def test_an_uncompressed_model_folder_goes_through_model_data_source(aws):
    folder = f"s3://{BUCKET}/models/job-2/output/model/"
    read_current(aws)
    alarms_ok(aws)
    container = {k: v for k, v in CONTAINER.items() if k != "ModelDataUrl"}
    # https://docs.aws.amazon.com/sagemaker/latest/dg/large-model-inference-uncompressed.html
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL, {
        "ModelName": NEW_NAME, "Tags": TAGS, "ExecutionRoleArn": ROLE, "EnableNetworkIsolation": True,
        "PrimaryContainer": {**container, "ModelDataSource": {"S3DataSource": {
            "S3Uri": folder, "S3DataType": "S3Prefix", "CompressionType": "None"}}}})
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG, new_config())
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    assert run(aws, "--model-data", folder, "--image", f"{REPO}:0123abc", "--no-wait") == 0


def test_an_async_endpoint_keeps_its_async_configuration(aws):
    async_config = {"ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
                    "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/async/output/loom-endpoint-async",
                                     "S3FailurePath": f"s3://{BUCKET}/async/failure/loom-endpoint-async", "KmsKeyId": KEY}}
    described = endpoint_config(AsyncInferenceConfig=async_config)
    del described["DataCaptureConfig"]
    read_current(aws, config=described)
    alarms_ok(aws)
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL)
    expected = new_config()
    del expected["DataCaptureConfig"]
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG, {**expected, "AsyncInferenceConfig": async_config})
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    assert run(aws, "--image", f"{REPO}:4567def", "--no-wait") == 0


def test_an_explicit_instance_count_excludes_the_retained_count(aws):
    read_current(aws)
    alarms_ok(aws)
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG, new_config(InitialInstanceCount=5))
    # The only way to set the count through UpdateEndpoint with RetainAllVariantProperties
    # (API_VariantProperty.html: DesiredInstanceCount takes InitialInstanceCount of the new configuration).
    aws.expect("sagemaker_write", "update_endpoint", UPDATED, {
        "EndpointName": ENDPOINT, "EndpointConfigName": NEW_NAME, "RetainAllVariantProperties": True,
        "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DesiredInstanceCount"}],
        "DeploymentConfig": TERRAFORM_DEPLOYMENT})
    assert run(aws, "--image", f"{REPO}:4567def", "--instance-count", "5", "--no-wait") == 0


# ---------------------------------------------------------------------------------------------------
# Instance type change under autoscaling


def autoscaling_read(aws: Aws, *, check_permissions: bool = True) -> dict[str, Any]:
    where = {"ServiceNamespace": "sagemaker", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    target_arn = f"arn:aws:application-autoscaling:us-east-1:{ACCOUNT}:scalable-target/056abc"
    aws.expect("autoscaling", "describe_scalable_targets", {"ScalableTargets": [{
        **where, "ResourceId": RESOURCE_ID, "MinCapacity": 1, "MaxCapacity": 4, "CreationTime": NOW,
        "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/x",
        "ScalableTargetARN": target_arn}]}, {**where, "ResourceIds": [RESOURCE_ID]})
    policy_config = {"TargetValue": 60.0, "ScaleInCooldown": 600, "ScaleOutCooldown": 120,
                     "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}
    aws.expect("autoscaling", "describe_scaling_policies", {"ScalingPolicies": [{
        **where, "PolicyARN": f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:scalingPolicy:1",
        "PolicyName": "loom-endpoint-invocations-per-instance", "ResourceId": RESOURCE_ID,
        "PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": policy_config,
        "Alarms": [{"AlarmName": "TargetTracking-x-AlarmHigh", "AlarmARN": "arn:aws:cloudwatch:x"}],
        "CreationTime": NOW}]}, {**where, "ResourceId": RESOURCE_ID})
    aws.expect("autoscaling", "describe_scheduled_actions", {"ScheduledActions": []}, {**where, "ResourceId": RESOURCE_ID})
    aws.expect("autoscaling", "list_tags_for_resource", {"Tags": {"project": "loom"}}, {"ResourceARN": target_arn})
    if check_permissions:
        permissions(aws)
    return {"where": {**where, "ResourceId": RESOURCE_ID}, "policy": policy_config}


OPERATOR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ops/loom-operator"
SLR = (f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
       "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")


SLR_NAME = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


def permissions(aws: Aws, denied: tuple[str, ...] = (), *, slr: str = "missing", model: bool = False) -> None:
    """The caller (an assumed role with a path), whether the autoscaling service-linked role exists (`slr`:
    "exists", "missing" or "refused" GetRole), and the simulation of each action against the resource type the
    Service Authorization Reference authorises it on
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html):
    UpdateEndpoint on the endpoint and on the configuration it deploys, Create/DescribeEndpointConfig on
    endpoint-config, CreateModel on model (iam:PassRole on its execution role). `denied` holds action names,
    or "action@resource" for one resource only."""
    aws.expect("sts", "get_caller_identity", {"Account": ACCOUNT, "UserId": "AROA:me",
                                              "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/loom-operator/me"})
    aws.expect("iam", "get_role", {"Role": {"Path": "/ops/", "RoleName": "loom-operator", "RoleId": "AROAEXAMPLE12345",
                                            "Arn": OPERATOR_ROLE, "CreateDate": NOW,
                                            "AssumeRolePolicyDocument": "{}"}}, {"RoleName": "loom-operator"})
    if slr == "exists":
        aws.expect("iam", "get_role", {"Role": {"Path": "/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/",
                                                "RoleName": SLR_NAME, "RoleId": "AROAEXAMPLE67890", "Arn": SLR,
                                                "CreateDate": NOW, "AssumeRolePolicyDocument": "{}"}}, {"RoleName": SLR_NAME})
    elif slr == "missing":
        aws.refuse("iam", "get_role", "NoSuchEntity", f"The role with name {SLR_NAME} cannot be found.", 404)
    else:
        aws.refuse("iam", "get_role", "AccessDenied", "not authorized to perform: iam:GetRole", 403)
    groups = [
        (("sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities"),
         f"{ARN}:endpoint/{ENDPOINT}", None),
        (("sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpoint"),
         f"{ARN}:endpoint-config/{NEW_NAME}", None),
        (("sagemaker:DescribeEndpointConfig",), f"{ARN}:endpoint-config/{OLD_CONFIG}", None),
    ]
    if model:
        groups += [(("sagemaker:CreateModel",), f"{ARN}:model/{NEW_NAME}", None),
                   (("iam:PassRole",), ROLE, [{"ContextKeyName": "iam:PassedToService", "ContextKeyType": "string",
                                               "ContextKeyValues": ["sagemaker.amazonaws.com"]}])]
    groups.append((rollout.AUTOSCALING_ACTIONS, "*", None))
    if slr != "exists":
        groups.append((("iam:CreateServiceLinkedRole",), SLR, [{"ContextKeyName": "iam:AWSServiceName", "ContextKeyType": "string",
                                                                 "ContextKeyValues": ["sagemaker.application-autoscaling.amazonaws.com"]}]))
    for actions, resource, context in groups:
        request = {"PolicySourceArn": OPERATOR_ROLE, "ActionNames": list(actions), "ResourceArns": [resource]}
        if context:
            request["ContextEntries"] = context
        aws.expect("iam", "simulate_principal_policy", {"IsTruncated": False, "EvaluationResults": [
            {"EvalActionName": a, "EvalResourceName": resource,
             "EvalDecision": "implicitDeny" if a in denied or f"{a}@{resource}" in denied else "allowed"}
            for a in actions]}, request)


def test_the_permissions_cover_what_re_registering_needs():
    # The SageMaker autoscaling prerequisites and Application Auto Scaling's identity-based policies.
    needed = {"sagemaker:UpdateEndpointWeightsAndCapacities", "sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig",
              "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms",
              "application-autoscaling:RegisterScalableTarget", "application-autoscaling:PutScalingPolicy"}
    assert needed <= set(rollout.ENDPOINT_ACTIONS + rollout.NEW_CONFIG_ACTIONS + rollout.AUTOSCALING_ACTIONS)
    # ... and docs/deploy.md lists every one of them, and the service-linked role.
    root = next(p for p in Path(__file__).resolve().parents if (p / "docs" / "deploy.md").exists())
    docs = (root / "docs" / "deploy.md").read_text()
    for action in (*rollout.ENDPOINT_ACTIONS, *rollout.NEW_CONFIG_ACTIONS, *rollout.MODEL_ACTIONS,
                   *rollout.AUTOSCALING_ACTIONS, "iam:CreateServiceLinkedRole",
                   "iam:SimulatePrincipalPolicy", "iam:GetRole", "iam:PassRole"):
        service, name = action.split(":")
        assert f"{service}:{name}" in docs or f"`{name}`" in docs, action


def test_instance_type_change_deregisters_autoscaling_keeps_the_count_and_restores_it(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    scaling = autoscaling_read(aws)
    # ml.g5 has NVMe instance storage: KmsKeyId is left out; the model is the same.
    expected = new_config(ModelName=OLD_MODEL, InstanceType="ml.g5.2xlarge")
    del expected["KmsKeyId"]
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG, expected)
    aws.expect("autoscaling_write", "deregister_scalable_target", {}, scaling["where"])
    # No ExcludeRetainedVariantProperties: the instance type is not a retained property, so the type changes
    # and DesiredInstanceCount (3) is kept.
    aws.expect("sagemaker_write", "update_endpoint", UPDATED, {
        "EndpointName": ENDPOINT, "EndpointConfigName": NEW_NAME, "RetainAllVariantProperties": True,
        "DeploymentConfig": TERRAFORM_DEPLOYMENT})
    aws.expect("sagemaker", "describe_endpoint", updating("Creating", "Launching 3 ml.g5.2xlarge instances"))
    aws.expect("sagemaker", "describe_endpoint", endpoint(config=NEW_NAME))
    aws.expect("autoscaling_write", "register_scalable_target", REGISTERED,
               {**scaling["where"], "MinCapacity": 1, "MaxCapacity": 4, "Tags": {"project": "loom"}})
    aws.expect("autoscaling_write", "put_scaling_policy", POLICY_PUT, {
        **scaling["where"], "PolicyName": "loom-endpoint-invocations-per-instance", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": scaling["policy"]})

    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 0

    writes = [c for c in aws.calls if c[0].endswith("_write")]
    assert writes == [("sagemaker_write", "CreateEndpointConfig"), ("autoscaling_write", "DeregisterScalableTarget"),
                      ("sagemaker_write", "UpdateEndpoint"), ("autoscaling_write", "RegisterScalableTarget"),
                      ("autoscaling_write", "PutScalingPolicy")]
    assert aws.calls.index(("sagemaker", "DescribeEndpoint"), 1) < aws.calls.index(("autoscaling_write", "RegisterScalableTarget"))
    out = capsys.readouterr().out
    assert "no KmsKeyId is sent" in out and "registered again (1-4 instances, 1 policy(ies))" in out
    assert "on 3 x ml.g5.2xlarge" in out


def test_a_rollback_is_reported_and_autoscaling_comes_back_all_the_same(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    scaling = autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("autoscaling_write", "deregister_scalable_target", {})
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    aws.expect("sagemaker", "describe_endpoint", updating("Baking", "Watching the rollback alarms"))
    aws.expect("sagemaker", "describe_endpoint", endpoint("RollingBack"))
    reason = "Alarm loom-endpoint-invocation-5xx was triggered during the baking period; rolled back."
    aws.expect("sagemaker", "describe_endpoint", endpoint(FailureReason=reason))  # InService, old configuration
    alarms_ok(aws, ("ALARM", "OK"))
    aws.expect("autoscaling_write", "register_scalable_target", REGISTERED,
               {**scaling["where"], "MinCapacity": 1, "MaxCapacity": 4, "Tags": {"project": "loom"}})
    aws.expect("autoscaling_write", "put_scaling_policy", POLICY_PUT)

    assert run(aws, "--instance-type", "ml.g6.2xlarge") == 1

    out = capsys.readouterr().out
    assert f"rolled back: {ENDPOINT} serves {OLD_CONFIG} again, not {NEW_NAME}" in out
    assert f"reason: {reason}" in out
    assert "rollback alarms now: loom-endpoint-invocation-5xx ALARM, loom-endpoint-model-latency-p90 OK" in out
    assert "registered again" in out


def test_an_instance_type_change_without_autoscaling_skips_it(aws):
    read_current(aws, model=False)
    alarms_ok(aws)
    aws.expect("autoscaling", "describe_scalable_targets", {"ScalableTargets": []})
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    assert run(aws, "--instance-type", "ml.c7g.xlarge", "--no-wait") == 0
    assert not any(c[0].startswith("autoscaling_write") for c in aws.calls)


def test_a_refused_update_registers_autoscaling_again_at_once(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    scaling = autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("autoscaling_write", "deregister_scalable_target", {})
    aws.refuse("sagemaker_write", "update_endpoint", "ResourceLimitExceeded",
               "The account-level service limit 'ml.g5.2xlarge for endpoint usage' is 2 Instances")
    aws.expect("autoscaling_write", "register_scalable_target", REGISTERED,
               {**scaling["where"], "MinCapacity": 1, "MaxCapacity": 4, "Tags": {"project": "loom"}})
    aws.expect("autoscaling_write", "put_scaling_policy", POLICY_PUT)
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    err = capsys.readouterr().err
    assert "ResourceLimitExceeded" in err and "for endpoint usage" in err


def test_losing_track_of_the_update_says_what_is_left_to_do(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("autoscaling_write", "deregister_scalable_target", {})
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    aws.refuse("sagemaker", "describe_endpoint", "AccessDeniedException", "not allowed", 403)
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 1
    out = capsys.readouterr().out
    assert "lost track of the update" in out and "is not registered" in out and "Once the endpoint is InService" in out
    assert_restore_commands(out)


def assert_restore_commands(out: str) -> None:
    """The printed commands are the exact requests loom rollout would send (checked by parsing them back)."""
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("aws application-autoscaling")]
    register, policy = (json.loads(shlex.split(line)[-1]) for line in lines)
    assert register == {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE_ID, "MinCapacity": 1, "MaxCapacity": 4,
                        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "Tags": {"project": "loom"}}
    assert policy["PolicyName"] == "loom-endpoint-invocations-per-instance"
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 60.0
    assert f"aws sagemaker wait endpoint-in-service --region us-east-1 --endpoint-name {ENDPOINT}" in out


# ---------------------------------------------------------------------------------------------------
# Permissions are checked before the variant is deregistered


def test_a_missing_permission_stops_the_instance_type_change_before_anything_changes(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    permissions(aws, denied=("sagemaker:UpdateEndpointWeightsAndCapacities",))
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    assert not any(c[0].endswith("_write") for c in aws.calls)
    err = capsys.readouterr().err
    assert f"sagemaker:UpdateEndpointWeightsAndCapacities on {ARN}:endpoint/{ENDPOINT} (implicitDeny)" in err
    assert OPERATOR_ROLE in err


def test_update_endpoint_is_checked_on_the_new_configuration_too(aws, capsys):
    # UpdateEndpoint is authorised on endpoint and endpoint-config (Service Authorization Reference for
    # SageMaker, list_amazonsagemaker.html): a policy that allows it on the endpoint only still fails the call.
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    permissions(aws, denied=(f"sagemaker:UpdateEndpoint@{ARN}:endpoint-config/{NEW_NAME}",))
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    assert not any(c[0].endswith("_write") for c in aws.calls)
    err = capsys.readouterr().err
    assert f"sagemaker:UpdateEndpoint on {ARN}:endpoint-config/{NEW_NAME} (implicitDeny)" in err
    assert f"on {ARN}:endpoint/{ENDPOINT}" not in err


def test_describe_endpoint_config_is_checked_on_the_current_configuration(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    permissions(aws, denied=(f"sagemaker:DescribeEndpointConfig@{ARN}:endpoint-config/{OLD_CONFIG}",))
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    assert f"sagemaker:DescribeEndpointConfig on {ARN}:endpoint-config/{OLD_CONFIG} (implicitDeny)" in capsys.readouterr().err


def test_a_new_model_is_checked_on_its_model_arn_and_execution_role(aws, capsys):
    # CreateModel is authorised on the model resource type and needs iam:PassRole on the execution role.
    read_current(aws)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    permissions(aws, denied=("iam:PassRole",), model=True)
    assert run(aws, "--instance-type", "ml.g5.2xlarge", "--image", f"{REPO}:v2") == 2
    assert not any(c[0].endswith("_write") for c in aws.calls)
    assert f"iam:PassRole on {ROLE} (implicitDeny)" in capsys.readouterr().err


@pytest.mark.parametrize("slr", ["exists", "refused"])
def test_the_service_linked_role_permission_is_needed_only_while_the_role_is_missing(aws, capsys, slr):
    # Registering a SageMaker variant creates AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint only
    # when it does not exist yet (application-autoscaling-service-linked-roles.html); when GetRole is refused the
    # permission stays required. Denied here: it matters only when simulated.
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    permissions(aws, denied=("iam:CreateServiceLinkedRole",), slr=slr)
    status = run(aws, "--instance-type", "ml.g5.2xlarge", "--dry-run")
    out, err = capsys.readouterr()
    if slr == "exists":
        assert status == 0 and "iam:CreateServiceLinkedRole is not needed" in out
    else:
        assert status == 2 and f"iam:CreateServiceLinkedRole on {SLR} (implicitDeny)" in err


def test_a_refused_simulation_stops_the_change_unless_skipped(aws, capsys):
    def refused_simulation() -> None:
        read_current(aws, model=False)
        alarms_ok(aws)
        autoscaling_read(aws, check_permissions=False)
        aws.expect("sts", "get_caller_identity", {"Account": ACCOUNT, "UserId": "AIDA", "Arn": f"arn:aws:iam::{ACCOUNT}:user/ops"})
        aws.refuse("iam", "get_role", "AccessDenied", "not authorized to perform: iam:GetRole", 403)
        aws.refuse("iam", "simulate_principal_policy", "AccessDenied", "not authorized to perform iam:SimulatePrincipalPolicy", 403)

    refused_simulation()
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    err = capsys.readouterr().err
    assert "could not check the permissions" in err and "--skip-permission-check" in err
    assert "sagemaker:UpdateEndpointWeightsAndCapacities" in err and "iam:CreateServiceLinkedRole" in err
    assert not any(c[0].endswith("_write") for c in aws.calls)
    # With the flag the check is skipped (said so) and the rollout is planned: a dry run here.
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws, check_permissions=False)
    assert run(aws, "--instance-type", "ml.g5.2xlarge", "--skip-permission-check", "--dry-run") == 0
    assert "--skip-permission-check: the permissions to register autoscaling again are not checked" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM after the variant was deregistered


def _raise_on(aws: Aws, client: str, operation: str, action) -> None:
    """Run `action` (raise KeyboardInterrupt, or send this process SIGTERM) when `operation` is called: while
    botocore takes the call's parameters, before the Stubber sees it (as a real call interrupted in flight)."""
    def handler(**_: Any) -> None:
        action()
    getattr(aws.clients, client).meta.events.register(f"provide-client-params.*.{operation}", handler)


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler rollout installed raises at the next bytecode


def test_sigterm_during_deregistration_registers_autoscaling_again(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    scaling = autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    _raise_on(aws, "autoscaling_write", "DeregisterScalableTarget", _sigterm)
    aws.expect("autoscaling_write", "register_scalable_target", REGISTERED,
               {**scaling["where"], "MinCapacity": 1, "MaxCapacity": 4, "Tags": {"project": "loom"}})
    aws.expect("autoscaling_write", "put_scaling_policy", POLICY_PUT)
    previous = signal.getsignal(signal.SIGTERM)
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 143
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    out = capsys.readouterr().out
    assert "terminated (SIGTERM) before UpdateEndpoint" in out and "registered again (1-4 instances, 1 policy(ies))" in out
    assert ("sagemaker_write", "UpdateEndpoint") not in aws.calls


def test_ctrl_c_during_update_endpoint_prints_the_exact_restore_commands(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("autoscaling_write", "deregister_scalable_target", {})

    def ctrl_c() -> None:
        raise KeyboardInterrupt
    _raise_on(aws, "sagemaker_write", "UpdateEndpoint", ctrl_c)
    # The update may have reached SageMaker: the endpoint still reads InService on the old configuration, so
    # registering now could collide with an update that starts: the commands are printed instead.
    aws.expect("sagemaker", "describe_endpoint", endpoint())
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 130
    out = capsys.readouterr().out
    assert "interrupted: an update of loom-endpoint may be running" in out
    assert not any(c == ("autoscaling_write", "RegisterScalableTarget") for c in aws.calls)
    assert_restore_commands(out)


def test_sigterm_while_waiting_prints_the_commands(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    autoscaling_read(aws)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.expect("autoscaling_write", "deregister_scalable_target", {})
    aws.expect("sagemaker_write", "update_endpoint", UPDATED)
    sent = []

    def terminate_once() -> None:  # once waiting (never while planning: no handler is installed then)
        if not sent and ("sagemaker_write", "UpdateEndpoint") in aws.calls:
            sent.append(1)
            _sigterm()
    _raise_on(aws, "sagemaker", "DescribeEndpoint", terminate_once)
    # The first poll is interrupted; the describe after it shows the update running: no registration now.
    aws.expect("sagemaker", "describe_endpoint", updating("Creating", "Launching 3 instances"))
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 143
    out = capsys.readouterr().out
    assert "terminated (SIGTERM)" in out and "the update may still be running (Updating)" in out
    assert not any(c == ("autoscaling_write", "RegisterScalableTarget") for c in aws.calls)
    assert_restore_commands(out)


# ---------------------------------------------------------------------------------------------------
# The deployment's time against MaximumExecutionTimeoutInSeconds


def _config(kind: str, step: int | None, bake: int, timeout: int, termination: int = 300) -> dict[str, Any]:
    size = {"Type": "INSTANCE_COUNT", "Value": step} if step else None
    alarms = {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]}}
    if kind == "rolling":
        return {**alarms, "RollingUpdatePolicy": {"MaximumBatchSize": size, "WaitIntervalInSeconds": bake,
                                                  "MaximumExecutionTimeoutInSeconds": timeout}}
    routing = {"Type": kind, "WaitIntervalInSeconds": bake}
    if kind == "LINEAR":
        routing["LinearStepSize"] = size
    if kind == "CANARY":
        routing["CanarySize"] = size
    return {**alarms, "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": termination,
                                                "MaximumExecutionTimeoutInSeconds": timeout}}


@pytest.mark.parametrize("kind,step,count,steps,starts,waits", [
    ("ALL_AT_ONCE", None, 4, 1, 1, 600 + 300),         # one start, one bake, the termination wait
    ("CANARY", 1, 4, 2, 1, 600 + 300),                 # the canary's bake, then the rest
    ("LINEAR", 1, 4, 4, 1, 3 * 600 + 300),             # a wait between each of 4 steps
    ("LINEAR", 2, 5, 3, 1, 2 * 600 + 300),             # ceil(5 / 2) steps
    ("rolling", 1, 4, 4, 4, 4 * 600),                  # every batch starts and bakes
    ("rolling", 2, 5, 3, 3, 3 * 600),
])
def test_the_deployment_time_counts_every_step(kind, step, count, steps, starts, waits):
    time_needed = rollout.deployment_time(_config(kind, step, 600, 28800), count, startup_s=900)
    assert (time_needed.steps, time_needed.starts, time_needed.waits_s) == (steps, starts, waits)
    assert time_needed.estimate_s == waits + starts * 900


def test_a_rolling_deployment_that_cannot_fit_its_timeout_is_refused_and_one_that_may_not_warns():
    # 4 batches x 600 s bake = 2400 s of waits alone: a 2000 s timeout can never be met.
    with pytest.raises(rollout.RolloutError, match=r"\(2000\) does not exceed its waits \(2400 s\)"):
        rollout.deployment_config(_config("rolling", 1, 600, 2000), strategy=None, step=None, bake_seconds=None,
                                  alarms=None, instance_count=4)
    # The waits fit 7200 s, but with 4 start-ups of up to 2700 s (download 1200 + health check 1500) they do not.
    warnings = rollout.check_deployment_time(_config("rolling", 1, 600, 7200), 4, 2700)
    assert len(warnings) == 1 and "about 13200 s" in warnings[0] and "4 fleet start-up(s)" in warnings[0]
    # All at once: one start-up: 2700 + 600 + 300 = 3600 <= 7200: no warning.
    assert rollout.check_deployment_time(_config("ALL_AT_ONCE", None, 600, 7200), 4, 2700) == []
    # Waits past SageMaker's own maximum (28800 s) cannot be fixed by a timeout.
    with pytest.raises(rollout.RolloutError, match="beyond the 28800 s"):
        rollout.check_deployment_time(_config("LINEAR", 1, 3600, 28800), 10, 0)


def test_the_estimate_is_printed_before_the_rollout(aws, capsys):
    read_current(aws)
    alarms_ok(aws)
    assert run(aws, "--image", f"{REPO}:4567def", "--strategy", "rolling", "--step", "1", "--bake-seconds", "600",
               "--dry-run") == 0
    out = capsys.readouterr().out
    # 3 batches x (up to 1200 + 1500 s start-up + 600 s bake) = 9900 s > 7200 s.
    assert "may outlast its MaximumExecutionTimeoutInSeconds (7200 s)" in out and "about 9900 s" in out


def test_scheduled_actions_stop_an_instance_type_change(aws, capsys):
    read_current(aws, model=False)
    alarms_ok(aws)
    where = {"ServiceNamespace": "sagemaker", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aws.expect("autoscaling", "describe_scalable_targets", {"ScalableTargets": [{
        **where, "ResourceId": RESOURCE_ID, "MinCapacity": 1, "MaxCapacity": 4, "RoleARN": "arn:aws:iam::1:role/x",
        "CreationTime": NOW}]})
    aws.expect("autoscaling", "describe_scaling_policies", {"ScalingPolicies": []})
    aws.expect("autoscaling", "describe_scheduled_actions", {"ScheduledActions": [{
        "ScheduledActionName": "nightly", "ScheduledActionARN": "arn:x", "ServiceNamespace": "sagemaker",
        "Schedule": "cron(0 20 * * ? *)", "ResourceId": RESOURCE_ID, "CreationTime": NOW}]})
    assert run(aws, "--instance-type", "ml.g5.2xlarge") == 2
    assert "scheduled scaling actions that deregistering would delete" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Deployment configuration


def test_canary_keeps_bake_time_and_alarms(aws):
    read_current(aws)
    alarms_ok(aws)
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    canary = json.loads(json.dumps(TERRAFORM_DEPLOYMENT))
    canary["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] = {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}}
    aws.expect("sagemaker_write", "update_endpoint", UPDATED, {
        "EndpointName": ENDPOINT, "EndpointConfigName": NEW_NAME, "RetainAllVariantProperties": True,
        "DeploymentConfig": canary})
    assert run(aws, "--image", f"{REPO}:4567def", "--strategy", "canary", "--step", "1", "--no-wait") == 0


@pytest.mark.parametrize("strategy,step,count,ok", [
    ("canary", 1, 2, True), ("canary", 1, 1, False), ("canary", 2, 3, False),
    ("linear", 1, 10, True), ("linear", 1, 11, False), ("linear", 5, 10, True), ("linear", 6, 10, False),
    ("rolling", 1, 20, True), ("rolling", 1, 21, False), ("rolling", 3, 6, True),
    ("canary", None, 4, False),
])
def test_step_sizes_follow_the_api_bounds(strategy, step, count, ok):
    def build():  # a short bake: the timeout (7200 s) must not be what refuses here
        return rollout.deployment_config(TERRAFORM_DEPLOYMENT, strategy=strategy, step=step, bake_seconds=60,
                                         alarms=None, instance_count=count)
    if ok:
        assert build()["AutoRollbackConfiguration"] == TERRAFORM_DEPLOYMENT["AutoRollbackConfiguration"]
    else:
        with pytest.raises(rollout.RolloutError):
            build()


def test_rolling_and_bake_override():
    config = rollout.deployment_config(TERRAFORM_DEPLOYMENT, strategy="rolling", step=1, bake_seconds=300,
                                       alarms=["a"], instance_count=4)
    assert config == {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]},
                      "RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
                                              "WaitIntervalInSeconds": 300, "MaximumExecutionTimeoutInSeconds": 7200}}
    # The timeout must exceed bake + termination wait (API_BlueGreenUpdatePolicy.html).
    short = json.loads(json.dumps(TERRAFORM_DEPLOYMENT))
    short["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] = 3600
    with pytest.raises(rollout.RolloutError, match=r"\(3600\) does not exceed its waits \(3900 s\)"):
        rollout.deployment_config(short, strategy=None, step=None, bake_seconds=3600, alarms=None, instance_count=3)
    # A last rolling deployment is kept, with its batch size checked against today's count.
    kept = rollout.deployment_config(config, strategy=None, step=None, bake_seconds=None, alarms=None, instance_count=4)
    assert kept == config
    with pytest.raises(rollout.RolloutError, match="outside 5%-50%"):
        rollout.deployment_config(config, strategy=None, step=None, bake_seconds=None, alarms=None, instance_count=1)


def test_without_a_last_deployment_the_alarms_must_be_given(aws, capsys):
    ep = endpoint()
    del ep["LastDeploymentConfig"]
    read_current(aws, ep=ep)
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert "endpoint_rollback_alarm_names" in capsys.readouterr().err


def test_an_alarm_already_firing_stops_the_rollout(aws, capsys):
    read_current(aws)
    alarms_ok(aws, ("OK", "ALARM"))
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert "loom-endpoint-model-latency-p90 are in ALARM now" in capsys.readouterr().err


def test_a_missing_alarm_stops_the_rollout(aws, capsys):
    read_current(aws)
    aws.expect("cloudwatch", "describe_alarms", {"MetricAlarms": [{"AlarmName": ALARMS[0], "StateValue": "OK"}]})
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert f"{ALARMS[1]} do not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Dry run and errors


def test_dry_run_prints_the_requests_and_changes_nothing(aws, capsys):
    read_current(aws)
    alarms_ok(aws)
    assert run(aws, "--image", f"{REPO}:4567def", "--dry-run") == 0
    assert not any(c[0].endswith("_write") for c in aws.calls)
    out = capsys.readouterr().out
    blocks = out.split("--- ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["sagemaker CreateModel", "sagemaker CreateEndpointConfig",
                                                    "sagemaker UpdateEndpoint"]
    update = json.loads(blocks[2].split("\n", 1)[1])
    assert update["RetainAllVariantProperties"] is True and update["DeploymentConfig"] == TERRAFORM_DEPLOYMENT


def test_endpoint_not_found(aws, capsys):
    aws.refuse("sagemaker", "describe_endpoint", "ValidationException",
               f'Could not find endpoint "{ARN}:endpoint/{ENDPOINT}".')
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert f"endpoint '{ENDPOINT}' not found in us-east-1" in capsys.readouterr().err


@pytest.mark.parametrize("status,expected", [
    ("Updating", "an update is already in progress to loom-endpoint-r1 since 2026-11-15 10:30:00 UTC"),
    ("RollingBack", "an update is already in progress"),
    ("Failed", "is Failed, not InService: capacity error"),
    ("Creating", "is Creating, not InService"),
])
def test_an_endpoint_that_is_not_in_service_is_refused(aws, capsys, status, expected):
    ep = endpoint(status, FailureReason="capacity error") if status == "Failed" else endpoint(status)
    if status == "Updating":
        ep["PendingDeploymentSummary"] = {"EndpointConfigName": "loom-endpoint-r1", "StartTime": NOW}
    aws.expect("sagemaker", "describe_endpoint", ep)
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert expected in capsys.readouterr().err


def test_an_update_started_meanwhile_is_named(aws, capsys):
    read_current(aws)
    alarms_ok(aws)
    aws.expect("sagemaker_write", "create_model", CREATED_MODEL)
    aws.expect("sagemaker_write", "create_endpoint_config", CREATED_CONFIG)
    aws.refuse("sagemaker_write", "update_endpoint", "ValidationException",
               f'Cannot update in-progress endpoint "{ARN}:endpoint/{ENDPOINT}".')
    assert run(aws, "--image", f"{REPO}:4567def") == 2
    assert "started another update meanwhile" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,expected", [
    ("--image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/other-repo:1", "not in the repository of the current image"),
    ("--model-data", "s3://another-bucket/models/job-2/output/model.tar.gz", "not in the bucket of the current model data"),
    ("--model-data", f"s3://{BUCKET}/models/job-2/output/model.bin", "must be a model.tar.gz or a folder ending in /"),
])
def test_artifacts_the_role_cannot_read_are_refused(aws, capsys, flag, value, expected):
    aws.expect("sagemaker", "describe_endpoint", endpoint())
    aws.expect("sagemaker", "describe_endpoint_config", endpoint_config())
    aws.expect("sagemaker", "describe_model", MODEL)
    aws.expect("sagemaker", "list_tags", {"Tags": TAGS})
    assert run(aws, flag, value) == 2
    assert expected in capsys.readouterr().err


def test_the_same_image_is_nothing_to_roll_out(aws, capsys):
    aws.expect("sagemaker", "describe_endpoint", endpoint())
    aws.expect("sagemaker", "describe_endpoint_config", endpoint_config())
    aws.expect("sagemaker", "describe_model", MODEL)
    aws.expect("sagemaker", "list_tags", {"Tags": TAGS})
    assert run(aws, "--image", CONTAINER["Image"]) == 2
    assert "nothing to roll out" in capsys.readouterr().err


def test_arguments_are_checked_before_any_call(capsys):
    for argv, message in ([["--endpoint", ENDPOINT], "nothing to roll out"],
                          [["--endpoint", ENDPOINT, "--image", "x", "--bake-seconds", "4000"], "between 0 and 3600"],
                          [["--endpoint", ENDPOINT, "--image", "x", "--instance-count", "0"], "at least 1"]):
        with pytest.raises(SystemExit) as stop:
            rollout.main(argv, clients=object())  # any AWS call would fail on object()
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_names_fit_sagemaker_limits():
    assert rollout.resource_name(ENDPOINT, NOW) == NEW_NAME
    long = rollout.resource_name("e" * 40 + "-" + "f" * 22, NOW)
    assert len(long) <= 63 and long.endswith("-r20261115103000") and "--" not in long


def test_the_front_door_lists_rollout():
    assert cli.COMMANDS["rollout"][0] == "operations.rollout"


# ---------------------------------------------------------------------------------------------------
# Retries: only reads are retried. A loopback server answers like SageMaker's JSON protocol; botocore's
# standard mode retries ThrottlingException (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).


class _SageMakerStandIn(BaseHTTPRequestHandler):
    answers: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        operation = self.headers["X-Amz-Target"].split(".")[-1]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(operation)
        status, body = self.answers[operation].pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_describes_are_retried_on_throttling_and_updates_are_not(fake_aws_credentials):
    throttled = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    described = json.loads(json.dumps(endpoint(), default=lambda d: d.timestamp()))
    _SageMakerStandIn.answers = {"DescribeEndpoint": [throttled, (200, described)], "UpdateEndpoint": [throttled]}
    _SageMakerStandIn.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SageMakerStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        clients = Clients.create("us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_port}",
                                 aws_access_key_id="test", aws_secret_access_key="test")
        assert clients.sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == OLD_CONFIG
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError, match="ThrottlingException"):
            clients.sagemaker_write.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=NEW_NAME)
    finally:
        server.shutdown()
        server.server_close()
    assert _SageMakerStandIn.seen == ["DescribeEndpoint", "DescribeEndpoint", "UpdateEndpoint"]
