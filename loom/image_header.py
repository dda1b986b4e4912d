"""Check that an image is a whole JPEG or PNG of a sane size from its headers, without Pillow.

One checker for every part of Loom: the catalog reader (files, 44,000 of them: never decoded), the API
Lambda (uploads, before it pays for an endpoint call; no Pillow in its zip) and the inference server
(before its own full Pillow decode). It reads the format from the magic bytes, the width and height
from the JPEG frame header or the PNG IHDR chunk, and checks truncation from the end-of-image marker.
`MAX_PIXELS` is the one pixel limit they share.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"

# Past this an image is treated as a decompression bomb, by the Lambda, the catalog and the server alike.
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
    return _inspect(data, None, len(data), max_pixels=max_pixels, max_side=max_side)


# A file's headers sit in its first bytes (EXIF and ICC segments are at most 64 KiB each) and its
# end marker in its last ones: reading those two windows checks a catalog image without loading it.
_HEAD_BYTES = 256 * 1024
_TAIL_BYTES = 64


def inspect_image_file(path: str | Path, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> ImageInfo:
    """`inspect_image` for a file, reading only its first and last bytes unless the headers need more."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    try:
        return _inspect(head, tail, size, max_pixels=max_pixels, max_side=max_side)
    except ImageError:
        if size <= _HEAD_BYTES:
            raise
    return inspect_image(path.read_bytes(), max_pixels=max_pixels, max_side=max_side)  # rare: huge headers


def _inspect(head: bytes, tail: bytes | None, size: int, *, max_pixels: int, max_side: int) -> ImageInfo:
    """`tail`: the file's last bytes, or None when `head` is the whole image (then everything after the
    headers counts, so an EXIF thumbnail's own end marker cannot pass for the image's)."""
    if not size:
        raise ImageError("the image is empty")
    if head.startswith(PNG_SIGNATURE):
        width, height, end = _png_size(head)
        if b"IEND" not in (head[end:] if tail is None else tail):
            raise ImageError("the PNG is truncated: no IEND chunk")
        fmt = "png"
    elif head.startswith(JPEG_SOI):
        width, height, end = _jpeg_size(head)
        # Entropy-coded data escapes 0xFF as FF 00, so EOI in the last bytes means "written to the end"
        # (some encoders pad a few bytes after it).
        if JPEG_EOI not in (head[end:] if tail is None else tail.rstrip(b"\x00")):
            raise ImageError("the JPEG is truncated: no end-of-image marker")
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
    return ImageInfo(fmt, width, height, size)


def _png_size(data: bytes) -> tuple[int, int, int]:
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
    return width, height, 33


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, offset past the frame header) from the JPEG's markers."""
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
            return width, height, pos + length
        pos += length
    raise ImageError("the JPEG is truncated: no frame header with the image size")
