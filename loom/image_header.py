"""Check that bytes are a whole JPEG or PNG of a sane size, without Pillow.

The API Lambda must reject bad uploads before it pays for an endpoint call, and it must stay small
(no Pillow in the package). Reading the headers is enough for that: the format from the magic bytes,
the width and height from the JPEG frame header or the PNG IHDR chunk, and a truncation check from the
end-of-image marker. The inference server decodes the pixels and has the last word.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"

# Past this the server treats an image as a decompression bomb; rejecting it here saves the call.
MAX_PIXELS = 40_000_000
MAX_SIDE = 20_000

# JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC): they carry the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class ImageError(ValueError):
    """Bytes that are not a usable JPEG or PNG; the message says what is wrong."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" or "png"
    width: int
    height: int
    size: int  # bytes

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"


def inspect_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> ImageInfo:
    """The format and size of a JPEG or PNG; raises ImageError for anything else, truncated or absurd."""
    if not data:
        raise ImageError("the image is empty")
    if data.startswith(PNG_SIGNATURE):
        width, height = _png_size(data)
        fmt = "png"
    elif data.startswith(JPEG_SOI):
        width, height = _jpeg_size(data)
        fmt = "jpeg"
    else:
        raise ImageError("the image is neither a JPEG nor a PNG (unknown magic bytes)")
    if width < 1 or height < 1:
        raise ImageError(f"the {fmt} header gives an empty image ({width}x{height})")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageError(
            f"the image is {width}x{height} pixels; the limit is {max_side} pixels a side and "
            f"{max_pixels} pixels in all: scale it down"
        )
    return ImageInfo(fmt, width, height, len(data))


def _png_size(data: bytes) -> tuple[int, int]:
    # Signature (8) + IHDR chunk: length (4) type (4) data (13) crc (4) = 33 bytes.
    if len(data) < 33:
        raise ImageError("the PNG is truncated: no complete IHDR header")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ImageError("the PNG is malformed: the first chunk is not IHDR")
    ihdr = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(b"IHDR" + ihdr) != crc:
        raise ImageError("the PNG is corrupt: the IHDR checksum does not match")
    width, height = struct.unpack(">II", ihdr[:8])
    if data.rfind(b"IEND", 33) < 0:
        raise ImageError("the PNG is truncated: no IEND chunk")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise ImageError(f"the JPEG is malformed: expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker are allowed
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9 or marker == 0xDA:
            raise ImageError("the JPEG is malformed: image data before any frame header")
        if pos + 2 > n:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ImageError(f"the JPEG is malformed: segment length {length} at byte {pos}")
        if marker in _SOF_MARKERS:
            if pos + 7 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            # Entropy-coded data escapes 0xFF as FF 00, so EOI after the frame header means "complete".
            if data.rfind(JPEG_EOI, pos + length) < 0:
                raise ImageError("the JPEG is truncated: no end-of-image marker")
            return width, height
        pos += length
    raise ImageError("the JPEG is truncated: no frame header with the image size")
