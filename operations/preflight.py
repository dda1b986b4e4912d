"""Check an AWS account before Loom's serving phase: the Bedrock model, the caller's access, quotas.

    loom preflight [--model-id ID] [--region REGION] [--profile NAME]
                   [--reserved-concurrency N] [--github] [--no-invoke]
                   [--restyle-model-id [ID]] [--restyle-region REGION]

Checks, each printed as `ok`, `WARN` or `FAIL` with what to do about it:
  identity       whose credentials these are (sts GetCallerIdentity)
  model          a cross-Region inference profile can be called from this Region (jp.: Tokyo, Osaka; au.: Sydney,
                 Melbourne; apac.: Asia Pacific; global.: any commercial Region), is ACTIVE here and where it
                 routes (GetInferenceProfile); a bare model id allows on-demand invocation (current Claude
                 models do not)
  lifecycle      the foundation model is ACTIVE, not LEGACY (GetFoundationModel modelLifecycle)
  access         the account may use it: authorised, entitled, agreement accepted (GetFoundationModelAvailability).
                 A new account has no entitlement or agreement until the first invocation: that is a WARN
                 when the Converse call below will be made (it starts the subscription), a FAIL otherwise
  converse       one tiny Converse call with the body the Lambda sends (converse_settings: the same thinking
                 or effort field and no sampling parameters where the model refuses them), its answer cut to
                 16 output tokens plus the room kept for thinking; an answer without text FAILs. For a
                 third-party model the first invocation
                 also subscribes the account through AWS Marketplace, so run this as an administrator once;
                 after it, `access` is read again and reported (Marketplace may take minutes to show it)
  restyle-model  (--restyle-model-id, Terraform enable_restyle) the image model of POST /restyle, in the
                 Region it is invoked in: ACTIVE, read live (a LEGACY model FAILs: new customers cannot use
                 it), invocable on demand by model id, one of the models whose image-to-image body Loom
                 sends (IMAGE_TO_IMAGE_MODELS: `mode`, `image`, `strength`), image in and out (GetFoundationModel)
  restyle-access the account may use it there (GetFoundationModelAvailability); no image is generated
  lambda         the account's Lambda concurrency, and whether --reserved-concurrency N would be refused
  github-oidc    (--github) an existing GitHub OIDC provider to reuse (github_oidc_provider_arn)

Exit status: 0 when nothing FAILed, 1 otherwise, 2 for bad arguments. Sources of the rules:
https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html,
https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-prereq.html,
https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html,
https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from inference.api.describe import (DEFAULT_MODEL_ID, FALLBACK_MODEL_ID, converse_settings, profile_callable_from,
                                    profile_geography)
from inference.api.visual.restyle import DEFAULT_RESTYLE_MODEL_ID, DEFAULT_RESTYLE_REGION, IMAGE_TO_IMAGE_MODELS
from loom.errors import command_error
from operations import sagemaker_jobs as jobs

# Lambda keeps this many executions unreserved in every account: a reservation may not go below it.
LAMBDA_UNRESERVED_MINIMUM = 10
_PROFILE_ID = re.compile(r"^(?:arn:aws[a-z-]*:bedrock:[a-z0-9-]+:\d{12}:inference-profile/)?"
                         r"(?P<geo>global|us-gov|us|eu|apac|jp|au|ca)\.(?P<model>[a-z0-9-]+\.[a-z0-9][a-z0-9._:-]*)$")
_MODEL_ID = re.compile(r"^[a-z0-9-]+\.[a-z0-9][a-z0-9._:-]*$")


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # "ok", "WARN" or "FAIL"
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check:<12} {self.message}"


@dataclass(frozen=True)
class ModelRef:
    """What a BEDROCK_MODEL_ID names: the id to invoke, the profile (if any) and the foundation model."""

    invoke_id: str
    foundation_model: str
    profile: str | None

    @classmethod
    def parse(cls, model_id: str) -> "ModelRef":
        profile = _PROFILE_ID.match(model_id)
        if profile:
            return cls(model_id, profile["model"], model_id)
        if _MODEL_ID.match(model_id):
            return cls(model_id, model_id, None)
        raise ValueError(f"{model_id!r} is neither an inference profile id (us.anthropic.claude-sonnet-5-5), "
                         "an inference-profile ARN nor a foundation model id (amazon.nova-lite-v1:0)")


def _error(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code", type(exc).__name__)), str(error.get("Message", exc))


def check_identity(sts: Any) -> Finding:
    try:
        who = sts.get_caller_identity()
    except Exception as exc:  # no credentials, expired token, no network: all end here
        code, message = _error(exc)
        return Finding("identity", "FAIL", f"no usable AWS credentials ({code}: {message}); set AWS_PROFILE or "
                                           "run `aws sso login`, and AWS_REGION")
    return Finding("identity", "ok", f"account {who['Account']} as {who['Arn']}")


def check_model(bedrock: Any, ref: ModelRef) -> Finding:
    if ref.profile is None:
        return Finding("model", "ok", f"{ref.invoke_id} is a foundation model id (invoked on demand in this Region)")
    region = bedrock.meta.region_name
    if not profile_callable_from(ref.profile, region):
        geo = profile_geography(ref.profile)
        return Finding("model", "FAIL", f"{ref.profile} is a {geo}. inference profile, which cannot be called from "
                                        f"{region} (jp.: ap-northeast-1/-3; au.: ap-southeast-2/-4; apac.: Asia "
                                        "Pacific; us./eu./ca.: their Regions): use the profile of this Region's "
                                        f"geography or global.{ref.foundation_model}")
    try:
        profile = bedrock.get_inference_profile(inferenceProfileIdentifier=ref.profile)
    except Exception as exc:
        code, message = _error(exc)
        if code == "ResourceNotFoundException":
            return Finding("model", "FAIL", f"inference profile {ref.profile} is not offered in this Region ({message}); "
                                            "list them with `aws bedrock list-inference-profiles` and use one of this "
                                            "Region's geography (us./eu./apac./jp./au./ca.) or global.")
        if code == "AccessDeniedException":
            return Finding("model", "FAIL", f"the caller may not read inference profiles ({message}); "
                                            "grant bedrock:GetInferenceProfile or run as an administrator")
        return Finding("model", "FAIL", f"GetInferenceProfile failed ({code}: {message})")
    regions = sorted({arn.split(":")[3] for arn in (m.get("modelArn", "") for m in profile.get("models", [])) if arn.count(":") >= 4})
    if profile.get("status") != "ACTIVE":
        return Finding("model", "FAIL", f"inference profile {ref.profile} is {profile.get('status')}, not ACTIVE")
    return Finding("model", "ok", f"inference profile {ref.profile} is ACTIVE and routes to {', '.join(regions) or '?'} "
                                  "(Terraform's bedrock_destination_regions may list these)")


def check_lifecycle(bedrock: Any, ref: ModelRef, *, check: str = "lifecycle", setting: str = "bedrock_model_id",
                    legacy: str = "WARN", image_to_image: bool = False) -> Finding:
    """GetFoundationModel: ACTIVE (LEGACY is `legacy`: WARN or FAIL), invocable as configured, and with
    `image_to_image` a model that takes and returns images."""
    try:
        details = bedrock.get_foundation_model(modelIdentifier=ref.foundation_model)["modelDetails"]
    except Exception as exc:
        code, message = _error(exc)
        if code in ("ResourceNotFoundException", "ValidationException"):
            return Finding(check, "FAIL", f"{ref.foundation_model} is unknown in this Region or end-of-life ({message}); "
                                          f"pick an ACTIVE model offered here for {setting}: "
                                          "`aws bedrock list-foundation-models`")
        return Finding(check, "FAIL", f"GetFoundationModel failed ({code}: {message})")
    lifecycle = details.get("modelLifecycle", {})
    status = lifecycle.get("status")
    if status == "LEGACY":
        end = lifecycle.get("endOfLifeTime")
        return Finding(check, legacy, f"{ref.foundation_model} is LEGACY (end of life {end or 'announced'}): "
                                      f"new customers cannot use it and it will stop answering; move {setting} "
                                      "to an ACTIVE model")
    if status != "ACTIVE":
        return Finding(check, "FAIL", f"{ref.foundation_model} lifecycle status is {status!r}, not ACTIVE")
    if ref.profile is None and "ON_DEMAND" not in details.get("inferenceTypesSupported", []):
        return Finding(check, "FAIL", f"{ref.foundation_model} does not allow on-demand invocation by model id; "
                                      f"use an inference profile such as us.{ref.foundation_model}")
    if image_to_image and ref.foundation_model not in IMAGE_TO_IMAGE_MODELS:
        # Stability's editing and control models also take and return images, with other request bodies
        # (no mode/strength): POST /restyle would send them a body they refuse.
        return Finding(check, "FAIL", f"{ref.foundation_model} does not take the image-to-image request POST /restyle "
                                      f"sends (mode \"image-to-image\", image, strength); {setting} must be one of "
                                      f"{', '.join(sorted(IMAGE_TO_IMAGE_MODELS))}")
    if image_to_image and not ("IMAGE" in details.get("inputModalities", [])
                               and "IMAGE" in details.get("outputModalities", [])):
        return Finding(check, "FAIL", f"{ref.foundation_model} does not take and return images "
                                      f"(input {details.get('inputModalities')}, output {details.get('outputModalities')}); "
                                      f"{setting} must be an image-to-image model such as {DEFAULT_RESTYLE_MODEL_ID}")
    return Finding(check, "ok", f"{ref.foundation_model} is ACTIVE")


# GetFoundationModelAvailability reports entitlement and agreement NOT_AVAILABLE (or a PENDING agreement)
# until the account's first invocation of a Marketplace model starts the subscription: "the first
# invocation of a third-party model subscribes the account" (Bedrock guide, model access:
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html).
_SUBSCRIBABLE = ("NOT_AVAILABLE", "PENDING")


def _access_problems(availability: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(problems no invocation can fix, problems the first invocation fixes: the Marketplace subscription)."""
    blocking, subscription = [], []
    if availability.get("authorizationStatus") != "AUTHORIZED":
        blocking.append("not authorised for this account (for Anthropic models submit the one-time use-case "
                        "form: Bedrock console, Model catalog, the model)")
    if availability.get("regionAvailability") != "AVAILABLE":
        blocking.append("not available in this Region")
    entitlement = availability.get("entitlementAvailability")
    if entitlement != "AVAILABLE":
        (subscription if entitlement in _SUBSCRIBABLE else blocking).append(
            f"no entitlement yet ({entitlement}: the first invocation by an administrator subscribes the account "
            "through AWS Marketplace; or grant aws-marketplace:Subscribe for its product id)")
    agreement = availability.get("agreementAvailability", {})
    status = agreement.get("status")
    if status not in (None, "AVAILABLE"):
        (subscription if status in _SUBSCRIBABLE else blocking).append(
            f"agreement {status}: {agreement.get('errorMessage') or 'the first invocation accepts the offer'}")
    return blocking, subscription


