"""Decode untrusted image bytes into an RGB picture, or fail with a message the caller can act on.

The server receives whatever a client sends. Every image goes through `loom.image_header` first (the same
header check as the Lambda's and the catalog reader's, with its one pixel limit, its limit on progressive
JPEG scans, and the GIF, BMP and WebP headers); then Pillow decodes (in full, or a large JPEG DCT-scaled:
below). Pillow is told nothing about the bytes in advance: the format is checked against a short allow-list,
the pixel count is checked from the header before any pixel is decoded (decompression bombs), truncated
files stay errors (`ImageFile.LOAD_TRUNCATED_IMAGES` is left False), only the first frame of an animation
is read, and every mode (CMYK, palette, alpha, greyscale, 16-bit) becomes RGB.

With `draft_side`, a JPEG is decoded already scaled down by its DCT (Pillow's `Image.draft`: 1/2, 1/4 or 1/8)
to the smallest size still at least `draft_side` on both sides; the processor's own resize then does the final
downscale. `draft_side_for(image_processor)` gives twice the model's input side. Training (training/data.py)
and serving pass the same side, so their pixels stay equal; an 1800x2400 JPEG decodes and preprocesses 6-11x
faster (scripts/bench_decode.py, docs/inference.md). Other formats are decoded in full and then reduced
(Pillow's `Image.reduce`, a box average as the DCT scale is) by the largest whole factor that keeps both
sides at least `draft_side`: what a request keeps in memory per image is then a few MB whatever it sent.

`DecodePool` is the server's: at most `IMAGE_DECODE_THREADS` decodes run at once in a worker, and a request
waits for its decode only until its deadline (docs/endpoint-contract.md, "Image limits").
"""

from __future__ import annotations

import concurrent.futures
import io
import warnings
from typing import Any

from PIL import Image, ImageFile, ImageOps

from loom.image_header import ALL_FORMATS, MAX_PIXELS, ImageError, inspect_image

DEFAULT_MAX_IMAGE_PIXELS = MAX_PIXELS  # the one limit of loom.image_header, also the Lambda's and the catalog's
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

DRAFT_FACTOR = 2  # the JPEG is drafted to at least twice the model's input side; the processor resizes the rest

DEFAULT_DECODE_THREADS = 2  # images decoding at once in one worker (IMAGE_DECODE_THREADS)
_POLL_S = 0.1  # how often a waiting request looks at its deadline (a stop can shorten it)

__all__ = ["ALLOWED_FORMATS", "DEFAULT_MAX_IMAGE_PIXELS", "DecodePool", "ImageError", "decode_image",
           "draft_side_for"]


def draft_side_for(image_processor) -> int | None:
    """Twice the input side of an image processor (its `size`: height/width or shortest edge), the
    `draft_side` for `decode_image`; None when the processor states no size (then JPEGs decode in full)."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    sides = [get(key) for key in ("height", "width", "shortest_edge")]
    sides = [side for side in sides if isinstance(side, int) and side > 0]
    return DRAFT_FACTOR * max(sides) if sides else None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P":  # through RGBA only when it has a transparent colour (a palette PNG bomb costs less)
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Product shots with transparency are shown on white; black (a plain convert) would change colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, *,
                 draft_side: int | None = None) -> Image.Image:
    """Decode image bytes into a fully loaded RGB image; raise ImageError on anything unusable.

    `draft_side`: a JPEG larger than twice this on both sides is decoded DCT-scaled, at least this on both sides;
    any other image that large is reduced to the same bound after decoding.
    """
    if not data:
        raise ImageError("the image is empty: send the bytes of a JPEG or PNG file")
    try:  # the stdlib header check first: format, size, truncation, progressive scans
        inspect_image(data, max_pixels=max_pixels, formats=ALL_FORMATS)
    except ImageError as exc:
        raise ImageError(f"the image cannot be used: {exc}") from None
    # Pillow's own bomb check uses a module-wide limit; ours is per call, so the header check below decides.
    # Assert Pillow keeps its default refusal of truncated files (a partial upload must not be answered).
    assert not ImageFile.LOAD_TRUNCATED_IMAGES, "truncated images must stay errors"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageError(f"the image has an invalid size {width}x{height}")
            if width * height > max_pixels:
                raise ImageError(f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                                 f"{max_pixels}: resize it (product photos need well under 4 megapixels)")
            # An animated GIF/WebP/PNG opens at its first frame, the product; `n_frames` is not asked for
            # (it walks every frame's header).
            if draft_side and image.format == "JPEG":
                # Pillow keeps both sides >= the request; square, so the EXIF rotation below cannot undercut it.
                image.draft(image.mode, (draft_side, draft_side))
            image.load()
            image = ImageOps.exif_transpose(image) or image
            image = _to_rgb(image)
            factor = min(image.size) // draft_side if draft_side else 1
            return image.reduce(factor) if factor >= 2 else image
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image is too large to decode safely ({exc}); resize it") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"the bytes are not a supported image ({', '.join(ALLOWED_FORMATS)}); "
                         f"first bytes: {data[:8]!r}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        # Pillow reports truncated and corrupt files through several exception types.
        raise ImageError(f"the image could not be decoded ({exc}); it may be truncated or corrupt: "
                         f"send the complete file") from None


class DecodePool:
    """Image decoding for one worker: at most `threads` decodes at once, each waited for until the request's
    deadline.

    A decode's memory is bounded by the pixel limit; the pool bounds how many run at once, so the worker's
    decoding memory is `threads` times that. A request whose deadline passes first is answered at once (the
    StatusError its admission gives: 504, or 503 when the server stops); a decode that has not started is
    cancelled, one that runs ends on its own (its work is bounded by `loom.image_header`'s limits).
    """

    def __init__(self, threads: int = DEFAULT_DECODE_THREADS):
        if threads < 1:
            raise ValueError("a decode pool needs at least one thread")
        self.threads = threads
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="loom-decode")

    def decode(self, data: bytes, max_pixels: int, *, draft_side: int | None, admission: Any) -> Image.Image:
        """`decode_image(data, max_pixels, draft_side=...)` on the pool; `admission` (model_queue.Admission)
        gives the time left (`time_left()`) and the error past it (`expired()`)."""
        if admission.time_left() <= 0:
            raise admission.expired()
        future = self._executor.submit(decode_image, data, max_pixels, draft_side=draft_side)
        while True:
            left = admission.time_left()
            if left <= 0:
                future.cancel()
                raise admission.expired()
            try:
                return future.result(timeout=min(left, _POLL_S))
            except concurrent.futures.TimeoutError:
                continue
