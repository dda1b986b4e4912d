"""Helpers for the public-contract tests of the API Lambda (on top of api_events and fixtures_api): the handler's
raw Lambda response as well as its status and body, and an attribute answer with every field of the contract."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from botocore.response import StreamingBody

from api_events import CONTEXT, event, png
from inference.api import handler as gateway

IMAGE_B64 = base64.b64encode(png()).decode()


def call(evt: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(status, JSON body, the raw Lambda response) of the real handler."""
    response = gateway.handler(evt, CONTEXT)
    return response["statusCode"], json.loads(response["body"]), response


def post(path: str, **body: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    return call(event(path, body=json.dumps(body)))


def streaming(data: Any) -> StreamingBody:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


ATTRIBUTE_ANSWER = {
    "attributes": {"baseColour": "Red", "Sleeve Length": "Long Sleeves", "Fabric": "Cotton"},
    "withheld": {"Pattern": {"value": "Striped", "confidence": 0.3, "reason": "below_threshold"},
                 "Neck": {"value": None, "confidence": None, "reason": "not_applicable"}},
    "confidence": {"baseColour": 0.95, "Sleeve Length": 0.9, "Pattern": 0.3},
    "raw": {}, "unknown_values": [], "sources": {"baseColour": "model", "Sleeve Length": "model", "Fabric": "merchant"},
    "conflicts": [], "product_type": "Shirts", "model": {"name": "loom-blip2-lora"},
}
