"""`loom preflight`: each check against botocore's Stubber, which validates every request and response
against the real service models (moto implements neither Bedrock's Converse nor its model lifecycle).

Rules checked, with their sources:
- current Claude models are invoked through cross-Region inference profiles, and a bare model id that
  does not allow on-demand invocation is refused ("on-demand throughput isn't supported"):
  https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-use.html
- a model's lifecycle is ACTIVE or LEGACY (GetFoundationModel modelLifecycle):
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html
- Lambda keeps 10 executions unreserved; a reservation below that is refused:
  https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
- a new account's entitlement and agreement read NOT_AVAILABLE until the first invocation of a Marketplace
  model, which starts the subscription; so preflight must still make its Converse call then:
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
- a geographic inference profile is called from a source Region of its geography (jp.: Tokyo, Osaka; au.:
  Sydney, Melbourne; Seoul and Singapore have apac. only):
  https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from inference.api.describe import DEFAULT_MODEL_ID
from operations import cli
from operations import preflight
from operations.preflight import ModelRef

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "us.anthropic.claude-sonnet-5-5"
MODEL = "anthropic.claude-sonnet-5-5"
PROFILE_ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{PROFILE}"


@pytest.fixture()
def stubs():
    """Real botocore clients (dummy credentials, never sent) wrapped in Stubbers."""
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    clients = {name: session.client(name) for name in ("sts", "bedrock", "bedrock-runtime", "lambda", "iam")}
    stubbers = {name: Stubber(c) for name, c in clients.items()}
    for s in stubbers.values():
        s.activate()
    yield clients, stubbers
    for s in stubbers.values():
        s.assert_no_pending_responses()
        s.deactivate()


def _identity(stubbers):
    stubbers["sts"].add_response("get_caller_identity", {
        "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/admin", "UserId": "AIDA"})


def _profile(stubbers, status="ACTIVE"):
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    stubbers["bedrock"].add_response("get_inference_profile", {
        "inferenceProfileName": "US Claude Sonnet 5.5", "inferenceProfileArn": PROFILE_ARN, "inferenceProfileId": PROFILE,
        "status": status, "type": "SYSTEM_DEFINED", "createdAt": now, "updatedAt": now,
        "models": [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/{MODEL}"} for r in ("us-east-1", "us-east-2", "us-west-2")],
    }, {"inferenceProfileIdentifier": PROFILE})


def _model(stubbers, model=MODEL, status="ACTIVE", inference=("INFERENCE_PROFILE",)):
    stubbers["bedrock"].add_response("get_foundation_model", {"modelDetails": {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model}", "modelId": model,
        "inferenceTypesSupported": list(inference), "modelLifecycle": {"status": status},
    }}, {"modelIdentifier": model})


def _availability(stubbers, model=MODEL, entitlement="AVAILABLE", agreement="AVAILABLE", authorization="AUTHORIZED"):
    stubbers["bedrock"].add_response("get_foundation_model_availability", {
        "modelId": model, "agreementAvailability": {"status": agreement}, "authorizationStatus": authorization,
        "entitlementAvailability": entitlement, "regionAvailability": "AVAILABLE",
    }, {"modelId": model})


def _lambda(stubbers, total=1000, unreserved=1000):
    stubbers["lambda"].add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": total, "UnreservedConcurrentExecutions": unreserved}})


# The preflight call sends the body production sends (describe.converse_settings: Sonnet 5.5's
# thinking {"type": "between_tools"}, no temperature), with a 16-token answer: a field the model refuses
# fails here, before deployment, and not in the Lambda. Sources: Anthropic "Claude Sonnet 5.5 migration guide"
# (the settings it refuses), https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
# (additionalModelRequestFields).
SONNET_5_5_BODY = {"inferenceConfig": {"maxTokens": 16},
                   "additionalModelRequestFields": {"thinking": {"type": "between_tools"}}}


def _converse_ok(stubbers, model_id=PROFILE, body=None, content=None):
    stubbers["bedrock-runtime"].add_response("converse", {
        "output": {"message": {"role": "assistant", "content": [{"text": "OK"}] if content is None else content}},
        "stopReason": "end_turn" if content is None else "max_tokens",
        "usage": {"inputTokens": 14, "outputTokens": 2, "totalTokens": 16}, "metrics": {"latencyMs": 310},
    }, {"modelId": model_id, "messages": [{"role": "user", "content": [{"text": "Reply with the single word OK."}]}],
        **(SONNET_5_5_BODY if body is None else body)})


def test_the_converse_check_sends_the_production_settings_of_each_model(stubs):
    clients, stubbers = stubs
    other = "us.anthropic.claude-opus-5-1"
    _converse_ok(stubbers, other, body={"inferenceConfig": {"maxTokens": 16 + 1024},
                                        "additionalModelRequestFields": {"output_config": {"effort": "low"}}})
    assert preflight.check_converse(clients["bedrock-runtime"], ModelRef.parse(other)).status == "ok"
    _converse_ok(stubbers, "us.anthropic.claude-sonnet-4-6",
                 body={"inferenceConfig": {"maxTokens": 16, "temperature": 0.1}})
    assert preflight.check_converse(clients["bedrock-runtime"], ModelRef.parse("us.anthropic.claude-sonnet-4-6")).status == "ok"


def test_an_answer_without_text_fails_the_converse_check(stubs):
    # Thinking that takes the whole maxTokens leaves only a reasoning block: the Lambda would answer no description.
    clients, stubbers = stubs
    _converse_ok(stubbers, content=[{"reasoningContent": {"reasoningText": {"text": "Thinking...", "signature": "x"}}}])
    finding = preflight.check_converse(clients["bedrock-runtime"], ModelRef.parse(PROFILE))
    assert finding.status == "FAIL" and "answered no text (stopReason max_tokens" in finding.message


def test_default_model_is_the_terraform_default_and_an_inference_profile():
    # Claude 3 Sonnet is end-of-life; the Lambda and Terraform must default to the same active profile.
    assert DEFAULT_MODEL_ID == PROFILE and ModelRef.parse(DEFAULT_MODEL_ID).profile == PROFILE
    for variables_tf in (ROOT / "terraform" / "variables.tf", ROOT / "terraform" / "modules" / "api" / "variables.tf"):
        block = variables_tf.read_text().split('variable "bedrock_model_id" {', 1)[1]
        assert re.search(r'default\s*=\s*"([^"]+)"', block)[1] == DEFAULT_MODEL_ID, variables_tf


def test_model_ref_parsing():
    assert ModelRef.parse(PROFILE) == ModelRef(PROFILE, MODEL, PROFILE)
    assert ModelRef.parse(PROFILE_ARN) == ModelRef(PROFILE_ARN, MODEL, PROFILE_ARN)
    assert ModelRef.parse("global.anthropic.claude-sonnet-5-5").foundation_model == MODEL
    assert ModelRef.parse("amazon.nova-lite-v1:0") == ModelRef("amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0", None)
    for bad in ("claude", "arn:aws:bedrock:us-east-1::foundation-model/x", "us.anthropic claude"):
        with pytest.raises(ValueError, match="inference profile id"):
            ModelRef.parse(bad)


def test_all_checks_pass_on_a_ready_account(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _identity(stubbers), _profile(stubbers), _model(stubbers), _availability(stubbers), _converse_ok(stubbers)
    _lambda(stubbers), stubbers["iam"].add_response("list_open_id_connect_providers", {"OpenIDConnectProviderList": [
        {"Arn": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"}]})
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert cli.main(["preflight", "--github"]) == 0
    out = capsys.readouterr().out
    assert "routes to us-east-1, us-east-2, us-west-2" in out and f"{PROFILE} answered 'OK'" in out
    assert "github_oidc_provider_arn=arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com" in out
    assert out.strip().endswith("preflight: passed (0 failed, 0 warnings)")


def test_bare_claude_id_is_told_to_use_a_profile(stubs):
    clients, stubbers = stubs
    _model(stubbers)  # inferenceTypesSupported has no ON_DEMAND
    finding = preflight.check_lifecycle(clients["bedrock"], ModelRef.parse(MODEL))
    assert finding.status == "FAIL" and f"use an inference profile such as us.{MODEL}" in finding.message


def test_legacy_model_warns_and_retired_model_fails(stubs):
    clients, stubbers = stubs
    _model(stubbers, status="LEGACY")
    assert preflight.check_lifecycle(clients["bedrock"], ModelRef.parse(PROFILE)).status == "WARN"
    old = "anthropic.claude-3-sonnet-20240229-v1:0"
    stubbers["bedrock"].add_client_error("get_foundation_model", "ResourceNotFoundException", "Model not found",
                                         expected_params={"modelIdentifier": old})
    finding = preflight.check_lifecycle(clients["bedrock"], ModelRef.parse(old))
    assert finding.status == "FAIL" and "end-of-life" in finding.message


def test_profile_of_another_geography_is_explained(stubs):
    clients, stubbers = stubs
    # Refused before any call: an eu. profile cannot be called from us-east-1.
    finding = preflight.check_model(clients["bedrock"], ModelRef.parse("eu.anthropic.claude-sonnet-4-6"))
    assert finding.status == "FAIL" and "cannot be called from us-east-1" in finding.message
    # A profile of this geography that is not offered here: the service says so.
    stubbers["bedrock"].add_client_error("get_inference_profile", "ResourceNotFoundException", "not found",
                                         expected_params={"inferenceProfileIdentifier": "us.anthropic.claude-nothing-1"})
    finding = preflight.check_model(clients["bedrock"], ModelRef.parse("us.anthropic.claude-nothing-1"))
    assert finding.status == "FAIL" and "not offered in this Region" in finding.message


def test_missing_subscription_is_reported_with_both_fixes(stubs):
    clients, stubbers = stubs
    _availability(stubbers, entitlement="NOT_AVAILABLE")
    finding = preflight.check_access(clients["bedrock"], ModelRef.parse(PROFILE))
    assert finding.status == "FAIL" and "AWS Marketplace" in finding.message and "without --no-invoke" in finding.message
    stubbers["bedrock-runtime"].add_client_error(
        "converse", "AccessDeniedException",
        "Model access is denied due to IAM user or service role is not authorized to perform the required AWS "
        "Marketplace actions (aws-marketplace:ViewSubscriptions, aws-marketplace:Subscribe)")
    finding = preflight.check_converse(clients["bedrock-runtime"], ModelRef.parse(PROFILE))
    assert finding.status == "FAIL" and "bedrock_marketplace_product_ids" in finding.message


@pytest.mark.parametrize("code, message, expected", [
    ("ValidationException", "Invocation of model ID anthropic.claude-sonnet-4-6 with on-demand throughput isn't "
     "supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
     f"use us.{MODEL}"),
    ("AccessDeniedException", "User is not authorized to perform: bedrock:InvokeModel", "foundation model in every destination Region"),
    ("ResourceNotFoundException", "This model version has reached the end of its life.", "retired"),
    ("ThrottlingException", "Too many tokens", "quota"),
])
def test_converse_failures_name_their_fix(stubs, code, message, expected):
    clients, stubbers = stubs
    ref = ModelRef.parse(MODEL if "on-demand" in message else PROFILE)
    stubbers["bedrock-runtime"].add_client_error("converse", code, message)
    finding = preflight.check_converse(clients["bedrock-runtime"], ref)
    assert finding.status == "FAIL" and expected in finding.message and code in finding.message


def test_lambda_reservation_that_leaves_fewer_than_10_unreserved_fails(stubs):
    clients, stubbers = stubs
    _lambda(stubbers, total=10, unreserved=10)
    finding = preflight.check_lambda(clients["lambda"], 10)
    assert finding.status == "FAIL" and "leave 0 < 10 unreserved" in finding.message
    _lambda(stubbers, total=10, unreserved=10)
    assert preflight.check_lambda(clients["lambda"], None).status == "WARN"
    _lambda(stubbers, total=1000, unreserved=1000)
    assert preflight.check_lambda(clients["lambda"], 50).status == "ok"


def test_no_credentials_stops_early_and_exits_1(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    stubbers["sts"].add_client_error("get_caller_identity", "ExpiredToken", "The security token included in the request is expired")
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main(["--no-invoke"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  identity" in out and "aws sso login" in out and "preflight: FAILED (1 failed" in out


def test_bad_model_id_is_a_usage_error(capsys):
    assert preflight.main(["--model-id", "claude"]) == 2
    assert "neither an inference profile id" in capsys.readouterr().err


MODEL_IDS = {
    PROFILE: True, PROFILE_ARN: True, "global.anthropic.claude-sonnet-4-6": True, "eu.anthropic.claude-sonnet-4-6": True,
    "apac.amazon.nova-pro-v1:0": True, "amazon.nova-lite-v1:0": True, "anthropic.claude-3-haiku-20240307-v1:0": True,
    "claude": False, "us.anthropic claude": False, "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6": False,
    "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc": False,
}


def test_terraform_accepts_the_same_model_ids_as_preflight():
    """terraform/variables.tf and the api module validate bedrock_model_id with their own regexes (HCL cannot
    import Python): both accept exactly what ModelRef.parse accepts."""
    for variables_tf in (ROOT / "terraform" / "variables.tf", ROOT / "terraform" / "modules" / "api" / "variables.tf"):
        block = variables_tf.read_text().split('variable "bedrock_model_id" {', 1)[1].split("\nvariable ", 1)[0]
        patterns = [p.replace("\\\\", "\\") for p in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', block)]
        assert len(patterns) == 2, variables_tf
        for model_id, valid in MODEL_IDS.items():
            assert any(re.search(p, model_id) for p in patterns) is valid, (variables_tf.name, model_id)
            try:
                ModelRef.parse(model_id)
                parsed = True
            except ValueError:
                parsed = False
            assert parsed is valid, model_id


# --- the POST /restyle model (--restyle-model-id) ----------------------------------------------------------
# The lifecycle page (https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html): every model
# is Active, Legacy or EOL, shown in GetFoundationModel's modelLifecycle; "New customers can't use Legacy
# models", and requests to an EOL model fail. SDXL 1.0 (stability.stable-diffusion-xl-v1), which the original
# post used, is checked like any other (its status could not be read offline; the tests give it LEGACY to show
# the refusal): a deployment must use an ACTIVE image-to-image model, such as the
# default Stable Diffusion 3.5 Large, whose image-to-image request inference/api/visual/restyle.py sends
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html).

from inference.api.visual import restyle as restyle_route  # noqa: E402

SD35 = restyle_route.DEFAULT_RESTYLE_MODEL_ID
SDXL = "stability.stable-diffusion-xl-v1"


def _image_model(stubbers, model=SD35, status="ACTIVE", inference=("ON_DEMAND",), modalities=("TEXT", "IMAGE"),
                 output=("IMAGE",)):
    stubbers["bedrock"].add_response("get_foundation_model", {"modelDetails": {
        "modelArn": f"arn:aws:bedrock:us-west-2::foundation-model/{model}", "modelId": model,
        "providerName": "Stability AI", "inputModalities": list(modalities), "outputModalities": list(output),
        "inferenceTypesSupported": list(inference), "modelLifecycle": {"status": status},
    }}, {"modelIdentifier": model})


def test_restyle_defaults_are_terraforms():
    for variables_tf in (ROOT / "terraform" / "variables.tf", ROOT / "terraform" / "modules" / "api" / "variables.tf"):
        text = variables_tf.read_text()
        for name, value in (("restyle_model_id", SD35), ("restyle_region", restyle_route.DEFAULT_RESTYLE_REGION)):
            block = text.split(f'variable "{name}" {{', 1)[1]
            assert re.search(r'default\s*=\s*"([^"]+)"', block)[1] == value, (variables_tf, name)
    # The Lambda writes large results under the only prefix the role may write.
    assert f'restyle_key_prefix = "{restyle_route.RESTYLE_KEY_PREFIX}"' in \
        (ROOT / "terraform" / "modules" / "api" / "restyle.tf").read_text()


def test_an_active_image_to_image_model_with_access_passes(stubs):
    clients, stubbers = stubs
    _image_model(stubbers), _availability(stubbers, model=SD35)
    findings = preflight.check_restyle(clients["bedrock"], ModelRef.parse(SD35), "us-west-2")
    assert [(f.check, f.status) for f in findings] == [("restyle-model", "ok"), ("restyle-access", "ok")]
    assert findings[0].message == f"{SD35} is ACTIVE in us-west-2"


def test_sdxl_legacy_or_retired_fails_with_what_to_do(stubs):
    clients, stubbers = stubs
    _image_model(stubbers, model=SDXL, status="LEGACY")
    findings = preflight.check_restyle(clients["bedrock"], ModelRef.parse(SDXL), "us-west-2")
    # A LEGACY description model only WARNs; the restyle model FAILs (a new deployment cannot use it) and
    # the access check is not run.
    assert [(f.check, f.status) for f in findings] == [("restyle-model", "FAIL")]
    assert "LEGACY" in findings[0].message and "restyle_model_id" in findings[0].message
    stubbers["bedrock"].add_client_error("get_foundation_model", "ResourceNotFoundException",
                                         "The model stability.stable-diffusion-xl-v1 has reached its end of life",
                                         expected_params={"modelIdentifier": SDXL})
    finding, = preflight.check_restyle(clients["bedrock"], ModelRef.parse(SDXL), "us-west-2")
    assert finding.status == "FAIL" and "unknown in this Region or end-of-life" in finding.message


@pytest.mark.parametrize("kwargs, fragment", [
    ({"modalities": ("TEXT",), "output": ("IMAGE",)}, "does not take and return images"),
    ({"output": ("TEXT",)}, "does not take and return images"),
    ({"inference": ("PROVISIONED",)}, "does not allow on-demand invocation"),
])
def test_a_model_the_route_cannot_call_fails(stubs, kwargs, fragment):
    clients, stubbers = stubs
    _image_model(stubbers, **kwargs)
    finding, = preflight.check_restyle(clients["bedrock"], ModelRef.parse(SD35), "us-west-2")
    assert finding.status == "FAIL" and fragment in finding.message


def test_no_access_to_the_restyle_model_fails(stubs):
    clients, stubbers = stubs
    _image_model(stubbers)
    stubbers["bedrock"].add_response("get_foundation_model_availability", {
        "modelId": SD35, "agreementAvailability": {"status": "NOT_AVAILABLE"}, "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "NOT_AVAILABLE", "regionAvailability": "AVAILABLE"}, {"modelId": SD35})
    findings = preflight.check_restyle(clients["bedrock"], ModelRef.parse(SD35), "us-west-2")
    assert findings[1].check == "restyle-access" and findings[1].status == "FAIL"
    assert "AWS Marketplace" in findings[1].message and "agreement NOT_AVAILABLE" in findings[1].message


def test_the_restyle_model_is_checked_in_its_own_region(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    regions = []

    def aws_client(service, region=None, profile=None):
        regions.append((service, region))
        return clients[service]

    monkeypatch.setattr(preflight.jobs, "aws_client", aws_client)
    # In call order: identity, the description model (a bare id: lifecycle, access; --no-invoke), the restyle
    # model (lifecycle, access), Lambda.
    _identity(stubbers)
    _model(stubbers, model="amazon.nova-lite-v1:0", inference=("ON_DEMAND",))
    _availability(stubbers, model="amazon.nova-lite-v1:0")
    _image_model(stubbers), _availability(stubbers, model=SD35), _lambda(stubbers)
    assert preflight.main(["--no-invoke", "--model-id", "amazon.nova-lite-v1:0", "--region", "us-east-1",
                           "--restyle-model-id"]) == 0
    out = capsys.readouterr().out
    assert f"restyle-model {SD35} is ACTIVE in us-west-2" in out and "restyle-access" in out
    assert ("bedrock", "us-west-2") in regions and ("bedrock", "us-east-1") in regions


def test_a_restyle_inference_profile_is_a_usage_error(capsys):
    assert preflight.main(["--restyle-model-id", "us.stability.sd3-5-large-v1:0"]) == 2
    assert "by foundation model id" in capsys.readouterr().err


# --- a new account: the Converse call is the one that subscribes (issue: preflight could never pass) -------


def _new_account(stubbers, *, after="AVAILABLE"):
    _identity(stubbers), _profile(stubbers), _model(stubbers)
    _availability(stubbers, entitlement="NOT_AVAILABLE", agreement="NOT_AVAILABLE")
    _converse_ok(stubbers)
    _availability(stubbers, entitlement=after, agreement=after)
    _lambda(stubbers)


def test_a_new_account_is_subscribed_by_the_converse_call_and_passes(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _new_account(stubbers)
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main([]) == 0
    out = capsys.readouterr().out
    assert "WARN  access" in out and "starts the subscription" in out
    assert f"ok    converse     {PROFILE} answered 'OK'" in out
    assert "ok    subscribed" in out and out.strip().endswith("preflight: passed (0 failed, 1 warnings)")


def test_a_subscription_marketplace_has_not_shown_yet_still_passes_with_a_warning(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _new_account(stubbers, after="NOT_AVAILABLE")
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main([]) == 0
    out = capsys.readouterr().out
    assert "WARN  subscribed" in out and "run loom preflight again later" in out


def test_a_new_account_without_the_converse_call_fails_and_says_how_to_subscribe(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _identity(stubbers), _profile(stubbers), _model(stubbers)
    _availability(stubbers, entitlement="NOT_AVAILABLE", agreement="NOT_AVAILABLE"), _lambda(stubbers)
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main(["--no-invoke"]) == 1  # no converse is stubbed: a call would fail the Stubber
    assert "without --no-invoke" in capsys.readouterr().out


def test_a_failed_first_call_on_a_new_account_fails(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _identity(stubbers), _profile(stubbers), _model(stubbers)
    _availability(stubbers, entitlement="NOT_AVAILABLE")
    stubbers["bedrock-runtime"].add_client_error(
        "converse", "AccessDeniedException", "not authorized to perform the required AWS Marketplace actions")
    _lambda(stubbers)
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL  converse" in out and "  subscribed " not in out  # no re-check after a failed call


def test_an_unauthorised_account_fails_before_any_call(stubs, capsys, monkeypatch):
    clients, stubbers = stubs
    _identity(stubbers), _profile(stubbers), _model(stubbers)
    _availability(stubbers, entitlement="NOT_AVAILABLE", authorization="NOT_AUTHORIZED"), _lambda(stubbers)
    monkeypatch.setattr(preflight.jobs, "aws_client", lambda service, **_: clients[service])
    assert preflight.main([]) == 1  # no converse stubbed: the use-case form comes first
    assert "use-case form" in capsys.readouterr().out


@pytest.mark.parametrize("profile,region,ok", [
    ("jp.anthropic.claude-sonnet-4-6", "ap-northeast-2", False),  # Seoul: apac. only
    ("au.anthropic.claude-sonnet-4-6", "ap-southeast-1", False),  # Singapore: apac. only
    ("jp.anthropic.claude-sonnet-4-6", "ap-northeast-3", True),
    ("apac.anthropic.claude-sonnet-4-6", "ap-northeast-2", True),
])
def test_a_profile_is_checked_against_the_callers_region(profile, region, ok):
    bedrock = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=region).client("bedrock")
    with Stubber(bedrock) as stubber:
        if ok:
            now = datetime(2026, 11, 1, tzinfo=timezone.utc)
            stubber.add_response("get_inference_profile", {
                "inferenceProfileName": profile, "inferenceProfileArn": f"arn:aws:bedrock:{region}:1:inference-profile/{profile}",
                "inferenceProfileId": profile, "status": "ACTIVE", "type": "SYSTEM_DEFINED", "createdAt": now,
                "updatedAt": now, "models": [{"modelArn": f"arn:aws:bedrock:{region}::foundation-model/x"}]})
        finding = preflight.check_model(bedrock, ModelRef.parse(profile))
        stubber.assert_no_pending_responses()
    assert (finding.status == "ok") is ok
    if not ok:
        assert f"cannot be called from {region}" in finding.message and "global.anthropic.claude-sonnet-4-6" in finding.message


def test_an_image_in_image_out_model_with_another_body_is_refused(stubs):
    # Stable Image Style Transfer takes and returns images, but not Loom's mode/strength body.
    clients, stubbers = stubs
    other = "stability.stable-style-transfer-v1:0"
    _image_model(stubbers, model=other)
    finding, = preflight.check_restyle(clients["bedrock"], ModelRef.parse(other), "us-west-2")
    assert finding.status == "FAIL" and "does not take the image-to-image request" in finding.message
    assert restyle_route.DEFAULT_RESTYLE_MODEL_ID in restyle_route.IMAGE_TO_IMAGE_MODELS
