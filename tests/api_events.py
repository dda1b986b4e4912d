"""API Gateway HTTP API v2 events for the Lambda handler, built from the real samples in fixtures/apigw-v2
(Powertools for AWS Lambda's test events, MIT-0), and small valid images for their bodies."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

from inference.api import handler as gateway

# Real HTTP API v2 sample events (Powertools for AWS Lambda's test events, MIT-0).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apigw-v2"


CONTEXT = SimpleNamespace(function_name="loom-api", memory_limit_in_mb=512, aws_request_id="lambda-req-1",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:loom-api")  # fmt: skip


def png(width=3, height=2) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # Pixel rows only for small images: the header check never decodes them, and a huge one must stay cheap.
    rows = b"".join(b"\x00" + b"\x80\x10\x10" * width for _ in range(height)) if width * height < 10_000 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg(width=16, height=8) -> bytes:
    from PIL import Image  # tests only: the Lambda itself never imports Pillow

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


def event(path="/describe", method="POST", body=None, content_type="application/json", b64=False, query=None,
          fixture="apiGatewayProxyV2Event.json"):  # fmt: skip
    data = copy.deepcopy(json.loads((FIXTURES / fixture).read_text()))
    data.update(routeKey="$default", rawPath=path, body=body, isBase64Encoded=b64,
                headers={"content-type": content_type} if content_type else {},
                queryStringParameters=query, rawQueryString="")  # fmt: skip
    if body is None:
        data.pop("body")
    data["requestContext"]["http"].update(method=method, path=path)
    data["requestContext"]["requestId"] = "apigw-req-1"
    return data


def json_event(image: bytes, path="/describe", **fields):
    return event(path, body=json.dumps({"image": base64.b64encode(image).decode(), **fields}))


def call(evt):
    response = gateway.handler(evt, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


