"""The endpoint's wire format (loom/openapi.json) as validators, images good and bad for request bodies,
a recording stand-in predictor, and small clients for the CLIP server: shared by the server, API and
operator tests."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from pathlib import Path

from jsonschema import Draft202012Validator
from PIL import Image

from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema
from runtime.predictor import Answer, interpret_answers
from training.search.search_eval import shopper_photo

OPENAPI = json.loads((Path(__file__).resolve().parents[1] / "loom" / "openapi.json").read_text())


def check_contract(body: dict, schema_name: str) -> None:
    """Validate a response body against a schema of inference/openapi.json (raises on any mismatch)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": OPENAPI["components"]}
    Draft202012Validator(schema).validate(body)


def image_bytes(mode: str = "RGB", fmt: str = "PNG", size=(40, 50), colour=None) -> bytes:
    image = Image.new(mode, size, colour if colour is not None else (0 if mode in ("1", "L", "P", "I;16") else None))
    if mode == "P":
        image.putpalette([200, 30, 30] * 256)
        image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (with only a tiny compressed body)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


RGB_PNG = image_bytes()


BAD_IMAGES = {
    "not an image": b"hello, this is text",
    "truncated png": image_bytes(size=(200, 200), colour=(1, 2, 3))[:150],
    "truncated jpeg": image_bytes(fmt="JPEG", size=(300, 300), colour=(9, 90, 200))[:400],
    "over the pixel limit": png_claiming(3000, 3000),
    "decompression bomb": png_claiming(30000, 30000),
}


ODD_MODES = {
    "cmyk jpeg": image_bytes("CMYK", "JPEG", colour=(0, 255, 255, 0)),
    "palette with transparency": image_bytes("P", "PNG"),
    "rgba": image_bytes("RGBA", "PNG", colour=(255, 0, 0, 0)),
    "greyscale alpha": image_bytes("LA", "PNG", colour=(10, 255)),
    "16-bit greyscale": image_bytes("I;16", "PNG"),
    "greyscale jpeg": image_bytes("L", "JPEG", colour=80),
}


class RecordingPredictor:
    """Answers every attribute with its first known value (or an unparsable text) and records its inputs."""

    def __init__(self):
        self.schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
        self.schema.count("baseColour", "Red")
        self.calls: list[tuple[str, Image.Image, object, dict]] = []
        self.batches: list[int] = []  # products per batched generation

    def answer_attributes(self, image, attributes=None, facts=None, **params):
        names = list(attributes) if attributes is not None else self.schema.names
        self.calls.append(("attributes", image, names, params))
        texts = {"baseColour": "Colour: Red", "Fit": "Fit: Baggy", "Collar": "no idea"}
        answers = [Answer(texts.get(n, f"{self.schema.attributes[n].label}: Plain"), [1], 0.5) for n in names]
        return interpret_answers(self.schema, names, answers, known=(facts or {}).get("known_attributes"))

    def answer_attributes_many(self, items, **params):
        self.batches.append(len(items))
        return [self.answer_attributes(image, names, facts, **params) for image, names, facts in items]

    def answer_prompt(self, image, prompt, **params):
        self.calls.append(("prompt", image, prompt, params))
        return Answer("Colour: Red", [1], 0.75)

    @property
    def model_info(self):
        return {"name": "fake", "base_model": "none"}


INVOCATIONS = OPENAPI["paths"]["/invocations"]["post"]


def contract(schema: dict) -> Draft202012Validator:
    """A validator for one schema of the /invocations operation (its $refs resolved in loom/openapi.json)."""
    return Draft202012Validator({**schema, "components": OPENAPI["components"]})


JSON_REQUEST = contract(INVOCATIONS["requestBody"]["content"]["application/json"]["schema"])


LINE_REQUEST = contract(INVOCATIONS["requestBody"]["content"]["application/jsonlines"]["x-line-schema"])


JSON_ANSWER = contract(INVOCATIONS["responses"]["200"]["content"]["application/json"]["schema"])


LINE_ANSWER = contract(INVOCATIONS["responses"]["200"]["content"]["application/jsonlines"]["x-line-schema"])


CLIP_REQUEST = contract({"oneOf": [{"$ref": "#/components/schemas/ClipEmbedRequest"},
                                   {"$ref": "#/components/schemas/ClipSearchRequest"}]})


def post(server, body, content_type="application/json"):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    status, headers, raw = server.request("POST", "/invocations", data, {"Content-Type": content_type})
    return status, headers, raw


def photo_b64(tiny_clip, product_id, seed=0) -> str:
    with Image.open(tiny_clip.catalog_dir / "images" / f"{product_id}.jpg") as image:
        photo = shopper_photo(image.convert("RGB"), random.Random(seed))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def products(tiny_clip):
    return [json.loads(line) for line in (tiny_clip.index_dir / "products.jsonl").read_text().splitlines()]


TINY_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()


