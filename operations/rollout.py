"""Roll a new model, image or instance type out to a live SageMaker endpoint, keeping its capacity.

    loom rollout --endpoint NAME [--model-data s3://...] [--image URI] [--instance-type TYPE]
                 [--instance-count N] [--strategy {all-at-once,canary,linear,rolling}] [--step N]
                 [--bake-seconds S] [--alarm NAME ...] [--kms-key-arn ARN] [--startup-seconds S]
                 [--skip-permission-check] [--dry-run] [--no-wait] [--wait-timeout S] [--region REGION] [--profile NAME]

Why: Terraform's provider (hashicorp/aws 5.x) sends UpdateEndpoint without RetainAllVariantProperties,
so a rollout through Terraform starts the new fleet at the configuration's InitialInstanceCount, not at
the count autoscaling has reached. This command does what the SageMaker guide describes for endpoints
under autoscaling (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html):

  1. DescribeEndpoint + DescribeEndpointConfig (+ DescribeModel, ListTags): the endpoint must be InService.
  2. CreateModel (only for a new --model-data or --image) copying the current model (role, environment,
     network isolation, VPC), and CreateEndpointConfig copying everything of the current configuration
     (KMS key, data capture, async inference, timeouts...) but the model, the instance type and the count.
  3. UpdateEndpoint with RetainAllVariantProperties=true: the variant keeps its current DesiredInstanceCount
     whatever InitialInstanceCount says; with DeploymentConfig = the endpoint's last deployment
     configuration (blue/green, bake time and the rollback alarms Terraform created), or the --strategy asked.
  4. Waits until the endpoint is InService again, printing each stage, and says whether the new
     configuration took over or SageMaker rolled back (FailureReason, the alarms' states).

An instance type change of an autoscaled variant is refused by UpdateEndpoint; as the guide says, the
variant is deregistered from Application Auto Scaling first (which deletes its policies), and registered
again with the same capacity range, tags and target-tracking policies once the update has ended (also
after a rollback). Before deregistering, iam:SimulatePrincipalPolicy checks that the caller may register it
again (--skip-permission-check when the caller may not simulate). Ctrl-C or SIGTERM afterwards registers it
again when no update can be running, or prints the exact AWS CLI commands that do it once the endpoint is
InService. --instance-count N sets the new fleet's size instead of keeping the current one.

Before starting, the deployment's steps, fleet start-ups and bake waits are set against its
MaximumExecutionTimeoutInSeconds: refused when the waits alone reach it, a warning when the estimate with
start-ups (--startup-seconds) does.

Exit status: 0 when the new configuration serves, 1 when the update failed, rolled back or is still running
at --wait-timeout, 2 for bad arguments or a request AWS refused before the update started, 130 / 143 when
interrupted by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from loom.errors import command_error
from operations import sagemaker_jobs as jobs
from operations.sagemaker_jobs import JobConfigError

# EndpointStatus values (DescribeEndpoint): while one of these holds, an update is under way.
UPDATING = ("Updating", "SystemUpdating", "RollingBack")
# Statuses a rollout ends in.
ENDED = ("InService", "Failed", "UpdateRollbackFailed", "OutOfService")
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
NAME_MAX = 63  # ModelName and EndpointConfigName: at most 63 characters
STRATEGIES = ("all-at-once", "canary", "linear", "rolling")
# CapacitySize bounds, as fractions of the variant's instance count, from the API reference:
#   TrafficRoutingConfig.CanarySize "less than or equal to 50%", LinearStepSize "10-50%",
#   RollingUpdatePolicy.MaximumBatchSize "between 5% to 50%"
#   (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html,
#    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_RollingUpdatePolicy.html).
STEP_BOUNDS = {"canary": (0.0, 0.5), "linear": (0.1, 0.5), "rolling": (0.05, 0.5)}


class RolloutError(JobConfigError):
    """Something that stops a rollout before it starts; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# Clients


_SESSIONS: dict[tuple[str | None, str | None], Any] = {}


@dataclass
class Clients:
    """Describes go through clients that retry throttling and transient errors (botocore standard mode);
    calls that change something go through clients that never retry, because a retried CreateModel,
    CreateEndpointConfig or UpdateEndpoint whose first attempt did reach AWS fails with a misleading
    'already exists' or 'cannot update in-progress endpoint'."""

    sagemaker: Any
    sagemaker_write: Any
    autoscaling: Any
    autoscaling_write: Any
    cloudwatch: Any
    sts: Any
    iam: Any

    @classmethod
    def create(cls, region: str | None = None, profile: str | None = None, **client_kwargs: Any) -> "Clients":
        import boto3

        # One session per (region, profile): it loads each service model once for all the clients.
        if (region, profile) not in _SESSIONS:
            _SESSIONS[(region, profile)] = boto3.Session(profile_name=profile, region_name=region)
        session = _SESSIONS[(region, profile)]
        read, write = jobs.retry_config(), jobs.retry_config(total_max_attempts=1)

        def make(service: str, config: Any) -> Any:
            return session.client(service, config=config, **client_kwargs)

        return cls(make("sagemaker", read), make("sagemaker", write), make("application-autoscaling", read),
                   make("application-autoscaling", write), make("cloudwatch", read), make("sts", read),
                   make("iam", read))


def _error_code(exc: Exception) -> tuple[str, str]:
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    return str(error.get("Code", type(exc).__name__)), str(error.get("Message", exc))


def _request_shape(client: Any, operation: str) -> Any:
    return client.meta.service_model.operation_model(operation).input_shape


