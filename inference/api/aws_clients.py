"""boto3 clients for the API Lambda: created lazily, once per container, with a time budget.

The time budget. API Gateway HTTP APIs give an integration at most 30 s (a hard quota), after which the
caller gets a 503 and everything the Lambda did is lost. The request must finish well inside it:

    REQUEST_BUDGET_S = 27 s, counted from the moment the handler starts (Lambda timeout: 28 s, the
    Terraform default, so 1 s is left for JSON encoding and API Gateway itself; the 30 s limit also
    covers a cold start, which this package keeps short: no torch, a ~170 ms import).

    1. Endpoint (sagemaker-runtime InvokeEndpoint): botocore retries off (total_max_attempts 1);
       `endpoint_client.SageMakerEndpoint` retries once, and only what never reached the model:
       a connection failure (connect timeout, refused, DNS) or throttling (ThrottlingException,
       ServiceUnavailable). A read timeout is never retried: the container is still working on the
       request, and a second one would double the GPU work while the first is abandoned.
         worst case = connect 1 s (failed) + backoff 0.5 s + connect 1 s + read 13 s   = 15.5 s
       ENDPOINT_BUDGET_S = 27 - 11 = 16 s bounds it: a retry is started only when a whole attempt
       (connect + read) still fits in what is left of those 16 s.
       (a BLIP-2 flan-t5-xl answering 8 questions with the image encoded once takes 1-2 s on a g5, a
        figure from before cross-request batching, not re-measured. The server now queues up to
        MAX_PENDING_REQUESTS=100 requests and answers them MAX_BATCH_PRODUCTS=16 products per call; one that
        waits longer than the 13 s read timeout is answered 504 here while the endpoint still finishes it.
        The server's own deadline, REQUEST_TIMEOUT_S (60 s), is shared with Batch Transform jobs of the
        same model, whose JSON Lines requests need it: docs/endpoint-contract.md.)
    2. Description (bedrock-runtime Converse): botocore retries off (total_max_attempts 1); `describe.py`
       retries itself, and starts an attempt only while the budget still holds a whole one:
         connect 1 s + read 10 s                                       =  11 s per attempt
       (400 output tokens at a Claude Sonnet model's 50-80 tokens/s take 5-8 s).
       In the worst case of step 1 (15.5 s) one Bedrock attempt still fits: 15.5 + 11 = 26.5 s <= 27 s.
       When steps 1 and 2 are quick, the same rule leaves room for the coverage retry (a second call).

Routes that chain endpoint calls (`POST /interrogate`, `POST /restyle`: inference/api/visual/tags.py) give
an optional call a shorter read timeout of its own, so that the chain's worst case still fits the budget:
`client("sagemaker-runtime", read_timeout=...)` is a second client with that timeout and no botocore retries.

botocore's `retries["max_attempts"]` counts *retries* (max_attempts 2 means 3 calls); `total_max_attempts`
counts calls, which is what the arithmetic above needs, so that is the key used here.

No attempt is started that could end after the budget, so the worst case is bounded by construction;
the attributes are returned even when no time is left for the description.
"""

from __future__ import annotations

from typing import Any

REQUEST_BUDGET_S = 27.0

ENDPOINT_CONNECT_TIMEOUT_S = 1.0
ENDPOINT_READ_TIMEOUT_S = 13.0
ENDPOINT_MAX_ATTEMPTS = 2  # counted by endpoint_client.py; only connection failures and throttling retry
ENDPOINT_RETRY_BACKOFF_S = 0.5

BEDROCK_CONNECT_TIMEOUT_S = 1.0
BEDROCK_READ_TIMEOUT_S = 10.0
BEDROCK_ATTEMPT_S = BEDROCK_CONNECT_TIMEOUT_S + BEDROCK_READ_TIMEOUT_S
BEDROCK_MAX_ATTEMPTS = 3  # counted by describe.py, across one description call
ENDPOINT_BUDGET_S = REQUEST_BUDGET_S - BEDROCK_ATTEMPT_S  # what the endpoint may take, leaving one description

_CLIENTS: dict[tuple[str, float | None], Any] = {}
_INSTALLED: dict[str, Any] = {}


def _config(service: str, read_timeout: float | None = None):
    from botocore.config import Config  # lazy: local mode needs no boto3 at all

    if service == "sagemaker-runtime":
        return Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=ENDPOINT_CONNECT_TIMEOUT_S,
            read_timeout=read_timeout or ENDPOINT_READ_TIMEOUT_S,
        )
    if service == "bedrock-runtime":
        return Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=BEDROCK_CONNECT_TIMEOUT_S,
            read_timeout=read_timeout or BEDROCK_READ_TIMEOUT_S,
        )
    raise ValueError(f"no client configuration for service {service!r}")


def client(service: str, read_timeout: float | None = None) -> Any:
    """The container's client for `service` ("sagemaker-runtime" or "bedrock-runtime"), made on first use;
    `read_timeout` asks for one with a shorter read timeout (see the module docstring)."""
    if service in _INSTALLED:
        return _INSTALLED[service]
    key = (service, read_timeout)
    if key not in _CLIENTS:
        import boto3  # lazy: keeps the handler's cold import small (boto3 alone costs ~130 ms)

        _CLIENTS[key] = boto3.client(service, config=_config(service, read_timeout))
    return _CLIENTS[key]


def use_client(service: str, value: Any | None) -> None:
    """Install a client for `service`, whatever the timeout asked (a stubbed one in tests); None forgets it."""
    if value is None:
        _INSTALLED.pop(service, None)
    else:
        _INSTALLED[service] = value


def new_client(service: str, read_timeout: float | None = None, **kwargs: Any) -> Any:
    """A fresh client with the production configuration (tests wrap it in a Stubber or point it at 127.0.0.1)."""
    import boto3

    return boto3.client(service, config=_config(service, read_timeout), **kwargs)
