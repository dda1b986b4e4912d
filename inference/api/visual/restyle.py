"""`POST /restyle`: the product photo redrawn in a style by a Stability image-to-image model on Bedrock.

The prompt is what Loom knows about the photo plus the style the client asks for: "a Red Striped shirt
with Long Sleeves, in the style of Van Gogh's Starry Night". The subject comes from the attribute
endpoint's stated attributes (never a guess it withheld). When the API also has the CLIP endpoint, the
photo's interrogated prompt (POST /interrogate's, with that subject as its caption) takes the subject's
place: "a Red Striped shirt with Long Sleeves, red, striped, studio photo, ..., in the style of ...". The
image goes to Bedrock `InvokeModel`.

Model. Stable Diffusion XL 1.0, which the reference post used, is a legacy model on Bedrock; the default
is Stable Diffusion 3.5 Large, whose request takes `mode: "image-to-image"`, `image` and `strength`
(https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html).
`loom preflight` checks the configured model's lifecycle status before deployment.

Input bounds. Stability's image-to-image request takes an image whose every side is at least 64 pixels
(Stability API reference, Stable Diffusion 3/3.5 generate, `image`: "Supported dimensions: Every side must
be at least 64 pixels"), and Stability's image inputs are held to at most 9,437,184 pixels in all and an
aspect ratio between 1:2.5 and 2.5:1 (the validation rules of its image services). The Lambda has no
Pillow and no pure-Python resizer would fit API Gateway's 30 s with a photo of several megapixels, so a
photo outside these bounds is refused with a 400 that names them (resize it, keeping its aspect), before
any paid call; the model itself answers at about 1 megapixel with the photo's aspect ratio.

Size. A synchronous Lambda response is at most 6 MB
(https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): an image whose base64 form
would not fit with room for the JSON is written to the project bucket and answered with a presigned URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from inference.api.describe import subject_from_attributes
from inference.api.service import check_image_upload
from loom.base64_image import decode_base64_image
from loom.errors import StatusError

DEFAULT_RESTYLE_MODEL_ID = "stability.sd3-5-large-v1:0"
# The Bedrock models whose documented request takes the body `model_request` sends (prompt, mode
# "image-to-image", image, strength, seed, output_format): Stable Diffusion 3.5 Large and Stable Diffusion 3
# Large. Stability's other image-in/image-out models on Bedrock (Stable Image editing and control services:
# style transfer, inpaint, outpaint, search-and-replace, sketch, structure, upscale...) take other bodies.
#   https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
#   https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-text-image.html
IMAGE_TO_IMAGE_MODELS = frozenset({DEFAULT_RESTYLE_MODEL_ID, "stability.sd3-large-v1:0"})
DEFAULT_RESTYLE_REGION = "us-west-2"  # Terraform restyle_region's default; `loom preflight` checks the model there
RESTYLE_KEY_PREFIX = "restyle/"  # where large results go (Terraform grants this prefix only)
MAX_STYLE_CHARS = 300
MAX_PROMPT_CHARS = 10_000  # the model's documented prompt limit
DEFAULT_STRENGTH = 0.6
MIN_STRENGTH, MAX_STRENGTH = 0.05, 1.0  # 0 would return the photo unchanged; the model accepts 0..1
# 6 MB response limit, less room for the JSON fields around the image.
MAX_INLINE_BASE64_CHARS = 5_500_000
URL_EXPIRY_S = 900
OUTPUT_FORMAT = "jpeg"
REQUEST_KEYS = {"image", "style", "strength", "seed", "product_type"}
# The image bounds of the image-to-image request (module docstring).
MIN_IMAGE_SIDE = 64
MAX_IMAGE_PIXELS = 9_437_184
MAX_ASPECT_RATIO = 2.5

# finish_reasons of a Stability response on Bedrock (same page): each becomes an answer the client can act on.
_FILTERED = {
    "Filter reason: prompt": (400, "the style or prompt was refused by the model's content filter: choose another style"),
    "Filter reason: input image": (400, "the photo was refused by the model's content filter"),
    "Filter reason: output image": (422, "the restyled image was withheld by the model's content filter: "
                                         "try another style or a lower strength"),
    "Inference error": (502, "the image model failed to restyle the photo: try again"),
}
# Bedrock runtime errors (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html).
_CLIENT_ERRORS = {
    "ValidationException": (400, "the image model refused the request"),
    "ThrottlingException": (503, "the image model is busy: retry shortly"),
    "ServiceQuotaExceededException": (503, "the image model's quota is used up: retry later"),
    "ModelTimeoutException": (504, "the image model took too long: retry"),
    "ModelNotReadyException": (503, "the image model is not ready: retry shortly"),
    "AccessDeniedException": (502, "this API may not call the image model (IAM or model access)"),
    "ResourceNotFoundException": (502, "the configured image model does not exist in this Region"),
    "ServiceUnavailableException": (503, "Bedrock is unavailable: retry shortly"),
    "InternalServerException": (502, "Bedrock failed: retry"),
}


class RestyleError(StatusError):
    """A restyle request that cannot be answered; `status` and `message` become the error response."""


@dataclass(frozen=True)
class RestyleRequest:
    image: bytes
    image_format: str
    style: str
    strength: float
    seed: int | None
    product_type: str | None


def parse_restyle_request(body: str | None, is_base64: bool, content_type: str | None) -> RestyleRequest:
    """Validate `{"image", "style", "strength"?, "seed"?, "product_type"?}` before any paid call."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise RestyleError(415, "send application/json: {\"image\": \"<base64>\", \"style\": \"in the style of ...\"}")
    if not body:
        raise RestyleError(400, "the request body is missing")
    try:
        fields = json.loads(_b64decode(body, "body") if is_base64 else body)
    except ValueError as exc:
        raise RestyleError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise RestyleError(400, "the JSON body must be an object with \"image\" and \"style\"")
    extra = sorted(set(fields) - REQUEST_KEYS)
    if extra:
        raise RestyleError(400, f"unexpected fields {extra}; allowed: {sorted(REQUEST_KEYS)}")
    if not isinstance(fields.get("image"), str) or not fields["image"].strip():
        raise RestyleError(400, "\"image\" must be a non-empty base64 string of a JPEG or PNG")
    try:  # the same base64 forms the server and the other routes accept (wrapped lines, data: URLs)
        image = decode_base64_image(fields["image"])
    except ValueError as exc:
        raise RestyleError(400, str(exc)) from None
    info = check_image_upload(image, RestyleError)
    style = fields.get("style")
    if not isinstance(style, str) or not style.strip() or len(style) > MAX_STYLE_CHARS:
        raise RestyleError(400, f"\"style\" must be a non-empty text of at most {MAX_STYLE_CHARS} characters, "
                                "e.g. \"in the style of Van Gogh's Starry Night\"")
    strength = fields.get("strength", DEFAULT_STRENGTH)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise RestyleError(400, f"\"strength\" must be a number from {MIN_STRENGTH} to {MAX_STRENGTH} "
                                "(how far the result may move from the photo)")
    seed = fields.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967294):
        raise RestyleError(400, "\"seed\" must be an integer from 0 to 4294967294")
    product_type = fields.get("product_type")
    if product_type is not None and (not isinstance(product_type, str) or not product_type.strip()):
        raise RestyleError(400, "\"product_type\" must be a non-empty text such as \"shirt\"")
    check_image_bounds(info.width, info.height)
    return RestyleRequest(image, info.format, " ".join(style.split()), float(strength), seed,
                          " ".join(product_type.split()) if product_type else None)