_SUBSCRIBE_HINT = "run loom preflight without --no-invoke as an administrator: its Converse call subscribes"


def check_access(bedrock: Any, ref: ModelRef, *, check: str = "access", will_invoke: bool = False,
                 subscribe_hint: str = _SUBSCRIBE_HINT) -> Finding:
    """Authorised, entitled, agreement accepted. With `will_invoke` (a Converse call follows), a missing
    subscription alone is a WARN: that call starts it."""
    try:
        availability = bedrock.get_foundation_model_availability(modelId=ref.foundation_model)
    except Exception as exc:
        code, message = _error(exc)
        return Finding(check, "WARN", f"could not read the model's availability ({code}: {message})")
    blocking, subscription = _access_problems(availability)
    if blocking:
        return Finding(check, "FAIL", f"{ref.foundation_model}: " + "; ".join(blocking + subscription))
    if subscription and will_invoke:
        return Finding(check, "WARN", f"{ref.foundation_model}: not subscribed yet ({'; '.join(subscription)}); the "
                                      "Converse call below is the first invocation, which starts the subscription")
    if subscription:
        return Finding(check, "FAIL", f"{ref.foundation_model}: " + "; ".join(subscription) + f" ({subscribe_hint})")
    return Finding(check, "ok", f"{ref.foundation_model}: authorised, entitled, agreement accepted")


