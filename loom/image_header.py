"""Check that an image is a whole JPEG or PNG of a sane size from its headers, without Pillow.

One checker for every part of Loom: the catalog reader (files, 44,000 of them: never decoded), the API
Lambda (uploads, before it pays for an endpoint call; no Pillow in its zip) and the inference server
(before its own full Pillow decode). It reads the format from the magic bytes, the width and height
from the JPEG frame header or the PNG IHDR chunk, and checks truncation from the end-of-image marker.
`MAX_PIXELS` is the one pixel limit they share.

The work of a decode is bounded here, before any decoder runs:

- Pixels: `MAX_PIXELS` = 4096 x 4096. The models see 224 px (CLIP) or less; the server decodes a JPEG
  DCT-scaled to at least twice that (runtime/images.py), and libjpeg's smallest DCT scale is
  1/8, so 8 x 448 = 3584 px a side is the largest JPEG the decoder can bring down almost for free. 4096
  a side admits 12 MP phone photos (4032 x 3024) and the catalog's 1800 x 2400; more pixels cost memory
  and time and give the model nothing (docs/endpoint-contract.md, "Image limits").
- Progressive JPEG scans: `MAX_JPEG_SCANS`. libjpeg decodes every scan over the whole coefficient
  buffer, so a file that repeats one tiny scan thousands of times costs minutes of CPU while staying
  small and valid (libjpeg-turbo's report "Two Issues with the JPEG Standard", LJT-01-003, cited in
  libjpeg-turbo issues #252 and #284: "there isn't really a way to work around it other than to abort
  after decoding a specific number of scans"). libjpeg-turbo offers that abort as an option only
  (`djpeg -maxscans N`, TurboJPEG's TJPARAM_SCANLIMIT; its own fuzzers and NVIDIA DALI, PR #5316, use
  500); Pillow sets no limit (measured here, Pillow 13: a 2048 x 2048 JPEG with 1,000 scans, 53 KB,
  took 5.7 s to decode). The standard progressions have 10 scans (libjpeg's `jpeg_simple_progression`,
  mozjpeg 8 to 10: mozjpeg PR #251), so 32 leaves three times that; at 4096 x 4096 a scan costs about
  25 ms here, so 32 scans bound a decode to about a second.
- GIF, BMP and WebP headers are read too (`formats`): a 35-byte GIF can declare a 6324 x 6324 screen.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"

# Past this an image is refused as a decompression bomb, by the Lambda, the catalog and the server alike.
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 20_000
MAX_JPEG_SCANS = 32  # progressive scans (SOS markers) of one JPEG: see the module docstring
MAX_JPEG_SEGMENTS = 2_000  # markers after the frame header (scans, tables, comments) walked before refusing

GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
BMP_SIGNATURE = b"BM"
JPEG_AND_PNG = ("jpeg", "png")
ALL_FORMATS = ("jpeg", "png", "gif", "bmp", "webp")
_MAX_GIF_BLOCKS = 100_000  # extension sub-blocks walked before the first GIF frame

# JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC): they carry the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class ImageError(ValueError):
    """Bytes that are not a usable image; the message says what is wrong."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg", "png", or with `formats`: "gif", "bmp", "webp"
    width: int
    height: int
    size: int  # bytes

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"


def inspect_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE,
                  formats: tuple[str, ...] = JPEG_AND_PNG, max_scans: int = MAX_JPEG_SCANS) -> ImageInfo:
    """The format and size of a JPEG or PNG (or any of `formats`, from ALL_FORMATS); raises ImageError for
    anything else, truncated, absurd, or (a JPEG) with more than `max_scans` scans."""
    return _inspect(data, None, len(data), max_pixels=max_pixels, max_side=max_side, formats=formats,
                    max_scans=max_scans)


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


