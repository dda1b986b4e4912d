"""Descriptions for a batch of products with the Lambda's description writer, a few at a time.

`describe_results` runs `inference.api.describe.write_description` (the same code the API Lambda uses) over the
answered results of a Batch Transform job on a small thread pool, retrying a failed description with
backoff, and reports products per second. Bedrock's per-account quotas, not the CPU, bound the pace, so
the concurrency is a small number chosen by the user (default 4).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, MutableMapping, Sequence

from loom.schema import DEFAULT_PRODUCT_NOUN
from inference.api.describe import DEFAULT_MODEL_ID, BedrockWriter, DescriptionWriter, OfflineWriter, write_description

DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 2
# A batch job's own budget, not the Lambda's (bound by API Gateway's 30 s): nobody waits on one product,
# so a Bedrock call may take a whole minute and is tried up to 4 times within 5 minutes a product.
BEDROCK_CONNECT_TIMEOUT_S = 5.0
BEDROCK_READ_TIMEOUT_S = 60.0
BEDROCK_MAX_ATTEMPTS = 4
PRODUCT_BUDGET_S = 300.0


def make_writer(kind: str, model_id: str | None = None, *, region: str | None = None) -> DescriptionWriter:
    """"offline" (no AWS) or "bedrock" (Converse, with the Lambda's client settings)."""
    if kind == "offline":
        return OfflineWriter()
    if kind == "bedrock":
        import boto3
        from botocore.config import Config

        # botocore retries off: BedrockWriter retries, within the product's budget.
        config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=BEDROCK_CONNECT_TIMEOUT_S, read_timeout=BEDROCK_READ_TIMEOUT_S)
        client = boto3.client("bedrock-runtime", region_name=region, config=config)
        return BedrockWriter(client, model_id or DEFAULT_MODEL_ID, max_attempts=BEDROCK_MAX_ATTEMPTS,
                             attempt_s=BEDROCK_CONNECT_TIMEOUT_S + BEDROCK_READ_TIMEOUT_S)
    raise ValueError(f"unknown writer {kind!r}; use offline or bedrock")


def describe_results(
    results: Sequence[MutableMapping[str, Any]],
    writer: DescriptionWriter,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: int = DEFAULT_RETRIES,
    product_type: str = DEFAULT_PRODUCT_NOUN,
    language: str = "en",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Add `description` (or `description_error`) to every answered result; returns counts and products/s."""
    todo = [row for row in results if "error" not in row and row.get("attributes")]

    def describe(row: MutableMapping[str, Any]) -> bool:
        for attempt in range(retries + 1):
            # Exactly the stated values are described: the calibrated model values and the merchant's.
            outcome = write_description(writer, row["attributes"],
                                        product_type=product_type, language=language,
                                        deadline=clock() + PRODUCT_BUDGET_S, clock=clock)
            if outcome.text is not None:
                row["description"] = outcome.text
                row.pop("description_error", None)
                return True
            row["description_error"] = outcome.error or "no description"
            if attempt < retries:
                sleep(min(30.0, 2.0 * 2**attempt))
        return False

    started = clock()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        done = list(pool.map(describe, todo))
    elapsed = max(clock() - started, 1e-9)
    return {"described": sum(done), "failed": len(done) - sum(done), "seconds": elapsed,
            "products_per_second": len(todo) / elapsed if todo else 0.0}
