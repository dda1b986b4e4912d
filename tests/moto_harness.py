"""A local moto server that Terraform's AWS provider and boto3 can both talk to.

`start_moto_server()` starts moto's ThreadedMotoServer on 127.0.0.1 (never 0.0.0.0), applies the
patches that moto 5.2.5 needs for Loom's Terraform module (each explained where it is applied below),
and returns the server and its URL. `aws_env(url)` gives the environment variables
that point the AWS provider / boto3 at it and nowhere else.

The patches touch moto internals, so moto is pinned: `MOTO_VERSION` must match.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import moto
from moto.server import ThreadedMotoServer

MOTO_VERSION = "5.2.5"
HOST = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account

_patched = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def apply_patches() -> None:
    """Patch moto once per process; refuses to run on any other moto version."""
    global _patched
    if _patched:
        return
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"tests/moto_harness.py patches moto {MOTO_VERSION} internals; found moto {moto.__version__}"
        )
    _accept_g5_instances()
    _drop_empty_sagemaker_blocks()
    _autoscaling_tags()
    _log_policy_with_string_principal()
    _model_network_isolation()
    _lambda_logging_config()
    _endpoint_deployment_config()
    _update_endpoint()
    _opensearch_serverless()
    _patched = True


def _accept_g5_instances() -> None:
    # moto's instance-type enum predates ml.g5/ml.g6 and ml.c6i (the real-time CLIP endpoint's default);
    # the real API accepts them.
    from moto.sagemaker import models as sm

    original = sm.FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self: Any, instance_type: str) -> None:
        if instance_type.startswith(("ml.g5.", "ml.g6.", "ml.g6e.", "ml.c6i.")):
            return
        original(self, instance_type)

    sm.FakeEndpointConfig.validate_instance_type = validate_instance_type


def _drop_empty_sagemaker_blocks() -> None:
    # DescribeModel / DescribeEndpointConfig return `VpcConfig: {}` / `DataCaptureConfig: {}`
    # where AWS omits them; the provider then plans to replace the model and the config.
    # Patch the responses only, so the stored objects stay as moto keeps them.
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def without_empty(method: Any, keys: tuple[str, ...]) -> Any:
        def wrapper(self: Any) -> Any:
            result = method(self)
            body = result.result
            if isinstance(body, dict) and any(body.get(k) == {} for k in keys):
                body = {k: v for k, v in body.items() if not (k in keys and v == {})}
                return ActionResult(body)
            return result

        return wrapper

    SageMakerResponse.describe_model = without_empty(SageMakerResponse.describe_model, ("VpcConfig",))
    SageMakerResponse.describe_endpoint_config = without_empty(
        SageMakerResponse.describe_endpoint_config, ("DataCaptureConfig",)
    )


def _model_network_isolation() -> None:
    # CreateModel drops EnableNetworkIsolation (DescribeModel always says false), so a second
    # plan would replace a network-isolated model. Keep the flag the caller sent.
    from moto.sagemaker.responses import SageMakerResponse

    original = SageMakerResponse.create_model

    def create_model(self: Any) -> Any:
        result = original(self)
        model = self.sagemaker_backend.describe_model(self._get_param("ModelName"))
        model.enable_network_isolation = bool(self._get_param("EnableNetworkIsolation"))
        return result

    SageMakerResponse.create_model = create_model


def _lambda_logging_config() -> None:
    # moto 5.2.5 drops a function's LoggingConfig (JSON format, log levels); the provider reads it
    # back and a second plan would change it again. Keep what the caller sent, as Lambda does.
    from moto.awslambda.models import LambdaFunction

    original_init = LambdaFunction.__init__
    original_configuration = LambdaFunction.get_configuration
    original_update = LambdaFunction.update_configuration

    def __init__(self: Any, account_id: str, spec: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original_init(self, account_id, spec, *args, **kwargs)
        self._loom_logging_config = _logging_config(self.function_name, spec.get("LoggingConfig"))

    def get_configuration(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        config = original_configuration(self, *args, **kwargs)
        config["LoggingConfig"] = getattr(self, "_loom_logging_config", None) or _logging_config(self.function_name, None)
        return config

    def update_configuration(self: Any, config_updates: dict[str, Any]) -> dict[str, Any]:
        if "LoggingConfig" in config_updates:
            self._loom_logging_config = _logging_config(self.function_name, config_updates["LoggingConfig"])
        return original_update(self, config_updates)

    LambdaFunction.__init__ = __init__
    LambdaFunction.get_configuration = get_configuration
    LambdaFunction.update_configuration = update_configuration


def _logging_config(function_name: str, sent: dict[str, Any] | None) -> dict[str, Any]:
    # Lambda's defaults: Text format, log group /aws/lambda/<name>; levels only with JSON.
    config = {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{function_name}", **(sent or {})}
    return config


def _endpoint_deployment_config() -> None:
    # CreateEndpoint drops DeploymentConfig (blue/green policy, rollback alarms); keep it per endpoint
    # and return it as DescribeEndpoint's LastDeploymentConfig, as SageMaker does.
    from moto.sagemaker.responses import SageMakerResponse

    original_create = SageMakerResponse.create_endpoint
    original_describe = SageMakerResponse.describe_endpoint

    def create_endpoint(self: Any) -> Any:
        result = original_create(self)
        endpoint = self.sagemaker_backend.endpoints[self._get_param("EndpointName")]
        endpoint._loom_deployment_config = self._get_param("DeploymentConfig")
        return result

    def describe_endpoint(self: Any) -> Any:
        result = original_describe(self)
        endpoint = self.sagemaker_backend.endpoints.get(self._get_param("EndpointName"))
        deployment = getattr(endpoint, "_loom_deployment_config", None)
        if deployment and isinstance(result.result, dict):
            return ActionResult({**result.result, "LastDeploymentConfig": deployment})
        return result

    from moto.core.responses import ActionResult

    SageMakerResponse.create_endpoint = create_endpoint
    SageMakerResponse.describe_endpoint = describe_endpoint


def _update_endpoint() -> None:
    # moto 5.2.5 has no UpdateEndpoint (`loom rollout` calls it). What SageMaker does, without a fleet:
    # the endpoint moves to the new configuration at once; with RetainAllVariantProperties each variant
    # keeps its DesiredInstanceCount and weight unless ExcludeRetainedVariantProperties lists them
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html,
    # API_VariantProperty.html); DescribeEndpoint's LastDeploymentConfig becomes the DeploymentConfig sent.
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: Any) -> Any:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f'Could not find endpoint "{name}".')
        try:
            config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
        except KeyError:
            raise ValidationError(message=f"Could not find endpoint configuration {self._get_param('EndpointConfigName')}.")
        retained = {v["VariantName"]: v for v in endpoint.production_variants} if self._get_param("RetainAllVariantProperties") else {}
        excluded = {p["VariantPropertyType"] for p in self._get_param("ExcludeRetainedVariantProperties") or []}
        variants = endpoint._process_production_variants(config["ProductionVariants"])
        for variant in variants:
            old = retained.get(variant["VariantName"], {})
            keys = (() if "DesiredInstanceCount" in excluded else ("CurrentInstanceCount", "DesiredInstanceCount")) + \
                (() if "DesiredWeight" in excluded else ("CurrentWeight", "DesiredWeight"))
            variant.update({k: old[k] for k in keys if k in old})
        endpoint.production_variants = variants
        endpoint.endpoint_config_name = config["EndpointConfigName"]
        endpoint.last_modified_time = utcnow()
        if self._get_param("DeploymentConfig"):
            endpoint._loom_deployment_config = self._get_param("DeploymentConfig")
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint


def _autoscaling_tags() -> None:
    # The provider reads (and on create, writes) tags of scalable targets; moto 5.2.5 has no
    # TagResource / UntagResource / ListTagsForResource for Application Auto Scaling.
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend
    from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse

    def tags_of(backend: ApplicationAutoscalingBackend) -> dict[str, dict[str, str]]:
        if not hasattr(backend, "_loom_tags"):
            backend._loom_tags = {}  # type: ignore[attr-defined]
        return backend._loom_tags  # type: ignore[attr-defined]

    def tag_resource(self: Any) -> str:
        arn = self._get_param("ResourceARN")
        tags_of(self.applicationautoscaling_backend).setdefault(arn, {}).update(self._get_param("Tags") or {})
        return json.dumps({})

    def untag_resource(self: Any) -> str:
        arn = self._get_param("ResourceARN")
        stored = tags_of(self.applicationautoscaling_backend).get(arn, {})
        for key in self._get_param("TagKeys") or []:
            stored.pop(key, None)
        return json.dumps({})

    def list_tags_for_resource(self: Any) -> str:
        arn = self._get_param("ResourceARN")
        return json.dumps({"Tags": tags_of(self.applicationautoscaling_backend).get(arn, {})})

    ApplicationAutoScalingResponse.tag_resource = tag_resource
    ApplicationAutoScalingResponse.untag_resource = untag_resource
    ApplicationAutoScalingResponse.list_tags_for_resource = list_tags_for_resource

    # RegisterScalableTarget carries the tags on create.
    original_register = ApplicationAutoScalingResponse.register_scalable_target

    def register_scalable_target(self: Any) -> str:
        body = original_register(self)
        tags = self._get_param("Tags")
        if tags:
            arn = json.loads(body)["ScalableTargetARN"]
            tags_of(self.applicationautoscaling_backend).setdefault(arn, {}).update(tags)
        return body

    ApplicationAutoScalingResponse.register_scalable_target = register_scalable_target


def _log_policy_with_string_principal() -> None:
    # PutBucketLogging inspects the target bucket's policy and crashes (HTTP 500) on a statement
    # whose Principal is the string "*" (e.g. a TLS-only Deny). Skip such statements.
    from moto.s3.models import FakeBucket

    original = FakeBucket._log_permissions_enabled_policy

    def log_permissions_enabled_policy(target_bucket: Any, target_prefix: str | None) -> bool:
        policy = target_bucket.policy
        if not policy:
            return False
        document = json.loads(policy.decode())
        statements = [s for s in document.get("Statement", []) if isinstance(s.get("Principal"), dict)]
        saved = target_bucket.policy
        target_bucket.policy = json.dumps({**document, "Statement": statements}).encode()
        try:
            return original(target_bucket, target_prefix)
        finally:
            target_bucket.policy = saved

    FakeBucket._log_permissions_enabled_policy = staticmethod(log_permissions_enabled_policy)


def _opensearch_serverless() -> None:
    # OpenSearch Serverless (modules/search, backend "opensearch_serverless"). API reference:
    # https://docs.aws.amazon.com/opensearch-service/latest/ServerlessAPIReference/Welcome.html
    from moto.opensearchserverless.exceptions import ConflictException, ResourceNotFoundException
    from moto.opensearchserverless.models import OpenSearchServiceServerlessBackend
    from moto.opensearchserverless.responses import OpenSearchServiceServerlessResponse

    # 1. CreateCollection takes its key from the LAST security policy naming the collection, of any type:
    #    a network policy (a JSON list) crashes it (HTTP 500), and AWSOwnedKey=true (no KmsARN) too.
    #    AWS encrypts a collection under the encryption policy whose rules match its name: the KmsARN
    #    key, or an AWS-owned key with AWSOwnedKey=true (API_CreateSecurityPolicy, and "Encryption" in the
    #    Serverless developer guide). Here only encryption policies are consulted, and a policy without
    #    KmsARN leaves kmsKeyArn out of BatchGetCollection (the reference does not say what AWS returns).
    original_create = OpenSearchServiceServerlessBackend.create_collection

    def create_collection(self: Any, **kwargs: Any) -> Any:
        everything = self.security_policies
        encryption = {k: sp for k, sp in everything.items() if sp.type == "encryption"}
        saved = {k: sp.policy for k, sp in encryption.items()}
        for sp in encryption.values():
            sp.policy = {**sp.policy, "KmsARN": sp.policy.get("KmsARN")}
        self.security_policies = encryption
        try:
            return original_create(self, **kwargs)
        finally:
            self.security_policies = everything
            for key, policy in saved.items():
                everything[key].policy = policy

    OpenSearchServiceServerlessBackend.create_collection = create_collection

    # 2. No DeleteSecurityPolicy (AWS: API_DeleteSecurityPolicy, by name and type, empty answer);
    #    the provider calls it on destroy.
    def delete_security_policy(self: Any) -> str:
        params = json.loads(self.body)
        policies = self.opensearchserverless_backend.security_policies
        key = next((k for k, sp in policies.items() if (sp.name, sp.type) == (params["name"], params["type"])), None)
        if key is None:
            raise ResourceNotFoundException(f"Policy with name {params['name']} and type {params['type']} is not found")
        del policies[key]
        return json.dumps({})

    OpenSearchServiceServerlessResponse.delete_security_policy = delete_security_policy

    # 3. No data-access policies at all (CreateAccessPolicy is NotImplemented). AWS: API_CreateAccessPolicy,
    #    API_GetAccessPolicy, API_UpdateAccessPolicy, API_DeleteAccessPolicy; the detail is
    #    AccessPolicyDetail {name, type, policy (a document), policyVersion, description, dates}.
    def access_policies(backend: Any) -> dict[tuple[str, str], dict[str, Any]]:
        if not hasattr(backend, "_loom_access_policies"):
            backend._loom_access_policies = {}
        return backend._loom_access_policies

    def stored(self: Any, params: dict[str, Any]) -> dict[str, Any]:
        found = access_policies(self.opensearchserverless_backend).get((params["name"], params["type"]))
        if found is None:
            raise ResourceNotFoundException(f"Policy with name {params['name']} and type {params['type']} is not found")
        return found

    def create_access_policy(self: Any) -> str:
        params = json.loads(self.body)
        policies = access_policies(self.opensearchserverless_backend)
        if (params["name"], params["type"]) in policies:
            raise ConflictException(f"Policy with name {params['name']} and type {params['type']} already exists")
        now = int(time.time() * 1000)
        detail = {"name": params["name"], "type": params["type"], "policy": json.loads(params["policy"]),
                  "policyVersion": uuid.uuid4().hex[:20], "createdDate": now, "lastModifiedDate": now}
        if params.get("description"):
            detail["description"] = params["description"]
        policies[(params["name"], params["type"])] = detail
        return json.dumps({"accessPolicyDetail": detail})

    def get_access_policy(self: Any) -> str:
        return json.dumps({"accessPolicyDetail": stored(self, json.loads(self.body))})

    def update_access_policy(self: Any) -> str:
        params = json.loads(self.body)
        detail = stored(self, params)
        if "policy" in params:
            detail["policy"] = json.loads(params["policy"])
        if "description" in params:
            detail["description"] = params["description"]
        detail.update(policyVersion=uuid.uuid4().hex[:20], lastModifiedDate=int(time.time() * 1000))
        return json.dumps({"accessPolicyDetail": detail})

    def delete_access_policy(self: Any) -> str:
        params = json.loads(self.body)
        stored(self, params)
        del access_policies(self.opensearchserverless_backend)[(params["name"], params["type"])]
        return json.dumps({})

    OpenSearchServiceServerlessResponse.create_access_policy = create_access_policy
    OpenSearchServiceServerlessResponse.get_access_policy = get_access_policy
    OpenSearchServiceServerlessResponse.update_access_policy = update_access_policy
    OpenSearchServiceServerlessResponse.delete_access_policy = delete_access_policy


def start_moto_server(port: int | None = None) -> tuple[ThreadedMotoServer, str]:
    """Start a patched moto server on 127.0.0.1 and return (server, url); call server.stop() when done."""
    # AWS managed policies (e.g. AWSXrayWriteOnlyAccess) must exist for attachments to succeed.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    apply_patches()
    port = port or _free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    return server, f"http://{HOST}:{port}"


def aws_env(url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) that sends the AWS provider and boto3 to `url` only.

    Profiles, session tokens and other endpoints in `base` are dropped, so nothing can fall back
    to real credentials or real AWS.
    """
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"refusing a non-local AWS endpoint: {url}")
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not (k.startswith("AWS_") or k.startswith("TF_VAR_"))
    }
    env.update(
        {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "CHECKPOINT_DISABLE": "1",
        }
    )
    return env
