"""loom.image_header's bounds on a decode's work: progressive JPEG scans, and the GIF, BMP and WebP headers.

The rules and their sources (libjpeg-turbo's LJT-01-003 advice to abort after a number of scans, its
`djpeg -maxscans`, Pillow growing a GIF to its first frame) are in loom/image_header.py's docstring.
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from hostile_images import bmp_header, flat_image, gif_screen, progressive_jpeg, webp_canvas
from loom.image_header import ALL_FORMATS, MAX_JPEG_SCANS, MAX_PIXELS, ImageError, inspect_image


def test_standard_progressive_jpegs_pass_and_repeated_scans_are_refused():
    assert inspect_image(flat_image("JPEG", 64, 48)).width == 64  # baseline: one scan
    assert inspect_image(progressive_jpeg(64, 1)).width == 64  # libjpeg's standard progression: 10 scans
    assert inspect_image(progressive_jpeg(64, MAX_JPEG_SCANS - 9)).width == 64  # exactly at the limit
    with pytest.raises(ImageError, match="progressive scans"):
        inspect_image(progressive_jpeg(64, MAX_JPEG_SCANS - 8))
    with pytest.raises(ImageError, match="progressive scans"):
        inspect_image(progressive_jpeg(2048, 1000))  # the bomb: 53 KB, seconds of decoding


def test_scans_after_the_end_of_image_do_not_count():
    # Phones append previews and videos after the JPEG's EOI (motion photos, MPF): the decoder never reads them.
    data = progressive_jpeg(64, 1) + progressive_jpeg(64, MAX_JPEG_SCANS)
    assert inspect_image(data).width == 64


def test_counting_scans_is_fast_on_entropy_data_full_of_stuffed_bytes():
    head = progressive_jpeg(64, 1)
    last = head.rfind(b"\xff\xda")
    data = head[:last + 20] + b"\xff\x00" * 5_000_000 + b"\xff\xd9"  # 10 MB of FF 00: no marker in it
    started = time.perf_counter()
    inspect_image(data)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("fmt, save", [("GIF", {}), ("BMP", {}), ("WEBP", {}), ("WEBP", {"lossless": True})])
def test_gif_bmp_and_webp_sizes_agree_with_pillow(fmt, save):
    data = flat_image(fmt, 37, 23, **save)
    info = inspect_image(data, formats=ALL_FORMATS)
    assert (info.width, info.height) == Image.open(io.BytesIO(data)).size == (37, 23)
    with pytest.raises(ImageError, match="neither a JPEG nor a PNG"):
        inspect_image(data)  # the Lambda's default: JPEG and PNG only


def test_animated_webp_and_gif_give_their_canvas():
    frames = [Image.new("RGB", (37, 23), (n * 60, 9, 9)) for n in range(3)]
    for fmt in ("WEBP", "GIF"):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
        info = inspect_image(out.getvalue(), formats=ALL_FORMATS)
        assert (info.width, info.height) == Image.open(io.BytesIO(out.getvalue())).size == (37, 23)


@pytest.mark.parametrize("name, data, size", [
    ("35-byte GIF screen", gif_screen(6324, 6324), (6324, 6324)),
    ("GIF frame past its screen", gif_screen(1, 1, frame=(6000, 6000)), (6000, 6000)),
    ("BMP header", bmp_header(30000, 30000), None),
    ("WebP canvas", webp_canvas(8000, 8000), None),  # no image data: Pillow refuses to open it at all
])
def test_small_files_declaring_huge_images_are_refused(name, data, size):
    if size is not None:  # Pillow would allocate this many pixels
        assert Image.open(io.BytesIO(data)).size == size
        assert size[0] * size[1] > MAX_PIXELS
    with pytest.raises(ImageError, match="pixels"):
        inspect_image(data, formats=ALL_FORMATS)