def _inspect(head: bytes, tail: bytes | None, size: int, *, max_pixels: int, max_side: int,
             formats: tuple[str, ...] = JPEG_AND_PNG, max_scans: int = MAX_JPEG_SCANS) -> ImageInfo:
    """`tail`: the file's last bytes, or None when `head` is the whole image (then everything after the
    headers counts, so an EXIF thumbnail's own end marker cannot pass for the image's, and a JPEG's scans
    are counted)."""
    if not size:
        raise ImageError("the image is empty")
    other = _other_format(head, formats)
    if other is not None:
        fmt, (width, height) = other, _OTHER_SIZES[other](head)
    elif head.startswith(PNG_SIGNATURE):
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
        if tail is None:
            _check_jpeg_scans(head, end, max_scans)
        fmt = "jpeg"
    else:
        if tuple(formats) == JPEG_AND_PNG:
            raise ImageError("the image is neither a JPEG nor a PNG (unknown magic bytes)")
        names = [f.upper() for f in formats]
        listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise ImageError(f"the image is not a {listed} file (unknown magic bytes)")
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


# A marker in entropy-coded data: 0xFF followed by anything but a stuffed zero, a fill byte or a restart
# marker (ITU-T T.81 B.1.1.2, B.1.1.5). Found with the regex engine so that no Python loop runs per byte.
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\xff\xd0-\xd7])")


def _check_jpeg_scans(data: bytes, pos: int, max_scans: int) -> int:
    """The number of scans (SOS markers) before the first end-of-image marker, from `pos` (past the frame
    header); ImageError past `max_scans`, or past MAX_JPEG_SEGMENTS markers of any kind."""
    scans = segments = 0
    while True:
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            return scans
        at = found.start()
        marker = data[at + 1]
        if marker == 0xD9:  # EOI: anything after it (an appended preview or video) is not decoded
            return scans
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageError(f"the JPEG has more than {MAX_JPEG_SEGMENTS} segments: re-save it as a plain JPEG")
        if marker == 0xDA:
            scans += 1
            if scans > max_scans:
                raise ImageError(f"the JPEG has more than {max_scans} progressive scans (a standard progressive "
                                 f"JPEG has about 10; each scan costs a pass over every pixel): re-save it as a "
                                 f"baseline or standard progressive JPEG")
        if marker == 0x01 or at + 4 > len(data):  # TEM stands alone; a cut marker: the decoder refuses it
            pos = at + 2
            continue
        pos = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")  # past the segment (an SOS: its header)


def _other_format(head: bytes, formats: tuple[str, ...]) -> str | None:
    """"gif", "bmp" or "webp" when `head` starts like one of those and it is in `formats`."""
    if head.startswith(GIF_SIGNATURES):
        fmt = "gif"
    elif head.startswith(BMP_SIGNATURE):
        fmt = "bmp"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "webp"
    else:
        return None
    return fmt if fmt in formats else None


def _gif_size(data: bytes) -> tuple[int, int]:
    """The logical screen, grown to the first frame's extent (Pillow grows the image to it as well)."""
    if len(data) < 13:
        raise ImageError("the GIF is truncated: no complete screen descriptor")
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # past the global colour table
    blocks = 0
    while pos < len(data):
        kind = data[pos]
        if kind == 0x2C:  # image descriptor: left, top, width, height
            if pos + 9 > len(data):
                break
            left, top, frame_w, frame_h = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
            return max(width, left + frame_w), max(height, top + frame_h)
        if kind != 0x21:  # a trailer (0x3B) or garbage before any frame
            raise ImageError("the GIF holds no image")
        pos += 2  # introducer and label, then length-prefixed sub-blocks up to an empty one
        while pos < len(data) and data[pos]:
            blocks += 1
            if blocks > _MAX_GIF_BLOCKS:
                raise ImageError(f"the GIF has more than {_MAX_GIF_BLOCKS} extension blocks before its first image")
            pos += 1 + data[pos]
        pos += 1
    raise ImageError("the GIF is truncated: no image descriptor")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageError("the BMP is truncated: no complete header")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 1.x BITMAPCOREHEADER: 16-bit sides
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    if width < 0:
        raise ImageError(f"the BMP header gives a negative width ({width})")
    return width, abs(height)  # a negative height means rows stored top-down


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas (24-bit sides minus one)
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14-bit sides minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise ImageError("the WebP is truncated or malformed: no VP8, VP8L or VP8X header with its size")


_OTHER_SIZES = {"gif": _gif_size, "bmp": _bmp_size, "webp": _webp_size}