def check_image_bounds(width: int, height: int) -> None:
    """400 for a photo the image model's request does not take (module docstring: sides, pixels, aspect)."""
    bounds = (f"the image model takes photos with every side at least {MIN_IMAGE_SIDE} pixels, at most "
              f"{MAX_IMAGE_PIXELS:,} pixels in all and an aspect ratio between 1:{MAX_ASPECT_RATIO:g} and "
              f"{MAX_ASPECT_RATIO:g}:1; resize it keeping its aspect (about 1 megapixel is what the model draws)")
    if min(width, height) < MIN_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS or \
            max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise RestyleError(400, f"the photo is {width}x{height}: {bounds}")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RestyleError(400, f"the {what} is not valid base64") from None


def restyle_prompt(subject: str, style: str) -> str:
    """The image model's prompt: the photo's subject, then the client's style."""
    prompt = f"{subject}, {style}"
    return prompt[:MAX_PROMPT_CHARS]


def model_request(model_id: str, image: bytes, prompt: str, strength: float, seed: int | None) -> dict[str, Any]:
    """The InvokeModel arguments for an image-to-image call (the documented SD 3.5 Large body)."""
    body: dict[str, Any] = {"prompt": prompt, "mode": "image-to-image", "image": base64.b64encode(image).decode(),
                            "strength": strength, "output_format": OUTPUT_FORMAT}
    if seed is not None:
        body["seed"] = seed
    return {"modelId": model_id, "body": json.dumps(body), "contentType": "application/json",
            "accept": "application/json"}


