"""Fixture helpers for the API Lambda tests: real API Gateway v2 events, the handler called in-process, stubbed
SageMaker and Bedrock clients (botocore Stubber validates every request against the real service model)."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from botocore.response import StreamingBody

from inference.api import handler as gateway

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apigw-v2"
CONTEXT = SimpleNamespace(function_name="loom-api", memory_limit_in_mb=512, aws_request_id="lambda-req-1",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:loom-api")


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x10\x10" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


IMAGE_B64 = base64.b64encode(png()).decode()


def event(path: str = "/describe", body: str | None = None, content_type: str | None = "application/json",
          b64: bool = False, query: dict[str, str] | None = None, method: str = "POST",
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(json.loads((FIXTURES / "apiGatewayProxyV2Event.json").read_text()))
    data.update(routeKey="$default", rawPath=path, body=body, isBase64Encoded=b64, rawQueryString="",
                headers={**({"content-type": content_type} if content_type else {}), **(headers or {})},
                queryStringParameters=query)
    if body is None:
        data.pop("body")
    data["requestContext"]["http"].update(method=method, path=path)
    data["requestContext"]["requestId"] = "apigw-req-1"
    return data


def call(evt: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(status, JSON body, the raw Lambda response) of the real handler."""
    response = gateway.handler(evt, CONTEXT)
    return response["statusCode"], json.loads(response["body"]), response


def post(path: str, **body: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    return call(event(path, body=json.dumps(body)))


def streaming(data: Any) -> StreamingBody:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def endpoint_reply(data: Any) -> dict[str, Any]:
    return {"Body": streaming(data), "ContentType": "application/json"}


def converse_reply(text: str, stop: str = "end_turn") -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}


ATTRIBUTE_ANSWER = {
    "attributes": {"baseColour": "Red", "Sleeve Length": "Long Sleeves", "Fabric": "Cotton"},
    "withheld": {"Pattern": {"value": "Striped", "confidence": 0.3, "reason": "below_threshold"},
                 "Neck": {"value": None, "confidence": None, "reason": "not_applicable"}},
    "confidence": {"baseColour": 0.95, "Sleeve Length": 0.9, "Pattern": 0.3},
    "raw": {}, "unknown_values": [], "sources": {"baseColour": "model", "Sleeve Length": "model", "Fabric": "merchant"},
    "conflicts": [], "product_type": "Shirts", "model": {"name": "loom-blip2-lora"},
}
