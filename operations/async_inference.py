"""Send a catalog shard to a SageMaker asynchronous endpoint, and collect its results.

    loom async submit --endpoint NAME --bucket BUCKET --shard shard.jsonl [--receipt receipt.json]
    loom async collect --receipt receipt.json --out results.jsonl [--wait] [--max-wait-s 3600]

A shard is a JSON Lines file of products (`{"id", "image"[, "attributes"]}` per line), as
`operations.batch_records` writes them. `submit` uploads it to s3://BUCKET/async/input/ and calls
InvokeEndpointAsync (payload up to 1 GB, up to 3600 s of processing:
https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html); the receipt records where SageMaker
will write the result (OutputLocation) or the failure (FailureLocation). `collect` fetches the result:
one line per product, the same JSON Lines as Batch Transform's (docs/endpoint-contract.md). The endpoint
comes from Terraform (`async_inference = { enabled = true }`, output `async_endpoint_name`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

JSONLINES = "application/jsonlines"
MAX_ASYNC_PAYLOAD_BYTES = 1024 ** 3  # 1 GB, InvokeEndpointAsync's payload limit
MAX_INVOCATION_TIMEOUT_S = 3600
PENDING = 3  # exit status of `collect` while the result is not there yet


def shard_ids(path: Path) -> list[str]:
    """The product ids of a shard, in order; ValueError when it is not a shard of products."""
    size = path.stat().st_size
    if not 0 < size <= MAX_ASYNC_PAYLOAD_BYTES:
        raise ValueError(f"{path} is {size} bytes: an asynchronous request holds 1 byte to 1 GB")
    ids = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"{path} line {number} is not JSON") from None
            if not isinstance(record, dict) or "id" not in record or "image" not in record:
                raise ValueError(f"{path} line {number} is not a product: expected {{\"id\", \"image\"}}")
            ids.append(str(record["id"]))
    return ids


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def submit(shard: Path, *, endpoint: str, bucket: str, s3: Any, runtime: Any,
           timeout_s: int = MAX_INVOCATION_TIMEOUT_S) -> dict[str, Any]:
    """Upload the shard and invoke the endpoint asynchronously; the receipt (a dict) says where to look."""
    if not 1 <= timeout_s <= MAX_INVOCATION_TIMEOUT_S:
        raise ValueError(f"the invocation timeout must be 1..{MAX_INVOCATION_TIMEOUT_S} s, got {timeout_s}")
    ids = shard_ids(shard)
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()[:16]
    key = f"async/input/{endpoint}/{shard.stem}-{digest}.jsonl"
    s3.upload_file(str(shard), bucket, key, ExtraArgs={"ContentType": JSONLINES})
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint, InputLocation=f"s3://{bucket}/{key}", ContentType=JSONLINES, Accept=JSONLINES,
        InvocationTimeoutSeconds=timeout_s, InferenceId=f"{shard.stem}-{digest}"[:64])
    return {"endpoint": endpoint, "inference_id": response["InferenceId"], "input": f"s3://{bucket}/{key}",
            "output": response["OutputLocation"], "failure": response.get("FailureLocation"), "ids": ids,
            "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def fetch(s3: Any, uri: str | None) -> bytes | None:
    """The object at `uri`, or None while it does not exist."""
    if not uri:
        return None
    bucket, key = split_s3_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def collect(receipt: dict[str, Any], out: Path, *, s3: Any, wait_s: float = 0.0, poll_s: float = 30.0,
            clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Fetch the result of a submitted shard into `out`: {"state": "done"|"failed"|"pending", ...}."""
    deadline = clock() + wait_s
    while True:
        body = fetch(s3, receipt["output"])
        if body is not None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            got = [str(line.get("id")) for line in lines]
            if got != receipt["ids"]:
                raise ValueError(f"the result holds ids {got[:5]}... but the shard sent {receipt['ids'][:5]}...: "
                                 f"it does not answer this shard")
            out.write_bytes(body if body.endswith(b"\n") else body + b"\n")
            errors = sum(1 for line in lines if "error" in line)
            return {"state": "done", "products": len(lines), "errors": errors, "out": str(out)}
        failure = fetch(s3, receipt.get("failure"))
        if failure is not None:
            return {"state": "failed", "reason": failure.decode("utf-8", "replace")[:2000]}
        if clock() >= deadline:
            return {"state": "pending", "output": receipt["output"]}
        sleep(min(poll_s, max(0.0, deadline - clock())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom async", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("submit", help="upload a shard and invoke the asynchronous endpoint")
    send.add_argument("--endpoint", required=True, help="the asynchronous endpoint (Terraform: async_endpoint_name)")
    send.add_argument("--bucket", required=True, help="the project bucket (its async/input/ prefix)")
    send.add_argument("--shard", required=True, type=Path, help="a JSON Lines file of products")
    send.add_argument("--receipt", type=Path, default=Path("async-receipt.json"))
    send.add_argument("--timeout-s", type=int, default=MAX_INVOCATION_TIMEOUT_S)
    get = commands.add_parser("collect", help="fetch the result of a submitted shard")
    get.add_argument("--receipt", type=Path, default=Path("async-receipt.json"))
    get.add_argument("--out", type=Path, required=True)
    get.add_argument("--wait", action="store_true", help="poll until the result or a failure is there")
    get.add_argument("--max-wait-s", type=float, default=3900.0)
    get.add_argument("--poll-s", type=float, default=30.0)
    for sub in (send, get):
        sub.add_argument("--region", help="AWS Region (default: the profile's or AWS_REGION)")
        sub.add_argument("--profile", help="named AWS profile (default: the standard credential chain)")
    args = parser.parse_args(argv)
    if args.command == "collect" and not args.receipt.is_file():
        raise SystemExit(f"no receipt at {args.receipt}: `loom async submit` writes it (--receipt)")
    if args.command == "submit" and not args.shard.is_file():
        raise SystemExit(f"no shard at {args.shard}: a JSON Lines file of products")

    from loom.errors import command_error
    from operations.sagemaker_jobs import aws_client

    s3 = aws_client("s3", region=args.region, profile=args.profile)
    if args.command == "submit":
        try:
            receipt = submit(args.shard, endpoint=args.endpoint, bucket=args.bucket, s3=s3,
                             runtime=aws_client("sagemaker-runtime", region=args.region, profile=args.profile),
                             timeout_s=args.timeout_s)
        except ValueError as exc:
            return command_error(str(exc))
        args.receipt.write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
        print(f"submitted {len(receipt['ids'])} products as {receipt['inference_id']}; result: {receipt['output']}; "
              f"receipt: {args.receipt}")
        return 0
    receipt = json.loads(args.receipt.read_text(encoding="utf-8"))
    result = collect(receipt, args.out, s3=s3, wait_s=args.max_wait_s if args.wait else 0.0, poll_s=args.poll_s)
    print(json.dumps(result))
    return {"done": 0, "failed": 1}.get(result["state"], PENDING)


if __name__ == "__main__":
    sys.exit(main())