def recheck_access(bedrock: Any, ref: ModelRef) -> Finding:
    """After a Converse call that answered: the subscription it started (Marketplace may take minutes to
    show it; the call itself answering is what matters, so this is never a FAIL)."""
    finding = check_access(bedrock, ref, check="subscribed", will_invoke=True)
    if finding.status == "ok":
        return Finding("subscribed", "ok", f"{ref.foundation_model}: entitled, agreement accepted after the first call")
    return Finding("subscribed", "WARN", f"{ref.foundation_model} answered, but its availability still reads: "
                                         f"{finding.message.split(': ', 1)[-1]}; Marketplace can take a few minutes: "
                                         "run loom preflight again later to see it settled")


# The answer's share of maxTokens in the preflight call ("OK"); the room a model's settings keep for thinking
# comes on top (converse_settings), so the call tests the fields production sends without paying for 520 tokens.
PREFLIGHT_ANSWER_TOKENS = 16


def check_converse(runtime: Any, ref: ModelRef) -> Finding:
    try:
        response = runtime.converse(
            modelId=ref.invoke_id,
            messages=[{"role": "user", "content": [{"text": "Reply with the single word OK."}]}],
            **converse_settings(ref.invoke_id).request(answer_tokens=PREFLIGHT_ANSWER_TOKENS),
        )
    except Exception as exc:
        code, message = _error(exc)
        lowered = message.lower()
        if "on-demand throughput" in lowered:
            fix = f"this model must be invoked through an inference profile: use us.{ref.foundation_model} (or eu., apac., global.)"
        elif code == "AccessDeniedException" and "marketplace" in lowered:
            fix = ("the account has no Marketplace subscription to this model: invoke it once as an administrator "
                   "(this command), or give the role aws-marketplace:Subscribe for its product id "
                   "(Terraform bedrock_marketplace_product_ids)")
        elif code == "AccessDeniedException":
            fix = ("the caller may not invoke it: it needs bedrock:InvokeModel on the inference profile and on the "
                   "foundation model in every destination Region, or the model needs access (Anthropic use-case form)")
        elif code == "ResourceNotFoundException" or "end of life" in lowered or "legacy" in lowered:
            fix = "the model is retired or unknown here: choose an ACTIVE model (`aws bedrock list-foundation-models`)"
        elif code in ("ThrottlingException", "ServiceQuotaExceededException"):
            fix = "throttled: new accounts have low tokens-per-minute quotas; retry later or request a quota increase"
        else:
            fix = "see the message"
        return Finding("converse", "FAIL", f"Converse with {ref.invoke_id} failed ({code}: {message}): {fix}")
    blocks = response.get("output", {}).get("message", {}).get("content", [])
    text = " ".join(b.get("text", "") for b in blocks).strip()
    if not text:
        # The Lambda treats an answer without text as a failed description (describe._response_text).
        return Finding("converse", "FAIL", f"{ref.invoke_id} answered no text (stopReason "
                                           f"{response.get('stopReason', '?')}, {response.get('usage', {}).get('outputTokens', '?')} "
                                           "output tokens): its thinking may take the whole maxTokens; give the model "
                                           "its own settings in inference/api/describe.py converse_settings")
    return Finding("converse", "ok", f"{ref.invoke_id} answered {text[:40]!r} ({response.get('usage', {}).get('outputTokens', '?')} tokens)")


