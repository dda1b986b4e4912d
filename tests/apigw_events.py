"""API Gateway HTTP API v2 events for handler tests, built from the real sample event in
tests/fixtures/apigw-v2 (Powertools for AWS Lambda's test events, MIT-0), and a noise JPEG of a chosen size."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apigw-v2"
CONTEXT = SimpleNamespace(function_name="loom-api", memory_limit_in_mb=512, aws_request_id="lambda-req-1",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:loom-api")


def post_event(path: str, body: dict) -> dict:
    """A POST with a JSON body on `path`, as API Gateway delivers it to the Lambda."""
    data = copy.deepcopy(json.loads((FIXTURES / "apiGatewayProxyV2Event.json").read_text()))
    data.update(routeKey="$default", rawPath=path, body=json.dumps(body), isBase64Encoded=False,
                headers={"content-type": "application/json"}, queryStringParameters=None, rawQueryString="")
    data["requestContext"]["http"].update(method="POST", path=path)
    data["requestContext"]["requestId"] = "apigw-req-1"
    return data


def call(event: dict) -> tuple[int, dict]:
    from inference.api import handler

    response = handler.handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


def noise_jpeg(side: int, seed: int = 0) -> bytes:
    """A baseline JPEG of random pixels (large for its size in pixels: noise does not compress)."""
    import numpy as np
    from PIL import Image  # tests only: the Lambda never imports Pillow

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()
