"""Large JPEGs are decoded DCT-scaled (Pillow's `Image.draft`) to twice the model's input side, in serving
and in training alike, so the GPU does not wait for a full-size decode (issue 14 item 8).

Pillow's draft rule (src/PIL/JpegImagePlugin.py, `JpegImageFile.draft`): the scale is the largest of 1/8, 1/4,
1/2 with `size // requested >= scale` on both sides, so the decoded image stays at least the requested size.
https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.Image.draft
"""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from PIL import Image, ImageFilter
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from endpoint_contract import RecordingPredictor

from inference.server.app import create_app
from runtime.images import decode_image, draft_side_for
from training.synthetic import draw_shirt

PROCESSOR = BlipImageProcessorPil(size={"height": 224, "width": 224})  # BLIP-2's input side
SIDE = draft_side_for(PROCESSOR)


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _pixels(image: Image.Image) -> torch.Tensor:
    return PROCESSOR(image, return_tensors="pt").pixel_values[0]


@pytest.fixture(scope="module")
def large_shirt() -> Image.Image:
    return draw_shirt("Red", "Striped", "Long Sleeves", (1800, 2400))


def test_the_draft_side_is_twice_the_processors_input_side(untrained_artifact):
    from transformers import Blip2Processor

    assert SIDE == 448
    assert draft_side_for(BlipImageProcessorPil(size={"shortest_edge": 300})) == 600
    assert draft_side_for(object()) is None  # no size known: JPEGs decode in full
    assert draft_side_for(Blip2Processor.from_pretrained(untrained_artifact).image_processor) == 128  # 64 x 2


# Measured (Pillow 13, transformers 5.23, this machine) on the drawn 1800x2400 shirt, q90, 4:2:0 chroma:
# max |full - draft| 0.146, mean 0.0046 in normalised units (0.146 is about 10 of 255 grey levels, at the
# sharp stripe edges, where the JPEG's halved chroma is upsampled differently); blurred 3 px as a camera
# blurs: max 0.045, mean 0.0020. Asserted with a margin.
@pytest.mark.parametrize("blur,max_diff,mean_diff", [(0, 0.2, 0.007), (3, 0.07, 0.003)])
def test_a_large_jpeg_drafted_gives_nearly_the_pixels_of_the_full_decode(large_shirt, blur, max_diff, mean_diff):
    photo = large_shirt.filter(ImageFilter.GaussianBlur(blur)) if blur else large_shirt
    data = _jpeg(photo)
    full, drafted = decode_image(data), decode_image(data, draft_side=SIDE)
    assert full.size == (1800, 2400)
    assert drafted.size == (450, 600)  # 1/4: the smallest DCT scale still >= 448 on both sides
    assert drafted.mode == "RGB"
    difference = (_pixels(full) - _pixels(drafted)).abs()
    assert 0 < difference.max() < max_diff  # > 0: the draft did happen
    assert difference.mean() < mean_diff


def test_a_png_and_a_small_jpeg_decode_as_before(large_shirt):
    # A large PNG is decoded in full, then box-reduced to the JPEG's bound (at least SIDE a side): what a
    # request keeps per image stays a few MB (docs/endpoint-contract.md, "Image limits").
    png = _png(large_shirt.resize((900, 1200)))
    full = decode_image(png)
    assert decode_image(png, draft_side=SIDE).tobytes() == full.reduce(2).tobytes()
    assert decode_image(png, draft_side=SIDE).size == (450, 600)
    under = _png(large_shirt.resize((800, 1000)))  # under twice the side: kept as decoded
    assert decode_image(under, draft_side=SIDE).tobytes() == decode_image(under).tobytes()
    small = _jpeg(large_shirt.resize((600, 800)))  # under twice the side: no DCT scale applies
    drafted = decode_image(small, draft_side=SIDE)
    assert drafted.size == (600, 800) and drafted.tobytes() == decode_image(small).tobytes()


def test_an_exif_rotated_large_jpeg_is_upright_and_drafted(large_shirt):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = _jpeg(large_shirt.transpose(Image.Transpose.ROTATE_90), exif=exif)  # stored 2400x1800
    full, drafted = decode_image(data), decode_image(data, draft_side=SIDE)
    assert full.size == (1800, 2400) and drafted.size == (450, 600)  # both upright
    assert (_pixels(full) - _pixels(drafted)).abs().mean() < 0.007


def test_every_server_path_decodes_with_the_predictors_draft_side(large_shirt):
    fake = RecordingPredictor()
    fake.image_draft_side = 128  # what Predictor sets for the tiny artifact's 64-pixel processor
    client = create_app(fake, max_body_bytes=4 * 1024 * 1024).test_client()
    data = _jpeg(large_shirt.resize((600, 800)))
    encoded = base64.b64encode(data).decode("ascii")
    assert client.post("/invocations", data=data, content_type="image/jpeg").status_code == 200
    assert client.post("/invocations", data=json.dumps({"image": encoded}),
                       content_type="application/json").status_code == 200
    lines = "\n".join(json.dumps({"id": n, "image": encoded}) for n in range(2))
    assert client.post("/invocations", data=lines, content_type="application/jsonlines").status_code == 200
    sizes = [call[1].size for call in fake.calls]
    assert sizes == [(150, 200)] * 4  # 1/4: raw body, JSON, two JSON Lines products