def check_lambda(lam: Any, reserved: int | None) -> Finding:
    try:
        limits = lam.get_account_settings()["AccountLimit"]
    except Exception as exc:
        code, message = _error(exc)
        return Finding("lambda", "WARN", f"could not read Lambda account settings ({code}: {message})")
    total, unreserved = limits.get("ConcurrentExecutions", 0), limits.get("UnreservedConcurrentExecutions", 0)
    summary = f"account concurrency {total}, unreserved {unreserved}"
    if reserved is not None and unreserved - reserved < LAMBDA_UNRESERVED_MINIMUM:
        return Finding("lambda", "FAIL", f"{summary}: reserving {reserved} would leave {unreserved - reserved} < "
                                         f"{LAMBDA_UNRESERVED_MINIMUM} unreserved, which Lambda refuses; request a higher "
                                         "'Concurrent executions' quota (Service Quotas, AWS Lambda) or reserve none")
    if total <= LAMBDA_UNRESERVED_MINIMUM:
        return Finding("lambda", "WARN", f"{summary}: a new account's quota; the API then admits at most a few "
                                         "requests at a time. Request 'Concurrent executions' of 100 or more")
    return Finding("lambda", "ok", summary)


def check_github_oidc(iam: Any) -> Finding:
    try:
        arns = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    except Exception as exc:
        code, message = _error(exc)
        return Finding("github-oidc", "WARN", f"could not list OIDC providers ({code}: {message})")
    github = [a for a in arns if a.endswith("oidc-provider/token.actions.githubusercontent.com")]
    if github:
        return Finding("github-oidc", "ok", f"reuse the existing provider: TF_VARS='-var github_oidc_provider_arn={github[0]}' "
                                            "(creating a second one fails with EntityAlreadyExists)")
    return Finding("github-oidc", "ok", "no GitHub OIDC provider yet: Terraform creates it")