def invoke_restyle(client: Any, model_id: str, image: bytes, prompt: str, strength: float,
                   seed: int | None = None) -> tuple[bytes, int | None]:
    """(restyled image bytes, seed) from Bedrock; RestyleError with a status the client can act on."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.invoke_model(**model_request(model_id, image, prompt, strength, seed))
        data = json.loads(response["body"].read())
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status, message = _CLIENT_ERRORS.get(code, (502, "the image model call failed"))
        detail = exc.response.get("Error", {}).get("Message", "")
        raise RestyleError(status, f"{message} ({code}: {detail})") from None
    except BotoCoreError as exc:
        raise RestyleError(504 if "timeout" in type(exc).__name__.lower() else 502,
                           f"the image model could not be reached: {exc}") from None
    except ValueError as exc:
        raise RestyleError(502, f"the image model answered with a body that is not JSON: {exc}") from None
    reasons = [r for r in (data.get("finish_reasons") or []) if r]
    if reasons:
        status, message = _FILTERED.get(reasons[0], (502, f"the image model stopped: {reasons[0]}"))
        raise RestyleError(status, message)
    images = data.get("images") or []
    if not images:
        raise RestyleError(502, "the image model answered without an image")
    try:
        restyled = base64.b64decode(images[0], validate=True)
    except (binascii.Error, ValueError):
        raise RestyleError(502, "the image model answered with an image that is not base64") from None
    seeds = data.get("seeds") or [None]
    return restyled, (int(seeds[0]) if seeds[0] is not None else None)


def deliver(image: bytes, *, bucket: str | None, s3: Callable[[], Any], key_prefix: str = RESTYLE_KEY_PREFIX
            ) -> dict[str, Any]:
    """The image inline (base64) when it fits the response limit, else a short-lived presigned URL."""
    encoded = base64.b64encode(image).decode()
    content_type = f"image/{OUTPUT_FORMAT}"
    if len(encoded) <= MAX_INLINE_BASE64_CHARS:
        return {"image": encoded, "content_type": content_type}
    if not bucket:
        raise RestyleError(502, "the restyled image is too large to return inline and no RESTYLE_BUCKET is set")
    client = s3()
    key = f"{key_prefix}{uuid.uuid4().hex}.{OUTPUT_FORMAT}"
    client.put_object(Bucket=bucket, Key=key, Body=image, ContentType=content_type)  # bucket default: SSE-KMS
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                        ExpiresIn=URL_EXPIRY_S)
    return {"url": url, "expires_in": URL_EXPIRY_S, "content_type": content_type}


# ---------------------------------------------------------------------------------------------------
# The route's flow, in plain values (the handler only shapes HTTP).

# API Gateway's 30 s cover the attribute call and the image call. Stability image models take several
# seconds at 1 megapixel; an image call is started only while this much budget is left.
IMAGE_CALL_S = 20.0
# With a CLIP endpoint the prompt is the photo's interrogated prompt ("fast": the endpoint ranks phrase
# embeddings that ship in its artifact, no text encoding), asked with the stated attributes as caption. That
# call is optional: one attempt of at most 1 s connect + INTERROGATE_READ_S, started only while it and the
# image call still fit; otherwise, or when it fails, the prompt is made of the stated attributes.
INTERROGATE_MODE = "fast"
INTERROGATE_READ_S = 2.0
INTERROGATE_CALL_S = 1.0 + INTERROGATE_READ_S
_IMAGE_CLIENT: dict[str | None, Any] = {}


def image_client(region: str | None = None) -> Any:
    """The container's bedrock-runtime client for image models in `region` (None: the Lambda's own): one
    call, read timeout IMAGE_CALL_S."""
    if region not in _IMAGE_CLIENT:
        import boto3
        from botocore.config import Config

        _IMAGE_CLIENT[region] = boto3.client("bedrock-runtime", region_name=region, config=Config(
            retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1.0,
            read_timeout=IMAGE_CALL_S - 1.0))
    return _IMAGE_CLIENT[region]


def storage_client(region: str | None = None) -> Any:
    """An S3 client for the presigned URL (SigV4: the bucket's objects are KMS-encrypted), signing for the
    bucket's Regional endpoint (<bucket>.s3.<region>.amazonaws.com). Without this botocore signs URLs for
    the global endpoint (<bucket>.s3.amazonaws.com), which redirects, and then fails the signature, for
    buckets in Regions launched after March 20, 2019 and for new buckets until DNS catches up
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html, "Legacy global endpoint";
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingRouting.html#Redirects). The bucket is the
    project bucket, in the Lambda's own Region (AWS_REGION) unless `region` says otherwise. Its name has no
    dots (Terraform's bucket_name validation): S3's wildcard certificate does not match a virtual-hosted
    bucket name with dots (VirtualHosting.html above)."""
    import os

    import boto3
    from botocore.config import Config

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("s3", region_name=region, config=Config(
        signature_version="s3v4", connect_timeout=1.0, read_timeout=5.0,
        retries={"mode": "standard", "total_max_attempts": 3},
        s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"}))


@dataclass(frozen=True)
class RestyleSettings:
    """RESTYLE_MODEL_ID (unset: the route is off), RESTYLE_BUCKET (for images too large to inline) and
    RESTYLE_REGION (where the model is offered; unset: the Lambda's Region)."""

    model_id: str | None
    bucket: str | None
    region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "RestyleSettings":
        return cls(env.get("RESTYLE_MODEL_ID", "").strip() or None, env.get("RESTYLE_BUCKET", "").strip() or None,
                   env.get("RESTYLE_REGION", "").strip() or None)

    def require_enabled(self) -> None:
        if not self.model_id:
            raise RestyleError(404, "restyling is not enabled on this API (RESTYLE_MODEL_ID is not set)")


def answer_restyle(settings: RestyleSettings, request: RestyleRequest, *, endpoint: Any, default_product: str,
                   bedrock: Any, s3: Callable[[], Any], deadline: float, clock: Callable[[], float],
                   interrogate: Callable[[bytes, str | None], str] | None = None) -> dict[str, Any]:
    """Stated attributes (-> interrogated prompt, with a CLIP endpoint) -> prompt -> restyled image, inline or
    as a URL. `interrogate(image, caption)` is the CLIP call (tags.prompt_interrogator), or None."""
    try:
        prediction = endpoint.predict(request.image, None)
    except StatusError as exc:
        raise RestyleError(exc.status, exc.message) from None
    subject = subject_from_attributes(prediction.attributes, request.product_type or default_product)
    described, source, interrogate_error = subject, "attributes", None
    if interrogate is not None:
        if deadline - clock() < IMAGE_CALL_S + INTERROGATE_CALL_S:
            interrogate_error = "no time was left to interrogate the photo after the attribute call"
        else:
            try:
                described, source = interrogate(request.image, subject), "interrogated"
            except StatusError as exc:
                interrogate_error = f"the CLIP endpoint could not interrogate the photo ({exc.status}: {exc.message})"
    prompt = restyle_prompt(described, request.style)
    if deadline - clock() < IMAGE_CALL_S:
        raise RestyleError(504, "no time was left for the image model after the attribute call: retry")
    image, seed = invoke_restyle(bedrock, settings.model_id, request.image, prompt, request.strength, request.seed)
    body = deliver(image, bucket=settings.bucket, s3=s3)
    body.update(prompt=prompt, prompt_source=source, strength=request.strength, seed=seed, model=settings.model_id)
    if interrogate_error:
        body["interrogate_error"] = interrogate_error + "; the prompt names the stated attributes"
    return body