def copy_request_fields(client: Any, operation: str, described: Mapping[str, Any], *, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of a Describe* answer that the Create* request takes, read from the service model, so
    that a field SageMaker adds later (and botocore knows) is carried over too. Nested shapes are the same
    in both (ProductionVariant, DataCaptureConfig, AsyncInferenceConfig, ContainerDefinition...)."""
    members = _request_shape(client, operation).members
    dropped = set(drop)
    return {k: copy.deepcopy(v) for k, v in described.items() if k in members and k not in dropped}


def _tags(client: Any, arn: str) -> list[dict[str, str]]:
    """The resource's tags, without the aws: ones (reserved: a request may not set them)."""
    tags: list[dict[str, str]] = []
    for page in client.get_paginator("list_tags").paginate(ResourceArn=arn):
        tags += [t for t in page.get("Tags", []) if not t["Key"].lower().startswith("aws:")]
    return tags


# ---------------------------------------------------------------------------------------------------
# Reading the endpoint


def describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    try:
        return sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        code, message = _error_code(exc)
        # DescribeEndpoint answers ValidationException "Could not find endpoint ..." for a missing endpoint.
        if code == "ValidationException" and "could not find" in message.lower():
            region = sagemaker.meta.region_name
            raise RolloutError(f"endpoint {name!r} not found in {region} ({message}); check --endpoint and "
                               "--region (`terraform -chdir=terraform output -raw endpoint_name`)") from None
        raise


def check_ready(endpoint: Mapping[str, Any]) -> None:
    """The endpoint must be InService: SageMaker refuses UpdateEndpoint during another update, and an
    endpoint in Failed/Creating/OutOfService has no fleet to roll from."""
    status = endpoint.get("EndpointStatus")
    name = endpoint.get("EndpointName")
    if status == "InService":
        return
    if status in UPDATING:
        pending = endpoint.get("PendingDeploymentSummary") or {}
        since = pending.get("StartTime")
        detail = f" to {pending['EndpointConfigName']}" if pending.get("EndpointConfigName") else ""
        detail += f" since {since:%Y-%m-%d %H:%M:%S %Z}" if isinstance(since, datetime) else ""
        raise RolloutError(f"endpoint {name} is {status}: an update is already in progress{detail}; wait until it "
                           "is InService (`aws sagemaker wait endpoint-in-service --endpoint-name "
                           f"{name}`) and run loom rollout again")
    reason = f": {endpoint['FailureReason']}" if endpoint.get("FailureReason") else ""
    raise RolloutError(f"endpoint {name} is {status}, not InService{reason}; a rollout needs a serving endpoint")


def single_variant(described: Mapping[str, Any], key: str, noun: str) -> dict[str, Any]:
    variants = described.get(key) or []
    if len(variants) != 1:
        raise RolloutError(f"{noun} has {len(variants)} production variants; loom rollout handles endpoints with "
                           "one variant (as Loom's Terraform creates them)")
    return variants[0]


# ---------------------------------------------------------------------------------------------------
# New model and endpoint configuration


def resource_name(endpoint_name: str, now: datetime) -> str:
    """"<endpoint>-r<UTC timestamp>", at most 63 characters (ModelName / EndpointConfigName)."""
    suffix = f"-r{now:%Y%m%d%H%M%S}"
    return endpoint_name[: NAME_MAX - len(suffix)].rstrip("-") + suffix


def _image_repository(image: str) -> str:
    """"<registry>/<repository>" of an image reference (the tag or digest removed)."""
    if "@" in image:
        return image.split("@", 1)[0]
    head, _, tail = image.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def model_request(model: Mapping[str, Any], sagemaker: Any, *, name: str, tags: list[dict[str, str]],
                  image: str | None, model_data: str | None) -> dict[str, Any]:
    """CreateModel for the new image and/or model data, everything else as the current model has it."""
    if model.get("Containers") or not model.get("PrimaryContainer"):
        raise RolloutError(f"model {model['ModelName']} is not a single-container model; loom rollout does not "
                           "handle inference pipelines")
    request = copy_request_fields(sagemaker, "CreateModel", model, drop=("ModelName", "Tags"))
    container = request["PrimaryContainer"]
    if image:
        current = container.get("Image", "")
        # The execution role may pull only from the repository it was given (Terraform: repository_arn).
        if _image_repository(image) != _image_repository(current):
            raise RolloutError(f"--image {image} is not in the repository of the current image ({current}); the "
                               "model's execution role may pull only from that repository")
        container["Image"] = image
    if model_data:
        bucket, key = jobs.parse_s3_uri(model_data)
        current_uri = container.get("ModelDataUrl") or container.get("ModelDataSource", {}).get("S3DataSource", {}).get("S3Uri", "")
        if current_uri and jobs.parse_s3_uri(current_uri)[0] != bucket:
            raise RolloutError(f"--model-data {model_data} is not in the bucket of the current model data "
                               f"({current_uri}); the model's execution role reads only that bucket")
        container.pop("ModelDataUrl", None)
        container.pop("ModelDataSource", None)
        if key.endswith(".tar.gz"):
            container["ModelDataUrl"] = model_data
        elif key.endswith("/"):
            # Uncompressed model files, copied without unpacking:
            #   https://docs.aws.amazon.com/sagemaker/latest/dg/large-model-inference-uncompressed.html
            container["ModelDataSource"] = {"S3DataSource": {"S3Uri": model_data, "S3DataType": "S3Prefix",
                                                             "CompressionType": "None"}}
        else:
            raise RolloutError(f"--model-data {model_data} must be a model.tar.gz or a folder ending in /")
    request["ModelName"] = name
    if tags:
        request["Tags"] = tags
    return request


def config_request(config: Mapping[str, Any], sagemaker: Any, *, name: str, model_name: str,
                   instance_type: str, instance_count: int, kms_key_arn: str | None,
                   tags: list[dict[str, str]], log: Callable[[str], None]) -> dict[str, Any]:
    """CreateEndpointConfig: the current configuration with a new model, instance type and count."""
    request = copy_request_fields(sagemaker, "CreateEndpointConfig", config, drop=("EndpointConfigName", "Tags"))
    variant = request["ProductionVariants"][0]
    # The same variant name: blue/green and rolling deployments require it
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html).
    variant.update(ModelName=model_name, InstanceType=instance_type, InitialInstanceCount=instance_count)
    key = kms_key_arn or request.get("KmsKeyId")
    if key and jobs.has_instance_storage(instance_type):
        # KmsKeyId does not encrypt the local storage of NVMe instance types, which the instance encrypts in
        # hardware (API_CreateEndpointConfig.html, KmsKeyId): it is left out there.
        log(f"note: {instance_type} has NVMe instance storage, encrypted by the instance: no KmsKeyId is sent")
        key = None
    elif not key and not jobs.has_instance_storage(instance_type):
        log(f"note: {instance_type} has an EBS volume and no KMS key is given: SageMaker encrypts it with an "
            "AWS managed key (pass --kms-key-arn for the project key)")
    request.pop("KmsKeyId", None)
    if key:
        request["KmsKeyId"] = key
    request["EndpointConfigName"] = name
    if tags:
        request["Tags"] = tags
    return request


# ---------------------------------------------------------------------------------------------------
# Deployment configuration


def _capacity(value: int) -> dict[str, Any]:
    return {"Type": "INSTANCE_COUNT", "Value": value}


def _check_step(strategy: str, size: Mapping[str, Any] | None, count: int) -> None:
    if not size:
        raise RolloutError(f"--strategy {strategy} needs --step N (instances per step)")
    low, high = STEP_BOUNDS[strategy]
    share = size["Value"] / (count if size["Type"] == "INSTANCE_COUNT" else 100)
    if not (low <= share <= high) or size["Value"] < 1:
        what = f"{size['Value']} instance(s) of {count}" if size["Type"] == "INSTANCE_COUNT" else f"{size['Value']}%"
        raise RolloutError(f"{strategy} step {what} is outside {low:.0%}-{high:.0%} of the fleet that SageMaker "
                           f"accepts; with {count} instance(s) use {'all-at-once' if count < 2 else 'a smaller --step'}")


