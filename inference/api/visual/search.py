"""`POST /search` on the API: a text or a photo -> the catalog's closest products (docs/search.md).

    {"text": "green striped shirt" | "image": "<base64>", "k": 1-50, "filters": {"baseColour": "Green"},
     "mode": "vector" | "hybrid"}
    -> {"results": [{"id", "score", "name", "attributes"}], "index": {"backend", "size"}}

SEARCH_BACKEND picks where the results come from:
- `embedded` (default): the CLIP endpoint searches the index bundle it holds (`{"task": "search"}`);
- `opensearch_domain` / `opensearch_serverless`: the CLIP endpoint embeds the query (`{"task": "embed"}`)
  and OpenSearch (inference/api/visual/opensearch.py, SigV4-signed) ranks the products; `mode: "hybrid"` adds a
  lexical match on names and descriptions (OpenSearch only).
The Lambda never imports an ML library: the model runs on the endpoint.

Request size. Every call to the CLIP endpoint (/search, /tags, /interrogate, and /restyle's interrogation)
is sized as it will be sent (`endpoint_body`: the same `json.dumps` bytes the client posts) and refused with a
413 before the call when it exceeds SEARCH_MAX_REQUEST_BYTES: what the endpoint type accepts. Sources:
- real-time endpoints: InvokeEndpoint's `Body` is at most 6,291,456 bytes (SageMaker API reference,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html: "6 MB");
- Serverless Inference: "The maximum request and response payload size for serverless invocations is 4 MB"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-invoke.html). The guide does not say
  whether that MB is 10^6 or 2^20 bytes: SERVERLESS_MAX_REQUEST_BYTES takes the smaller, 4,000,000.
Unset, the limit is the real-time one (6,291,456); Terraform's search module sets it per endpoint type.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

from inference.api.endpoint_client import EndpointError, endpoint_for
from inference.api.visual.opensearch import OpenSearchClient
from inference.api.request_body import check_image_upload, read_json
from loom.base64_image import decode_base64_image
from loom.errors import StatusError
from loom.search_request import check_fields, check_filters, check_k, check_one_query, check_text

BACKENDS = ("embedded", "opensearch_domain", "opensearch_serverless")
MODES = ("vector", "hybrid")
REQUEST_KEYS = {"text", "image", "k", "filters", "mode"}
INDEX_INFO_TTL_S = 300.0

REALTIME_MAX_REQUEST_BYTES = 6_291_456  # InvokeEndpoint Body, real-time endpoints (6 MB)
SERVERLESS_MAX_REQUEST_BYTES = 4_000_000  # Serverless Inference "4 MB", read as 10^6 bytes (the stricter)
MAX_REQUEST_BYTES_ENV = "SEARCH_MAX_REQUEST_BYTES"
ENDPOINT_TYPES = {REALTIME_MAX_REQUEST_BYTES: "real-time endpoint (InvokeEndpoint's 6 MB)",
                  SERVERLESS_MAX_REQUEST_BYTES: "serverless endpoint (Serverless Inference's 4 MB)",
                  4 * 1024 * 1024: "serverless endpoint (Serverless Inference's 4 MB)"}


@dataclass(frozen=True)
class SearchSettings:
    """Where the CLIP endpoint and the index are (Terraform's search module sets these variables)."""

    endpoint_name: str | None
    endpoint_url: str | None
    backend: str
    opensearch_endpoint: str | None
    opensearch_index: str
    region: str
    max_request_bytes: int = REALTIME_MAX_REQUEST_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, route: str = "POST /search") -> "SearchSettings":
        """The settings, or StatusError: 404 when this API has no CLIP endpoint (the route is not enabled, as
        POST /restyle without a model), 500 when the variables contradict each other."""
        env = os.environ if env is None else env
        name = env.get("SEARCH_ENDPOINT_NAME", "").strip() or None
        url = env.get("SEARCH_ENDPOINT_URL", "").strip() or None
        if not name and not url:
            raise StatusError(404, f"{route} is not enabled on this API: it needs the CLIP endpoint (Terraform "
                                   "variable search; SEARCH_ENDPOINT_NAME, or SEARCH_ENDPOINT_URL in local mode)")
        if name and url:
            raise StatusError(500, "search misconfigured: set exactly one of SEARCH_ENDPOINT_NAME or SEARCH_ENDPOINT_URL")
        backend = env.get("SEARCH_BACKEND", "embedded").strip().lower()
        if backend not in BACKENDS:
            raise StatusError(500, f"search misconfigured: SEARCH_BACKEND={backend!r}, expected one of {list(BACKENDS)}")
        opensearch = env.get("OPENSEARCH_ENDPOINT", "").strip() or None
        if backend != "embedded" and not opensearch:
            raise StatusError(500, f"search misconfigured: SEARCH_BACKEND={backend} needs OPENSEARCH_ENDPOINT")
        return cls(name, url, backend, opensearch, env.get("OPENSEARCH_INDEX", "").strip() or "loom-products",
                   env.get("AWS_REGION", "us-east-1"), max_request_bytes(env))