def check_restyle(bedrock: Any, ref: ModelRef, region: str) -> list[Finding]:
    """The POST /restyle model in `region` (a bedrock client there): lifecycle, then access. A LEGACY
    model FAILs: the lifecycle page says new customers cannot use Legacy models
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html)."""
    lifecycle = check_lifecycle(bedrock, ref, check="restyle-model", setting="restyle_model_id", legacy="FAIL",
                                image_to_image=True)
    lifecycle = Finding(lifecycle.check, lifecycle.status, f"{lifecycle.message} in {region}")
    if lifecycle.status == "FAIL":
        return [lifecycle]
    hint = ("preflight generates no image: invoke the model once as an administrator, e.g. one POST /restyle, "
            "or give the role aws-marketplace:Subscribe for its product id")
    return [lifecycle, check_access(bedrock, ref, check="restyle-access", subscribe_hint=hint)]


def run_checks(client: Callable[[str], Any], ref: ModelRef, *, invoke: bool = True,
               reserved: int | None = None, github: bool = False, restyle: ModelRef | None = None,
               restyle_region: str = DEFAULT_RESTYLE_REGION,
               restyle_client: Callable[[str], Any] | None = None) -> list[Finding]:
    """All checks, in order; the Bedrock ones stop after the first FAIL (later ones would repeat it).
    `restyle`: the POST /restyle model, checked through `restyle_client` (clients in `restyle_region`)."""
    findings = [check_identity(client("sts"))]
    if findings[0].status == "FAIL":
        return findings
    bedrock = client("bedrock")
    for check in (check_model, check_lifecycle):
        findings.append(check(bedrock, ref))
        if findings[-1].status == "FAIL":
            break
    else:
        access = check_access(bedrock, ref, will_invoke=invoke)
        findings.append(access)
        if access.status != "FAIL" and invoke:
            findings.append(check_converse(client("bedrock-runtime"), ref))
            # The call that starts a new account's subscription: read the availability again and say so.
            if findings[-1].status == "ok" and access.status == "WARN" and "not subscribed yet" in access.message:
                findings.append(recheck_access(bedrock, ref))
    if restyle is not None:
        findings += check_restyle((restyle_client or client)("bedrock"), restyle, restyle_region)
    findings.append(check_lambda(client("lambda"), reserved))
    if github:
        findings.append(check_github_oidc(client("iam")))
    return findings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loom preflight", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-id", default=DEFAULT_MODEL_ID,
                   help=f"the Bedrock model the API will use (Terraform bedrock_model_id; default {DEFAULT_MODEL_ID}, "
                        f"fallback {FALLBACK_MODEL_ID})")
    p.add_argument("--reserved-concurrency", type=int, help="the lambda_reserved_concurrency you mean to set")
    p.add_argument("--github", action="store_true", help="also look for an existing GitHub OIDC provider")
    p.add_argument("--no-invoke", action="store_true", help="skip the Converse call (no tokens, no subscription)")
    p.add_argument("--restyle-model-id", nargs="?", const=DEFAULT_RESTYLE_MODEL_ID,
                   help="also check the POST /restyle image model (Terraform enable_restyle, restyle_model_id; "
                        f"without a value: {DEFAULT_RESTYLE_MODEL_ID})")
    p.add_argument("--restyle-region", default=DEFAULT_RESTYLE_REGION,
                   help=f"the Region the restyle model is invoked in (Terraform restyle_region; default {DEFAULT_RESTYLE_REGION})")
    p.add_argument("--region")
    p.add_argument("--profile")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ref = ModelRef.parse(args.model_id)
        restyle = None if args.restyle_model_id is None else ModelRef.parse(args.restyle_model_id)
    except ValueError as exc:
        return command_error(str(exc))
    if restyle is not None and restyle.profile is not None:
        return command_error(f"the restyle model is invoked on demand by foundation model id (and Terraform allows "
                             f"only that), not through an inference profile: use {restyle.foundation_model}")
    findings = run_checks(lambda service: jobs.aws_client(service, region=args.region, profile=args.profile), ref,
                          invoke=not args.no_invoke, reserved=args.reserved_concurrency, github=args.github,
                          restyle=restyle, restyle_region=args.restyle_region,
                          restyle_client=lambda service: jobs.aws_client(service, region=args.restyle_region,
                                                                         profile=args.profile))
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.status == "FAIL"]
    print(f"preflight: {'FAILED' if failed else 'passed'} ({len(failed)} failed, "
          f"{sum(f.status == 'WARN' for f in findings)} warnings)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
