"""`POST /tags` and `POST /interrogate` on the API: zero-shot tags and a text prompt for a product photo,
answered by the CLIP endpoint (docs/api.md; the endpoint's side: docs/search.md).

    POST /tags         {"image": "<base64>", "attributes"?: [...], "labels"?: {"Pattern": ["Striped", ...]},
                        "min_probability"?: (0, 1]}
                       -> the endpoint's {"tags": {...}, "withheld": {...}}
    POST /interrogate  {"image": "<base64>", "mode"?: "fast" | "classic" | "best", "max_terms"?: 1..32}
                       -> the endpoint's {"prompt", "caption", "terms": [{"text", "similarity"}], "similarity"}
                          (+ "caption_error" when the caption could not be made)

Every request is checked here (the same upload check as the other routes, loom/clip_request.py for the rest)
before any endpoint is called; the endpoint's own 4xx reaches the client with its reason. A request larger
than the CLIP endpoint's type accepts (SEARCH_MAX_REQUEST_BYTES, search.check_request_size) is a 413.

The caption. When the API has the attribute endpoint as well, /interrogate first asks it what the photo
shows and sends the CLIP endpoint a caption made of the **stated** attributes only, phrased as the restyle
prompt phrases them ("a Green Striped shirt with Short Sleeves": describe.subject_from_attributes); a value
the attribute model withheld never reaches it. When that call fails the photo is still interrogated, without
a caption, and the answer says why (`caption_error`). Without an attribute endpoint there is no caption.

Time budget (inference/api/aws_clients.py). The CLIP call keeps the endpoint rules: at most
ENDPOINT_BUDGET_S (16 s; worst case 15.5 s). The caption call is optional, so it gets one attempt that waits
at most CAPTION_READ_TIMEOUT_S for the answer: 1 s connect + 10 s read + 15.5 s = 26.5 s <= REQUEST_BUDGET_S.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Mapping

from inference.api import aws_clients
from inference.api.describe import subject_from_attributes
from inference.api.endpoint_client import AttributeEndpoint, EndpointError
from inference.api.visual.search import (SearchSettings, check_request_size, checked_image, endpoint_body,
                                         invoke_endpoint, read_json_object)
from inference.api.service import Settings
from loom.clip_request import parse_interrogate, parse_tags
from loom.errors import StatusError
from loom.schema import DEFAULT_PRODUCT_NOUN
from loom.search_request import check_fields

CAPTION_READ_TIMEOUT_S = (aws_clients.REQUEST_BUDGET_S - aws_clients.ENDPOINT_BUDGET_S
                          - aws_clients.ENDPOINT_CONNECT_TIMEOUT_S)


# What a client may send on each route: the endpoint's task fields less `task` (the route names it) and, on
# /interrogate, less `caption` (the Lambda composes it from the stated attributes).
TAGS_FIELDS = ("attributes", "labels", "min_probability")
INTERROGATE_FIELDS = ("mode", "max_terms")


def _parse_task(task: str, route: str, fields: tuple[str, ...], example: str, body: str | None, is_base64: bool
                ) -> dict[str, Any]:
    """The CLIP endpoint's request for one route's body, checked by the task's rules (loom/clip_request.py)
    and the upload check of every route; StatusError 400/413 otherwise."""
    request = read_json_object(body, is_base64, example)
    check_fields(request, {"image", *fields}, route)
    (parse_tags if task == "tags" else parse_interrogate)({k: v for k, v in request.items() if k != "image"})
    return {"task": task, "image": checked_image(request.get("image")),
            **{name: request[name] for name in fields if request.get(name) is not None}}


def parse_tags_route(body: str | None, is_base64: bool) -> dict[str, Any]:
    """The CLIP endpoint's `tags` request for a POST /tags body."""
    return _parse_task("tags", "POST /tags", TAGS_FIELDS, '{"image": "<base64>", "labels": {"Pattern": ["Striped", '
                       '"Solid"]}}', body, is_base64)


def parse_interrogate_route(body: str | None, is_base64: bool) -> dict[str, Any]:
    """The CLIP endpoint's `interrogate` request for a POST /interrogate body (no caption yet)."""
    return _parse_task("interrogate", "POST /interrogate", INTERROGATE_FIELDS, '{"image": "<base64>", "mode": "fast"}',
                       body, is_base64)