def max_request_bytes(env: Mapping[str, str]) -> int:
    """SEARCH_MAX_REQUEST_BYTES (a positive integer), or the real-time limit when unset; 500 otherwise."""
    raw = env.get(MAX_REQUEST_BYTES_ENV, "").strip()
    if not raw:
        return REALTIME_MAX_REQUEST_BYTES
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) < 1024:  # '²' is a digit to isdigit()
        raise StatusError(500, f"search misconfigured: {MAX_REQUEST_BYTES_ENV}={raw[:20]!r} must be a whole number "
                               "of bytes (at least 1024), e.g. 4000000 for a serverless endpoint")
    return int(raw)


def endpoint_body(task: Mapping[str, Any]) -> bytes:
    """The CLIP endpoint's request body exactly as `invoke_endpoint` sends it (json.dumps defaults:
    separators ", " and ": ", ensure_ascii=True)."""
    return json.dumps(task).encode()


def endpoint_type(limit: int) -> str:
    """What a limit stands for, in words, for the 413 message."""
    return ENDPOINT_TYPES.get(limit, f"a limit set for this deployment ({MAX_REQUEST_BYTES_ENV})")


def max_image_bytes(body_bytes: int, image_chars: int, limit: int) -> int:
    """The largest photo (raw bytes) whose request fits `limit`, the other fields unchanged: base64 makes
    4 characters of every 3 bytes (padded), and the body's other bytes stay `body_bytes - image_chars`."""
    room = limit - (body_bytes - image_chars)
    return max(0, room // 4 * 3)


def check_request_size(body: bytes, task: Mapping[str, Any], limit: int) -> None:
    """StatusError 413 when the endpoint cannot take `body` (the bytes of `task`): says the limit, the endpoint
    type and, for a photo request, the largest photo that fits."""
    if len(body) <= limit:
        return
    message = (f"the request to the CLIP endpoint would be {len(body)} bytes; the {endpoint_type(limit)} accepts "
               f"at most {limit} bytes")
    image = task.get("image")
    if isinstance(image, str):
        message += (f": send a photo of at most {max_image_bytes(len(body), len(image), limit)} bytes "
                    "(it travels base64-encoded, 4/3 larger)")
    raise StatusError(413, message)


def parse_search(body: str | None, is_base64: bool) -> dict[str, Any]:
    """The validated request (the image stays base64); StatusError 400/413 says what to fix. The body is checked
    against the public contract's SearchRequest first (request_body.read_json)."""
    request = read_json(body, is_base64, "SearchRequest", '{"text": "green shirt"} or {"image": "<base64>"}')
    check_fields(request, REQUEST_KEYS, "POST /search")
    check_one_query(request)
    query: dict[str, Any] = {"k": check_k(request.get("k"))}
    filters = check_filters(request.get("filters"))
    if filters:
        query["filters"] = filters
    mode = request.get("mode", "vector")
    if mode not in MODES:
        raise StatusError(400, f"'mode' must be one of {list(MODES)}, got {mode!r}")
    if "text" in request:
        query["text"] = check_text(request["text"]).strip()
    else:
        if mode == "hybrid":
            raise StatusError(400, "'mode': 'hybrid' needs a 'text' (a photo has no words to match)")
        query["image"] = checked_image(request["image"])
    query["mode"] = mode
    return query


def checked_image(value: Any) -> str:
    """The photo query checked as every API route checks an upload, re-encoded as plain base64."""
    try:
        raw = decode_base64_image(value)
    except ValueError as exc:
        raise StatusError(400, str(exc)) from None
    check_image_upload(raw, StatusError, field="image")
    return base64.b64encode(raw).decode("ascii")


def invoke_endpoint(settings: SearchSettings, body: Mapping[str, Any], read_timeout: float | None = None
                    ) -> dict[str, Any]:
    """POST a JSON request to the CLIP endpoint (SageMaker, or HTTP in local mode) with the attribute
    endpoint's client rules (retries, timeouts, error statuses); its JSON answer. `read_timeout`: one
    attempt, waiting at most that long (endpoint_client.endpoint_for). A body over the endpoint type's limit
    is a 413 before any call (check_request_size)."""
    data = endpoint_body(body)
    check_request_size(data, body, settings.max_request_bytes)
    endpoint = endpoint_for(settings.endpoint_name, settings.endpoint_url, read_timeout)
    raw = endpoint.invoke(data)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise EndpointError(502, f"the CLIP endpoint {endpoint.name!r} answered with a body that is not JSON") from exc


_INDEX_INFO: dict[str, tuple[float, int, set[str]]] = {}


def opensearch_index_info(client: OpenSearchClient, index: str) -> tuple[int, set[str]]:
    """(document count, attribute fields) of an OpenSearch index, cached for INDEX_INFO_TTL_S per container."""
    cached = _INDEX_INFO.get(index)
    if cached and time.monotonic() - cached[0] < INDEX_INFO_TTL_S:
        return cached[1], cached[2]
    mapping = client.request("GET", f"{index}/_mapping")
    properties = next(iter(mapping.values()), {}).get("mappings", {}).get("properties", {})
    fields = set(properties.get("attributes", {}).get("properties", {}))
    count = client.count(index)
    _INDEX_INFO[index] = (time.monotonic(), count, fields)
    return count, fields


def search(settings: SearchSettings, query: Mapping[str, Any], client: OpenSearchClient | None = None
           ) -> dict[str, Any]:
    """Answer a validated search request from the configured backend."""
    if settings.backend == "embedded":
        if query["mode"] == "hybrid":
            raise StatusError(400, "'mode': 'hybrid' needs an OpenSearch backend; this API searches the endpoint's "
                                   "embedded index (vector only)")
        task = {"task": "search", **{k: v for k, v in query.items() if k != "mode"}}
        return invoke_endpoint(settings, task)
    # Hybrid works on both: the Serverless guide documents the normalization processor and the hybrid query
    # (https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-configure-neural-search.html).
    kind = "serverless" if settings.backend == "opensearch_serverless" else "domain"
    client = client or OpenSearchClient(settings.opensearch_endpoint, settings.region, kind)  # type: ignore[arg-type]
    size, fields = opensearch_index_info(client, settings.opensearch_index)
    unknown = sorted(set(query.get("filters") or {}) - fields)
    if unknown:
        raise StatusError(400, f"unknown filter field {unknown[0]!r}; this index can filter on {sorted(fields)}")
    embed = {"task": "embed", **({"texts": [query["text"]]} if "text" in query else {"image": query["image"]})}
    vector = invoke_endpoint(settings, embed)["embeddings"][0]
    hybrid_text = query.get("text") if query["mode"] == "hybrid" else None
    results = client.search(settings.opensearch_index, vector, query["k"], query.get("filters"), hybrid_text)
    return {"results": results, "index": {"backend": settings.backend, "size": size}}