def deployment_config(last: Mapping[str, Any] | None, *, strategy: str | None, step: int | None,
                      bake_seconds: int | None, alarms: Sequence[str] | None, instance_count: int) -> dict[str, Any]:
    """The DeploymentConfig to send: the endpoint's last one (LastDeploymentConfig: what Terraform or the
    previous rollout sent), with the strategy, step, bake time or alarms given on the command line."""
    last = copy.deepcopy(dict(last or {}))
    blue_green = last.get("BlueGreenUpdatePolicy") or {}
    rolling = last.get("RollingUpdatePolicy") or {}
    routing = blue_green.get("TrafficRoutingConfiguration") or {}
    names = list(alarms or [a["AlarmName"] for a in (last.get("AutoRollbackConfiguration") or {}).get("Alarms", [])])
    if not names:
        raise RolloutError("the endpoint's last deployment configuration has no rollback alarms: pass --alarm for each "
                           "(`terraform -chdir=terraform output endpoint_rollback_alarm_names`)")
    bake = bake_seconds if bake_seconds is not None else routing.get("WaitIntervalInSeconds", rolling.get("WaitIntervalInSeconds"))
    if bake is None:
        raise RolloutError("the endpoint has no last deployment configuration to take the bake time from: pass --bake-seconds")
    timeout = blue_green.get("MaximumExecutionTimeoutInSeconds") or rolling.get("MaximumExecutionTimeoutInSeconds")

    if strategy is None:  # keep the last policy
        if rolling:
            strategy, size = "rolling", rolling.get("MaximumBatchSize")
        else:
            strategy = {"CANARY": "canary", "LINEAR": "linear"}.get(routing.get("Type", "ALL_AT_ONCE"), "all-at-once")
            size = routing.get("CanarySize") or routing.get("LinearStepSize")
        if step is not None:
            size = _capacity(step)
    else:
        size = _capacity(step) if step is not None else None
    if strategy != "all-at-once":
        _check_step(strategy, size, instance_count)

    config: dict[str, Any] = {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": n} for n in names]}}
    if strategy == "rolling":
        policy: dict[str, Any] = {"MaximumBatchSize": size, "WaitIntervalInSeconds": bake}
        if rolling.get("RollbackMaximumBatchSize"):
            policy["RollbackMaximumBatchSize"] = rolling["RollbackMaximumBatchSize"]
        if timeout:
            policy["MaximumExecutionTimeoutInSeconds"] = timeout
        config["RollingUpdatePolicy"] = policy
    else:
        traffic: dict[str, Any] = {"Type": strategy.upper().replace("-", "_"), "WaitIntervalInSeconds": bake}
        if strategy == "canary":
            traffic["CanarySize"] = size
        elif strategy == "linear":
            traffic["LinearStepSize"] = size
        policy = {"TrafficRoutingConfiguration": traffic}
        if "TerminationWaitInSeconds" in blue_green:
            policy["TerminationWaitInSeconds"] = blue_green["TerminationWaitInSeconds"]
        if timeout:
            policy["MaximumExecutionTimeoutInSeconds"] = timeout
        config["BlueGreenUpdatePolicy"] = policy
    # "the timeout value should be larger than the total waiting time specified in
    # TerminationWaitInSeconds and WaitIntervalInSeconds" (API_BlueGreenUpdatePolicy.html); a linear or rolling
    # deployment waits once per step (deployment_time below).
    waits = deployment_time(config, instance_count, startup_s=0).waits_s
    if timeout and timeout <= waits:
        raise RolloutError(f"the deployment's MaximumExecutionTimeoutInSeconds ({timeout}) does not exceed its waits "
                           f"({waits} s): lower --bake-seconds" + (" or take larger steps" if strategy in ("linear", "rolling") else ""))
    return config


# MaximumExecutionTimeoutInSeconds: 600 to 28800 (API_BlueGreenUpdatePolicy.html, API_RollingUpdatePolicy.html).
MAX_EXECUTION_TIMEOUT_S = 28800


@dataclass(frozen=True)
class DeploymentTime:
    """How long a deployment takes at least (`waits_s`: its bake periods and termination wait, which SageMaker
    waits in full) and about (`estimate_s`: plus `starts` fleet start-ups of `startup_s` each)."""

    steps: int
    starts: int
    waits_s: int
    startup_s: int

    @property
    def estimate_s(self) -> int:
        return self.waits_s + self.starts * self.startup_s


def _instances(size: Mapping[str, Any], count: int) -> int:
    if size.get("Type") == "CAPACITY_PERCENT":
        return max(1, count * int(size["Value"]) // 100)
    return max(1, int(size["Value"]))


def deployment_time(config: Mapping[str, Any], instance_count: int, *, startup_s: int) -> DeploymentTime:
    """Steps, fleet start-ups and waits of a DeploymentConfig for a fleet of `instance_count`.

    Blue/green (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html): the
    whole new fleet starts once, then traffic shifts: all at once and a bake; a canary and a bake, then the
    rest; linear steps of LinearStepSize with a WaitIntervalInSeconds between them ("the waiting time between
    incremental steps", API_TrafficRoutingConfig.html); then TerminationWaitInSeconds. Rolling
    (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-rolling.html): batches of
    MaximumBatchSize, each started and baked ("the baking period, during which SageMaker monitors alarms for
    each batch", API_RollingUpdatePolicy.html). MaximumExecutionTimeoutInSeconds covers all of it."""
    rolling = config.get("RollingUpdatePolicy")
    if rolling:
        steps = -(-instance_count // _instances(rolling["MaximumBatchSize"], instance_count))
        return DeploymentTime(steps, steps, steps * int(rolling["WaitIntervalInSeconds"]), startup_s)
    policy = config["BlueGreenUpdatePolicy"]
    routing = policy["TrafficRoutingConfiguration"]
    bake, termination = int(routing.get("WaitIntervalInSeconds", 0)), int(policy.get("TerminationWaitInSeconds", 0))
    if routing["Type"] == "LINEAR":
        steps = -(-instance_count // _instances(routing["LinearStepSize"], instance_count))
        return DeploymentTime(steps, 1, max(1, steps - 1) * bake + termination, startup_s)
    steps = 2 if routing["Type"] == "CANARY" else 1
    return DeploymentTime(steps, 1, bake + termination, startup_s)


def check_deployment_time(config: Mapping[str, Any], instance_count: int, startup_s: int) -> list[str]:
    """RolloutError when the deployment cannot fit MaximumExecutionTimeoutInSeconds; warnings when its estimate
    with fleet start-ups does not."""
    policy = config.get("BlueGreenUpdatePolicy") or config.get("RollingUpdatePolicy") or {}
    timeout = policy.get("MaximumExecutionTimeoutInSeconds")
    time_needed = deployment_time(config, instance_count, startup_s=startup_s)
    if time_needed.waits_s >= MAX_EXECUTION_TIMEOUT_S:
        raise RolloutError(f"the deployment's {time_needed.steps} step(s) wait {time_needed.waits_s} s in all, beyond the "
                           f"{MAX_EXECUTION_TIMEOUT_S} s SageMaker allows a deployment: take larger steps or a shorter "
                           "--bake-seconds")
    if not timeout:
        return []
    if time_needed.estimate_s > timeout:
        return [f"warning: the deployment may outlast its MaximumExecutionTimeoutInSeconds ({timeout} s): "
                f"{time_needed.steps} step(s), {time_needed.starts} fleet start-up(s) of up to {startup_s} s and "
                f"{time_needed.waits_s} s of bake and termination waits come to about {time_needed.estimate_s} s; "
                "SageMaker rolls back a deployment that runs past it. Take larger steps, a shorter --bake-seconds, or "
                "raise the timeout (Terraform's deployment configuration, at most 28800 s)"]
    return []


def check_alarms(cloudwatch: Any, names: Sequence[str]) -> dict[str, str]:
    """{alarm name: state}; every rollback alarm must exist, and none may be in ALARM already (the
    rollout would roll back at its first bake)."""
    answer = cloudwatch.describe_alarms(AlarmNames=list(names), AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    states = {a["AlarmName"]: a["StateValue"] for a in answer.get("MetricAlarms", []) + answer.get("CompositeAlarms", [])}
    missing = [n for n in names if n not in states]
    if missing:
        raise RolloutError(f"rollback alarm(s) {', '.join(missing)} do not exist in this account and Region; SageMaker "
                           "could not watch them (Terraform creates <endpoint>-invocation-5xx and "
                           "<endpoint>-model-latency-p90)")
    firing = [n for n in names if states[n] == "ALARM"]
    if firing:
        raise RolloutError(f"rollback alarm(s) {', '.join(firing)} are in ALARM now: the rollout would roll back at "
                           "once; look at what they report first")
    return states


# ---------------------------------------------------------------------------------------------------
# Autoscaling around an instance type change


@dataclass
class Autoscaling:
    """A variant's scalable target and target-tracking policies, to register again after the update."""

    resource_id: str
    target: dict[str, Any]
    policies: list[dict[str, Any]]
    tags: dict[str, str] = field(default_factory=dict)

    def deregister_request(self) -> dict[str, Any]:
        return {"ServiceNamespace": "sagemaker", "ResourceId": self.resource_id, "ScalableDimension": SCALABLE_DIMENSION}

    def register_request(self) -> dict[str, Any]:
        request = {**self.deregister_request(), "MinCapacity": self.target["MinCapacity"],
                   "MaxCapacity": self.target["MaxCapacity"]}
        if self.target.get("SuspendedState"):
            request["SuspendedState"] = self.target["SuspendedState"]
        if self.tags:
            request["Tags"] = self.tags
        return request


def read_autoscaling(client: Any, endpoint_name: str, variant_name: str) -> Autoscaling | None:
    """The variant's autoscaling, or None when it is not a scalable target."""
    resource_id = f"endpoint/{endpoint_name}/variant/{variant_name}"
    where = {"ServiceNamespace": "sagemaker", "ScalableDimension": SCALABLE_DIMENSION}
    targets = client.describe_scalable_targets(ResourceIds=[resource_id], **where).get("ScalableTargets", [])
    if not targets:
        return None
    policies = client.describe_scaling_policies(ResourceId=resource_id, **where).get("ScalingPolicies", [])
    scheduled = client.describe_scheduled_actions(ResourceId=resource_id, **where).get("ScheduledActions", [])
    # DeregisterScalableTarget "deletes the scaling policies and the scheduled actions that are associated
    # with it" (API_DeregisterScalableTarget.html). Target-tracking policies are put back as they were; a
    # step policy is the action of an alarm that names its ARN (a new one would leave that alarm dangling).
    if scheduled:
        raise RolloutError(f"{resource_id} has scheduled scaling actions that deregistering would delete; remove "
                           "them first, or change the instance type through Terraform")
    others = [p["PolicyName"] for p in policies if p.get("PolicyType") != "TargetTrackingScaling"]
    if others:
        raise RolloutError(f"{resource_id} has scaling policies other than target tracking ({', '.join(others)}); "
                           "change the instance type through Terraform")
    tags: dict[str, str] = {}
    if targets[0].get("ScalableTargetARN"):
        tags = client.list_tags_for_resource(ResourceARN=targets[0]["ScalableTargetARN"]).get("Tags", {})
    return Autoscaling(resource_id, targets[0], policies, tags)


def policy_requests(client: Any, autoscaling: Autoscaling) -> list[dict[str, Any]]:
    return [copy_request_fields(client, "PutScalingPolicy", p) for p in autoscaling.policies]


def startup_window(config_request: Mapping[str, Any]) -> int:
    """The longest a new fleet may take to start: the variant's model download and container health-check
    timeouts (what SageMaker waits at most, API_ProductionVariant.html), or 600 s when neither is set."""
    variant = config_request["ProductionVariants"][0]
    window = int(variant.get("ModelDataDownloadTimeoutInSeconds") or 0) + \
        int(variant.get("ContainerStartupHealthCheckTimeoutInSeconds") or 0)
    return window or 600


# What the caller needs once the variant is deregistered, so that it can be registered again. Registering a
# SageMaker variant needs sagemaker:DescribeEndpoint, DescribeEndpointConfig, UpdateEndpointWeightsAndCapacities
# and iam:CreateServiceLinkedRole (for AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint); a
# target-tracking policy needs cloudwatch:PutMetricAlarm, DescribeAlarms and DeleteAlarms (it creates and
# replaces its alarms); tags on RegisterScalableTarget need application-autoscaling:TagResource. Sources:
#   https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html
#   https://docs.aws.amazon.com/autoscaling/application/userguide/security_iam_id-based-policy-examples.html
#   https://docs.aws.amazon.com/autoscaling/application/userguide/application-auto-scaling-service-linked-roles.html
AUTOSCALING_ACTIONS = (
    "application-autoscaling:DeregisterScalableTarget", "application-autoscaling:RegisterScalableTarget",
    "application-autoscaling:PutScalingPolicy", "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies", "application-autoscaling:TagResource",
    "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms",
)
# Each SageMaker action is simulated against the resource types it is authorised on (Service Authorization
# Reference, "Actions, resources, and condition keys for Amazon SageMaker",
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html):
# DescribeEndpoint and UpdateEndpointWeightsAndCapacities on endpoint; UpdateEndpoint on endpoint and
# endpoint-config (the configuration it deploys); CreateEndpointConfig and DescribeEndpointConfig on
# endpoint-config (registering the variant describes the configuration the endpoint runs: the current one, and
# the new one after the update); CreateModel on model, with iam:PassRole on its execution role.
ENDPOINT_ACTIONS = (
    "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities",
)
NEW_CONFIG_ACTIONS = ("sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpoint")
CURRENT_CONFIG_ACTIONS = ("sagemaker:DescribeEndpointConfig",)
MODEL_ACTIONS = ("sagemaker:CreateModel",)
AUTOSCALING_SLR_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
AUTOSCALING_SLR_NAME = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


def sagemaker_arn(endpoint_arn: str, resource_type: str, name: str) -> str:
    """The ARN of a SageMaker resource in the endpoint's account and Region. SageMaker writes resource names
    in ARNs in lower case (DescribeEndpoint's EndpointArn for an endpoint named with capitals)."""
    prefix = endpoint_arn.rsplit(":", 1)[0]
    return f"{prefix}:{resource_type}/{name.lower()}"


def service_linked_role_exists(iam: Any) -> bool | None:
    """Whether Application Auto Scaling's service-linked role for SageMaker exists (iam:GetRole): True, False, or
    None when GetRole is refused (then iam:CreateServiceLinkedRole stays required)."""
    from botocore.exceptions import ClientError

    try:
        iam.get_role(RoleName=AUTOSCALING_SLR_NAME)
        return True
    except ClientError as exc:
        code, _ = _error_code(exc)
        if code == "NoSuchEntity":
            return False
        if code in ("AccessDenied", "AccessDeniedException"):
            return None
        raise


def caller_principal(clients: Clients) -> str | None:
    """The IAM ARN SimulatePrincipalPolicy takes for the caller: a user's ARN, or for an assumed role the role's
    ARN with its path (iam:GetRole); None for the account root (which IAM policies do not limit)."""
    arn = clients.sts.get_caller_identity()["Arn"]
    parts = arn.split(":", 5)
    if parts[5] == "root":
        return None
    if parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return clients.iam.get_role(RoleName=role)["Role"]["Arn"]
    if parts[2] == "iam":
        return arn
    raise RolloutError(f"cannot check the permissions of {arn} (a federated user): use an IAM role or user, or pass "
                       "--skip-permission-check")


def check_autoscaling_permissions(clients: Clients, endpoint: Mapping[str, Any], autoscaling: "Autoscaling", *,
                                  current_config_arn: str, new_config_name: str,
                                  model: Mapping[str, Any] | None = None, skip: bool,
                                  log: Callable[[str], None]) -> None:
    """Before the variant is deregistered: may the caller update the endpoint and register it again with its
    policies? iam:SimulatePrincipalPolicy on the caller's identity policies (and permissions boundary); a
    missing permission refuses the rollout. When the simulation itself is refused, the rollout is refused too
    unless --skip-permission-check says the caller checked by hand (a deregistered variant that cannot be
    registered again stays without autoscaling)."""
    from botocore.exceptions import ClientError

    endpoint_arn = endpoint["EndpointArn"]
    account = endpoint_arn.split(":")[4]
    partition = endpoint_arn.split(":")[1]
    slr = (f"arn:{partition}:iam::{account}:role/aws-service-role/{AUTOSCALING_SLR_SERVICE}/{AUTOSCALING_SLR_NAME}")
    groups: list[tuple[Sequence[str], list[str], list[dict[str, Any]]]] = [
        (ENDPOINT_ACTIONS, [endpoint_arn], []),
        (NEW_CONFIG_ACTIONS, [sagemaker_arn(endpoint_arn, "endpoint-config", new_config_name)], []),
        (CURRENT_CONFIG_ACTIONS, [current_config_arn], []),
    ]
    if model is not None:
        groups += [
            (MODEL_ACTIONS, [sagemaker_arn(endpoint_arn, "model", model["ModelName"])], []),
            (("iam:PassRole",), [model["ExecutionRoleArn"]], [{"ContextKeyName": "iam:PassedToService",
                                                               "ContextKeyValues": ["sagemaker.amazonaws.com"],
                                                               "ContextKeyType": "string"}]),
        ]
    groups.append((AUTOSCALING_ACTIONS, ["*"], []))
    slr_group = (("iam:CreateServiceLinkedRole",), [slr], [{"ContextKeyName": "iam:AWSServiceName",
                                                            "ContextKeyValues": [AUTOSCALING_SLR_SERVICE],
                                                            "ContextKeyType": "string"}])
    if skip:
        log("warning: --skip-permission-check: the permissions to register autoscaling again are not checked")
        return
    try:
        principal = caller_principal(clients)
        if principal is None:
            log("permissions: the account root is not limited by IAM policies; not simulated")
            return
        # Registering a variant creates the service-linked role only when it is missing; once it exists
        # iam:CreateServiceLinkedRole is not needed (application-autoscaling-service-linked-roles.html).
        if service_linked_role_exists(clients.iam):
            log(f"permissions: {AUTOSCALING_SLR_NAME} exists; iam:CreateServiceLinkedRole is not needed")
        else:
            groups.append(slr_group)
        denied = []
        for actions, resources, context in groups:
            request: dict[str, Any] = {"PolicySourceArn": principal, "ActionNames": list(actions),
                                       "ResourceArns": resources}
            if context:
                request["ContextEntries"] = context
            for page in clients.iam.get_paginator("simulate_principal_policy").paginate(**request):
                denied += [f"{r['EvalActionName']} on {resources[0]} ({r['EvalDecision']})"
                           for r in page["EvaluationResults"] if r["EvalDecision"] != "allowed"]
    except ClientError as exc:
        code, message = _error_code(exc)
        if code not in ("AccessDenied", "AccessDeniedException", "NoSuchEntity"):
            raise
        raise RolloutError(f"could not check the permissions the instance type change needs ({code}: {message}). "
                           f"{autoscaling.resource_id} is deregistered from autoscaling during the update and "
                           "registered again after it; without these permissions it would stay unregistered: "
                           f"{', '.join(dict.fromkeys(ENDPOINT_ACTIONS + NEW_CONFIG_ACTIONS + AUTOSCALING_ACTIONS))}, "
                           "iam:CreateServiceLinkedRole. "
                           "Grant iam:SimulatePrincipalPolicy (and iam:GetRole for a role), or check them yourself "
                           "and pass --skip-permission-check") from None
    if denied:
        raise RolloutError(f"the caller ({principal}) lacks permissions that an instance type change needs to register "
                           f"{autoscaling.resource_id} for autoscaling again: {', '.join(denied)}; nothing was changed "
                           "(docs/deploy.md lists them)")
    log(f"permissions: {principal} may update the endpoint and register autoscaling again")


# ---------------------------------------------------------------------------------------------------
# Waiting


@dataclass(frozen=True)
class Outcome:
    status: str  # "succeeded", "rolled back", "failed", "timed out"
    endpoint: Mapping[str, Any]
    seconds: float


def progress_line(endpoint: Mapping[str, Any]) -> str:
    """"Updating: Creating (Launching instances) / Baking ..." from a DescribeEndpoint answer."""
    text = str(endpoint.get("EndpointStatus"))
    pending = endpoint.get("PendingDeploymentSummary") or {}
    stages = []
    for variant in pending.get("ProductionVariants") or endpoint.get("ProductionVariants") or []:
        for stage in variant.get("VariantStatus") or []:
            message = f" ({stage['StatusMessage']})" if stage.get("StatusMessage") else ""
            stages.append(f"{stage['Status']}{message}")
        if variant.get("CurrentInstanceCount") is not None and pending:
            stages.append(f"new fleet {variant.get('CurrentInstanceCount')}/{variant.get('DesiredInstanceCount')} instances")
    return text + (": " + ", ".join(stages) if stages else "")


def wait_for_update(describe: Callable[[], Mapping[str, Any]], new_config: str, *, log: Callable[[str], None],
                    timeout_s: float, sleep: Callable[[float], None] | None = None,
                    delays: Iterable[float] | None = None, clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Poll DescribeEndpoint until the update has ended; print each change of stage."""
    sleep = sleep or time.sleep
    delays = iter(delays if delays is not None else jobs.backoff_delays(initial=10.0, maximum=60.0))
    started = clock()
    last = None
    seen_update = False
    while True:
        endpoint = describe()
        status = endpoint.get("EndpointStatus")
        line = progress_line(endpoint)
        if line != last:
            log(f"  +{clock() - started:5.0f}s  {line}")
            last = line
        seen_update = seen_update or status in UPDATING or endpoint.get("EndpointConfigName") == new_config
        # Right after UpdateEndpoint the endpoint can still read InService with the old configuration.
        if status in ENDED and seen_update:
            elapsed = clock() - started
            if status == "InService":
                verdict = "succeeded" if endpoint.get("EndpointConfigName") == new_config else "rolled back"
            else:
                verdict = "failed"
            return Outcome(verdict, endpoint, elapsed)
        if clock() - started > timeout_s:
            return Outcome("timed out", endpoint, clock() - started)
        sleep(next(delays))


# ---------------------------------------------------------------------------------------------------
# The rollout


@dataclass
class Plan:
    endpoint: dict[str, Any]
    current_config: dict[str, Any]
    instance_type: str
    instance_count: int
    model: dict[str, Any] | None
    config: dict[str, Any]
    update: dict[str, Any]
    autoscaling: Autoscaling | None
    policies: list[dict[str, Any]]
    alarm_states: dict[str, str]


def plan_rollout(args: argparse.Namespace, clients: Clients, *, log: Callable[[str], None],
                 now: datetime | None = None) -> Plan:
    sagemaker = clients.sagemaker
    endpoint = describe_endpoint(sagemaker, args.endpoint)
    check_ready(endpoint)
    summary = single_variant(endpoint, "ProductionVariants", f"endpoint {args.endpoint}")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = single_variant(config, "ProductionVariants", f"endpoint configuration {config['EndpointConfigName']}")
    if variant.get("ServerlessConfig"):
        raise RolloutError(f"endpoint {args.endpoint} is serverless: it has no instances to keep; update it through Terraform")

    instance_type = args.instance_type or variant["InstanceType"]
    if instance_type != variant["InstanceType"]:
        jobs.has_instance_storage(instance_type)  # JobConfigError for something that is not an instance type
    current_count = summary.get("DesiredInstanceCount") or summary.get("CurrentInstanceCount") or variant["InitialInstanceCount"]
    instance_count = args.instance_count or current_count
    name = resource_name(args.endpoint, now or datetime.now(timezone.utc))

    model = None
    if args.model_data or args.image:
        current_model = sagemaker.describe_model(ModelName=variant["ModelName"])
        model = model_request(current_model, sagemaker, name=name, tags=_tags(sagemaker, current_model["ModelArn"]),
                              image=args.image, model_data=args.model_data)
        if model["PrimaryContainer"] == current_model["PrimaryContainer"]:
            model = None  # the image and model data it already serves
    if model is None and instance_type == variant["InstanceType"]:
        raise RolloutError(f"nothing to roll out: {args.endpoint} already serves this image and model data on "
                           f"{instance_type}")

    new_config = config_request(config, sagemaker, name=name, model_name=model["ModelName"] if model else variant["ModelName"],
                                instance_type=instance_type, instance_count=instance_count, kms_key_arn=args.kms_key_arn,
                                tags=_tags(sagemaker, config["EndpointConfigArn"]), log=log)
    deployment = deployment_config(endpoint.get("LastDeploymentConfig"), strategy=args.strategy, step=args.step,
                                   bake_seconds=args.bake_seconds, alarms=args.alarm, instance_count=instance_count)
    startup_s = args.startup_seconds if args.startup_seconds is not None else startup_window(new_config)
    for warning in check_deployment_time(deployment, instance_count, startup_s):
        log(warning)
    alarm_states = check_alarms(clients.cloudwatch, [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]])

    update: dict[str, Any] = {"EndpointName": args.endpoint, "EndpointConfigName": name,
                              # Keep DesiredInstanceCount (what autoscaling reached) and DesiredWeight:
                              # "production variants with the same name will be updated with the most recent
                              # DesiredInstanceCount from the response to DescribeEndpoint, regardless of the
                              # values of the InitialInstanceCount field in the new EndpointConfig"
                              # (endpoint-scaling-update.html; API_UpdateEndpoint.html RetainAllVariantProperties).
                              "RetainAllVariantProperties": True,
                              "DeploymentConfig": deployment}
    if args.instance_count:
        # Only an explicit --instance-count overrides the kept count: DesiredInstanceCount in this list "overrides
        # the existing variant instance counts using the InitialInstanceCount values" of the new configuration
        # (API_VariantProperty.html). The instance type is not a retained property: it always comes from the
        # new configuration, so an instance type change needs no exclusion to keep the count.
        update["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DesiredInstanceCount"}]

    autoscaling = None
    if instance_type != variant["InstanceType"]:
        autoscaling = read_autoscaling(clients.autoscaling, args.endpoint, variant["VariantName"])
        if autoscaling and args.no_wait:
            raise RolloutError("an instance type change of an autoscaled variant waits for the update to re-register "
                               "autoscaling: leave out --no-wait")
        if autoscaling:
            check_autoscaling_permissions(clients, endpoint, autoscaling, current_config_arn=config["EndpointConfigArn"],
                                          new_config_name=new_config["EndpointConfigName"], model=model,
                                          skip=args.skip_permission_check, log=log)
    policies = policy_requests(clients.autoscaling_write, autoscaling) if autoscaling else []
    return Plan(endpoint, config, instance_type, instance_count, model, new_config, update, autoscaling, policies, alarm_states)


def requests_in_order(plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    steps: list[tuple[str, dict[str, Any]]] = []
    if plan.model:
        steps.append(("sagemaker CreateModel", plan.model))
    steps.append(("sagemaker CreateEndpointConfig", plan.config))
    if plan.autoscaling:
        steps.append(("application-autoscaling DeregisterScalableTarget", plan.autoscaling.deregister_request()))
    steps.append(("sagemaker UpdateEndpoint", plan.update))
    if plan.autoscaling:
        steps.append(("application-autoscaling RegisterScalableTarget", plan.autoscaling.register_request()))
        steps += [("application-autoscaling PutScalingPolicy", p) for p in plan.policies]
    return steps


def _restore_autoscaling(plan: Plan, clients: Clients, log: Callable[[str], None]) -> bool:
    """Register the variant again with its capacity range, tags and policies; True when all of it worked."""
    from botocore.exceptions import BotoCoreError, ClientError

    assert plan.autoscaling is not None
    try:
        clients.autoscaling_write.register_scalable_target(**plan.autoscaling.register_request())
        for policy in plan.policies:
            clients.autoscaling_write.put_scaling_policy(**policy)
    except (BotoCoreError, ClientError) as exc:
        log(f"error: could not register {plan.autoscaling.resource_id} for autoscaling again ({exc})")
        _print_restore(plan, clients, log, "registering it again failed")
        return False
    target = plan.autoscaling.target
    log(f"autoscaling: {plan.autoscaling.resource_id} registered again ({target['MinCapacity']}-{target['MaxCapacity']} "
        f"instances, {len(plan.policies)} policy(ies))")
    return True


def report(outcome: Outcome, plan: Plan, clients: Clients, log: Callable[[str], None]) -> int:
    endpoint = outcome.endpoint
    name, old_config = plan.update["EndpointName"], plan.current_config["EndpointConfigName"]
    counts = single_variant(endpoint, "ProductionVariants", f"endpoint {name}") if endpoint.get("ProductionVariants") else {}
    if outcome.status == "succeeded":
        log(f"rolled out: {name} serves {plan.update['EndpointConfigName']} (was {old_config}) on "
            f"{counts.get('CurrentInstanceCount', '?')} x {plan.instance_type} after {outcome.seconds:.0f}s")
        return 0
    if outcome.status == "timed out":
        log(f"error: {name} is still {endpoint.get('EndpointStatus')} after {outcome.seconds:.0f}s; the update goes on: "
            f"`aws sagemaker describe-endpoint --endpoint-name {name}`")
        return 1
    reason = endpoint.get("FailureReason") or "SageMaker gave no FailureReason"
    alarms = [a["AlarmName"] for a in ((endpoint.get("LastDeploymentConfig") or plan.update["DeploymentConfig"])
                                       .get("AutoRollbackConfiguration") or {}).get("Alarms", [])]
    states = ""
    if alarms:
        try:
            answer = clients.cloudwatch.describe_alarms(AlarmNames=alarms, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
            states = ", ".join(f"{a['AlarmName']} {a['StateValue']}" for a in answer.get("MetricAlarms", []) + answer.get("CompositeAlarms", []))
        except Exception as exc:  # the report must not hide the outcome
            states = f"(could not read them: {exc})"
    if outcome.status == "rolled back":
        log(f"rolled back: {name} serves {endpoint.get('EndpointConfigName')} again, not {plan.update['EndpointConfigName']}, "
            f"after {outcome.seconds:.0f}s")
    else:
        log(f"failed: {name} is {endpoint.get('EndpointStatus')} after {outcome.seconds:.0f}s")
    log(f"  reason: {reason}")
    if alarms:
        log(f"  rollback alarms now: {states or ', '.join(alarms)}")
    log(f"  the new fleet's logs: /aws/sagemaker/Endpoints/{name} (CloudWatch Logs)")
    return 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the rollout can put back (or say how to put back) what it changed."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def restore_commands(plan: Plan, clients: Clients) -> list[str]:
    """The AWS CLI commands that register the variant for autoscaling again, exactly as loom rollout would."""
    assert plan.autoscaling is not None
    region = clients.autoscaling_write.meta.region_name
    name = plan.update["EndpointName"]
    lines = [f"aws sagemaker wait endpoint-in-service --region {region} --endpoint-name {shlex.quote(name)}",
             f"aws application-autoscaling register-scalable-target --region {region} --cli-input-json "
             f"{shlex.quote(json.dumps(plan.autoscaling.register_request(), sort_keys=True))}"]
    lines += [f"aws application-autoscaling put-scaling-policy --region {region} --cli-input-json "
              f"{shlex.quote(json.dumps(policy, sort_keys=True, default=str))}" for policy in plan.policies]
    return lines


def _print_restore(plan: Plan, clients: Clients, log: Callable[[str], None], why: str) -> None:
    assert plan.autoscaling is not None
    log(f"autoscaling: {plan.autoscaling.resource_id} is not registered; {why}. Once the endpoint is InService, "
        "register it again with its range, tags and policies:")
    for line in restore_commands(plan, clients):
        log(f"  {line}")


def execute(plan: Plan, clients: Clients, *, log: Callable[[str], None], wait: bool, timeout_s: float | None,
            sleep: Callable[[float], None] | None = None, delays: Iterable[float] | None = None) -> int:
    """Send the requests and wait. Ctrl-C or SIGTERM after the variant was deregistered puts autoscaling back
    when no update can be running (or the update has ended), and otherwise prints the exact commands that
    do it once the endpoint is InService: an endpoint must not be left without autoscaling silently."""
    progress = {"deregistered": False, "update_called": False}
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _execute(plan, clients, progress, log=log, wait=wait, timeout_s=timeout_s, sleep=sleep, delays=delays)
    except KeyboardInterrupt as exc:
        return _interrupted(plan, clients, progress, log, terminated=isinstance(exc, Terminated))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupted(plan: Plan, clients: Clients, progress: Mapping[str, bool], log: Callable[[str], None], *,
                 terminated: bool) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    code, what = (143, "terminated (SIGTERM)") if terminated else (130, "interrupted")
    name = plan.update["EndpointName"]
    if progress["update_called"]:
        log(f"{what}: an update of {name} may be running without loom rollout: "
            f"`aws sagemaker describe-endpoint --endpoint-name {name}`")
    else:
        log(f"{what} before UpdateEndpoint: {name} still serves {plan.current_config['EndpointConfigName']}")
    if not (plan.autoscaling and progress["deregistered"]):
        return code
    endpoint: Mapping[str, Any] = {}
    if progress["update_called"]:
        try:
            endpoint = clients.sagemaker.describe_endpoint(EndpointName=name)
        except (KeyboardInterrupt, BotoCoreError, ClientError):
            endpoint = {}
    # Registering is safe when no update can be running: it was never sent, or it has ended on the new
    # configuration. Otherwise an update may be starting or running, and registering could make SageMaker
    # refuse or roll back the instance type change: print the commands instead.
    ended = endpoint.get("EndpointStatus") == "InService" and endpoint.get("EndpointConfigName") == plan.update["EndpointConfigName"]
    if not progress["update_called"] or ended:
        try:
            if _restore_autoscaling(plan, clients, log):
                return code
        except KeyboardInterrupt:
            pass
        _print_restore(plan, clients, log, "registering it again did not finish")
        return code
    _print_restore(plan, clients, log, f"the update may still be running ({endpoint.get('EndpointStatus') or 'status unknown'})")
    return code


def _execute(plan: Plan, clients: Clients, progress: dict[str, bool], *, log: Callable[[str], None], wait: bool,
             timeout_s: float | None, sleep: Callable[[float], None] | None = None,
             delays: Iterable[float] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    sagemaker = clients.sagemaker_write
    if plan.model:
        sagemaker.create_model(**plan.model)
        log(f"created model {plan.model['ModelName']}")
    sagemaker.create_endpoint_config(**plan.config)
    log(f"created endpoint configuration {plan.config['EndpointConfigName']} ({plan.instance_type})")
    if plan.autoscaling:
        progress["deregistered"] = True  # from here on: the request may have reached AWS
        clients.autoscaling_write.deregister_scalable_target(**plan.autoscaling.deregister_request())
        log(f"autoscaling: {plan.autoscaling.resource_id} deregistered (SageMaker refuses an instance type change of an "
            "autoscaled variant)")
    try:
        progress["update_called"] = True
        sagemaker.update_endpoint(**plan.update)
    except (BotoCoreError, ClientError) as exc:
        if plan.autoscaling:
            _restore_autoscaling(plan, clients, log)
        code, message = _error_code(exc)
        if code == "ValidationException" and "in-progress" in message.lower().replace(" in progress", " in-progress"):
            raise RolloutError(f"endpoint {plan.update['EndpointName']} started another update meanwhile ({message}); "
                               "wait until it is InService and run loom rollout again") from None
        raise
    deployment = plan.update["DeploymentConfig"]
    kind = "rolling" if "RollingUpdatePolicy" in deployment else \
        "blue/green " + deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"].lower().replace("_", "-")
    kept = "set to" if "ExcludeRetainedVariantProperties" in plan.update else "kept at"
    log(f"updating {plan.update['EndpointName']}: {kind}, instance count {kept} {plan.instance_count}, rollback on "
        f"{', '.join(a['AlarmName'] for a in deployment['AutoRollbackConfiguration']['Alarms'])}")
    if not wait:
        log(f"not waiting: `aws sagemaker wait endpoint-in-service --endpoint-name {plan.update['EndpointName']}`")
        return 0
    limit = timeout_s or _default_timeout(deployment)
    try:
        outcome = wait_for_update(lambda: clients.sagemaker.describe_endpoint(EndpointName=plan.update["EndpointName"]),
                                  plan.update["EndpointConfigName"], log=log, timeout_s=limit, sleep=sleep, delays=delays)
    except (BotoCoreError, ClientError) as exc:
        # The update goes on without us; so does the missing autoscaling registration.
        log(f"lost track of the update ({exc}): the update goes on: "
            f"`aws sagemaker describe-endpoint --endpoint-name {plan.update['EndpointName']}`")
        if plan.autoscaling:
            _print_restore(plan, clients, log, "loom rollout cannot see the update end")
        return 1
    status = report(outcome, plan, clients, log)
    if plan.autoscaling:
        if outcome.status == "timed out":
            _print_restore(plan, clients, log, "the update is still running")
        elif not _restore_autoscaling(plan, clients, log):
            status = 1
    return status


def _default_timeout(deployment: Mapping[str, Any]) -> float:
    policy = deployment.get("BlueGreenUpdatePolicy") or deployment.get("RollingUpdatePolicy") or {}
    # SageMaker's own limit on the deployment, plus time for the last describe to show its end.
    return float(policy.get("MaximumExecutionTimeoutInSeconds") or 4 * 3600) + 600


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loom rollout", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See docs/deploy.md, 'Later changes'.")
    parser.add_argument("--endpoint", required=True, help="the endpoint (Terraform output endpoint_name)")
    parser.add_argument("--model-data", help="new model data: s3://.../model.tar.gz, or a folder ending in / (uncompressed); "
                                             "same bucket as the current one")
    parser.add_argument("--image", help="new inference image, <repository>:<tag> or @sha256:...; same repository")
    parser.add_argument("--instance-type", help="new instance type (an autoscaled variant is deregistered and registered again)")
    parser.add_argument("--instance-count", type=int, help="size of the new fleet; default: the current count, kept "
                                                           "through RetainAllVariantProperties")
    parser.add_argument("--strategy", choices=STRATEGIES, help="traffic shifting; default: the endpoint's last deployment "
                                                               "(Terraform: blue/green all-at-once)")
    parser.add_argument("--step", type=int, help="instances per step for canary (<= 50%% of the fleet), linear (10-50%%) "
                                                 "and rolling (5-50%%)")
    parser.add_argument("--bake-seconds", type=int, help="baking period (0-3600); default: the last deployment's")
    parser.add_argument("--alarm", action="append", help="rollback alarm (repeat); default: the last deployment's, i.e. "
                                                         "the 5xx and latency alarms Terraform created")
    parser.add_argument("--kms-key-arn", help="volume key for the new configuration (EBS-backed types only); default: "
                                              "the current configuration's")
    parser.add_argument("--startup-seconds", type=int, help="how long a new fleet takes to start, for the deployment "
                                                            "time estimate; default: the variant's model download + "
                                                            "health-check timeouts (the most SageMaker waits)")
    parser.add_argument("--skip-permission-check", action="store_true",
                        help="for --instance-type of an autoscaled variant: go on when iam:SimulatePrincipalPolicy "
                             "is refused (you checked the permissions in docs/deploy.md yourself)")
    parser.add_argument("--dry-run", action="store_true", help="read the endpoint, print the requests, change nothing")
    parser.add_argument("--no-wait", action="store_true", help="return once UpdateEndpoint is accepted")
    parser.add_argument("--wait-timeout", type=float, help="seconds to wait; default: the deployment's maximum "
                                                           "execution time + 600")
    parser.add_argument("--region")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)
    if args.instance_count is not None and args.instance_count < 1:
        parser.error("--instance-count must be at least 1")
    if args.step is not None and args.step < 1:
        parser.error("--step must be at least 1")
    if args.bake_seconds is not None and not 0 <= args.bake_seconds <= 3600:
        parser.error("--bake-seconds must be between 0 and 3600 (WaitIntervalInSeconds)")
    if not (args.model_data or args.image or args.instance_type):
        parser.error("nothing to roll out: give --model-data, --image and/or --instance-type")
    return args


def main(argv: Sequence[str] | None = None, *, clients: Clients | None = None,
         sleep: Callable[[float], None] | None = None, delays: Iterable[float] | None = None,
         now: datetime | None = None) -> int:
    args = parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        clients = clients or Clients.create(args.region, args.profile)
        plan = plan_rollout(args, clients, log=log, now=now)
        if args.dry_run:
            log(f"dry run: {args.endpoint} serves {plan.current_config['EndpointConfigName']}; these requests would be sent:")
            for what, request in requests_in_order(plan):
                log(f"--- {what}\n{json.dumps(request, indent=2, sort_keys=True, default=str)}")
            return 0
        return execute(plan, clients, log=log, wait=not args.no_wait, timeout_s=args.wait_timeout, sleep=sleep, delays=delays)
    except JobConfigError as exc:
        return command_error(str(exc))
    except ClientError as exc:
        code, message = _error_code(exc)
        return command_error(f"AWS refused the request ({code}: {message})")
    except BotoCoreError as exc:  # no credentials or Region, no connection
        return command_error(f"{exc} (credentials and Region: AWS_PROFILE / AWS_REGION, or --profile / --region)")


if __name__ == "__main__":
    sys.exit(main())
