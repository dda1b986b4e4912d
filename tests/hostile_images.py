"""Hostile images, made in memory: small on the wire, built to cost a decoder time or memory.

Shared by tests/server/test_hostile_server.py and scripts/bench_image_memory.py (not a test module).
"""

from __future__ import annotations

import io
import struct

from PIL import Image


def progressive_jpeg(side: int, repeats: int = 1) -> bytes:
    """A flat progressive JPEG of side x side whose last scan is repeated `repeats` times (libjpeg decodes
    each repeat over the whole coefficient buffer: libjpeg-turbo's LJT-01-003). It has 9 + `repeats` scans."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 30, 200)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:last] + data[last:-2] * repeats + b"\xff\xd9"


def flat_image(fmt: str, width: int, height: int, mode: str = "RGB", **save) -> bytes:
    """A one-colour image in `mode`, saved as `fmt`: a few KB for millions of pixels."""
    out = io.BytesIO()
    colour = {"RGB": (200, 30, 30), "RGBA": (200, 30, 30, 128), "P": 3, "L": 90, "I;16": 40000}[mode]
    Image.new(mode, (width, height), colour).save(out, fmt, **save)
    return out.getvalue()


def palette_png(width: int, height: int) -> bytes:
    return flat_image("PNG", width, height, "P")


def gif_screen(width: int, height: int, frame: tuple[int, int] = (1, 1)) -> bytes:
    """A 35-byte GIF: one `frame`-sized frame on a logical screen of width x height (Pillow allocates the
    larger of the two)."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00\x3b")


def bmp_header(width: int, height: int) -> bytes:
    """A BMP file header and BITMAPINFOHEADER that declare width x height, without pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def webp_canvas(width: int, height: int) -> bytes:
    """A WebP whose VP8X chunk declares a width x height canvas, without image data."""
    vp8x = (b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
            + (height - 1).to_bytes(3, "little"))
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def small_png(colour=(200, 20, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 50), colour).save(out, "PNG")
    return out.getvalue()