def tags(settings: SearchSettings, task: Mapping[str, Any]) -> dict[str, Any]:
    """The CLIP endpoint's tags for a checked request; 502 for an answer that breaks the contract."""
    answer = invoke_endpoint(settings, task)
    if not isinstance(answer.get("tags"), dict) or not isinstance(answer.get("withheld"), dict):
        raise EndpointError(502, "the CLIP endpoint's tags answer breaks the contract (no 'tags' and 'withheld' objects)")
    return answer


def interrogate(settings: SearchSettings, task: Mapping[str, Any], read_timeout: float | None = None
                ) -> dict[str, Any]:
    """The CLIP endpoint's prompt for a checked request; 502 for an answer that breaks the contract."""
    answer = invoke_endpoint(settings, task, read_timeout)
    if not isinstance(answer.get("prompt"), str) or not isinstance(answer.get("terms"), list):
        raise EndpointError(502, "the CLIP endpoint's interrogate answer breaks the contract (no 'prompt' and 'terms')")
    return answer


def attribute_settings(env: Mapping[str, str] | None = None) -> Settings | None:
    """The attribute endpoint's settings when this API has one (ENDPOINT_NAME or ENDPOINT_URL), else None."""
    env = os.environ if env is None else env
    if not (env.get("ENDPOINT_NAME", "").strip() or env.get("ENDPOINT_URL", "").strip()):
        return None
    return Settings.from_env(env)


def caption_from_attributes(endpoint: AttributeEndpoint, image: bytes, product_noun: str = DEFAULT_PRODUCT_NOUN
                            ) -> tuple[str | None, str | None]:
    """(caption, why there is none): the stated attributes in words, or None and the reason."""
    try:
        prediction = endpoint.predict(image, None)
    except StatusError as exc:
        return None, f"the attribute endpoint could not describe the photo ({exc.status}: {exc.message})"
    if not prediction.attributes:
        return None, "the attribute endpoint stated no attribute of this photo (all withheld)"
    return subject_from_attributes(prediction.attributes, product_noun), None


def answer_tags(event: Any) -> tuple[int, dict[str, Any]]:
    """(status, body) for one API Gateway event on POST /tags; never raises for a bad request."""
    try:
        settings = SearchSettings.from_env(route="POST /tags")
        return 200, tags(settings, parse_tags_route(event.body, event.is_base64_encoded))
    except StatusError as exc:
        return exc.status, exc.body()


def answer_interrogate(event: Any) -> tuple[int, dict[str, Any]]:
    """(status, body) for one API Gateway event on POST /interrogate; never raises for a bad request."""
    try:
        settings = SearchSettings.from_env(route="POST /interrogate")
        task = parse_interrogate_route(event.body, event.is_base64_encoded)
        # Refuse a photo the CLIP endpoint cannot take before the (paid) caption call; the caption's few
        # bytes are counted again when the request is sent.
        check_request_size(endpoint_body(task), task, settings.max_request_bytes)
        attribute = attribute_settings()
        caption_error = None
        if attribute is not None:
            caption, caption_error = caption_from_attributes(attribute.endpoint(CAPTION_READ_TIMEOUT_S),
                                                             base64.b64decode(task["image"]))
            if caption:
                task["caption"] = caption
        answer = interrogate(settings, task)
        if caption_error:
            answer["caption_error"] = caption_error
        return 200, answer
    except StatusError as exc:
        return exc.status, exc.body()


def clip_settings(env: Mapping[str, str] | None = None) -> SearchSettings | None:
    """The CLIP endpoint's settings when this API has one, else None (POST /restyle then prompts from the
    attributes alone)."""
    try:
        return SearchSettings.from_env(env)
    except StatusError as exc:
        if exc.status == 404:  # no CLIP endpoint on this API
            return None
        raise


def prompt_interrogator(settings: SearchSettings, mode: str, read_timeout: float):
    """`interrogate(image, caption) -> prompt` for POST /restyle: one CLIP call of at most `read_timeout`."""

    def run(image: bytes, caption: str | None) -> str:
        task: dict[str, Any] = {"task": "interrogate", "image": base64.b64encode(image).decode("ascii"), "mode": mode}
        if caption:
            task["caption"] = caption
        return interrogate(settings, task, read_timeout)["prompt"]

    return run
