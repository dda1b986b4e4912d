"""loom.image_header: the one stdlib header check the catalog reader, the Lambda and the server share."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from loom.image_header import MAX_PIXELS, ImageError, inspect_image, inspect_image_file

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(size=(40, 30), **save) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "JPEG", **save)
    return out.getvalue()


def _with_exif_thumbnail(data: bytes) -> bytes:
    """A JPEG whose APP1 segment carries a whole small JPEG (as camera EXIF thumbnails do)."""
    thumb = _jpeg((8, 8))
    payload = b"Exif\x00\x00" + thumb
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]


@pytest.mark.parametrize("name, data", [
    ("plain", _jpeg()),
    ("progressive", _jpeg(progressive=True)),
    ("exif thumbnail", _with_exif_thumbnail(_jpeg())),
    ("trailing padding", _jpeg() + b"\x00\x00\x00"),
])
def test_bytes_and_files_agree_on_whole_images(tmp_path, name, data):
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    assert inspect_image(data) == inspect_image_file(path)
    assert (inspect_image(data).width, inspect_image(data).height) == (40, 30)


def test_a_truncated_jpeg_with_an_exif_thumbnail_is_refused_both_ways(tmp_path):
    # The thumbnail's own end marker sits in the headers: it must not pass for the image's.
    data = _with_exif_thumbnail(_jpeg((64, 64), quality=95))
    cut = data[: len(data) - 40]
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    for check in (lambda: inspect_image(cut), lambda: inspect_image_file(path)):
        with pytest.raises(ImageError, match="truncated"):
            check()


def test_headers_past_the_first_window_are_still_read(tmp_path):
    # 300 KiB of APP segments before the frame header: the file check falls back to reading it all.
    filler = b"".join(b"\xff\xe2" + (65533).to_bytes(2, "big") + b"\x00" * 65531 for _ in range(5))
    data = _jpeg()[:2] + filler + _jpeg()[2:]
    path = tmp_path / "big-headers.jpg"
    path.write_bytes(data)
    assert inspect_image_file(path).width == 40


def test_the_pixel_limit_is_one_constant_shared_by_every_checker(tmp_path):
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, "PNG")  # 48 MP > MAX_PIXELS, a few KiB compressed
    assert 8000 * 6000 > MAX_PIXELS
    with pytest.raises(ImageError, match="limit"):
        inspect_image(huge.getvalue())
    # The catalog reader and the server take their limit from here, not from a copy of the number.
    for module in ("training/catalog.py", "runtime/images.py", "inference/api/service.py"):
        source = (ROOT / module).read_text(encoding="utf-8")
        assert "40_000_000" not in source and "40000000" not in source, module
