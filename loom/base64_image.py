"""The one reading of a base64 image field, shared by the inference server and the API Lambda (stdlib only).

Accepted: standard base64 (RFC 4648 section 4) with or without padding-correct line breaks or spaces
(MIME-style wrapping, e.g. `base64 -w 76`), optionally behind a `data:<type>;base64,` URL prefix
(RFC 2397). Refused with one message: anything else (URL-safe alphabet, stray characters, bad padding).
"""

from __future__ import annotations

import base64
import binascii

from loom.image_header import ImageError


def decode_base64_image(data: object, field: str = "image") -> bytes:
    """The bytes of a base64 string; ImageError (a ValueError) saying what is wrong otherwise."""
    if not isinstance(data, str) or not data.strip():
        raise ImageError(f"'{field}' must be a non-empty base64 string of JPEG or PNG bytes")
    text = data.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ImageError(f"'{field}' is a data: URL without ';base64,': send data:image/jpeg;base64,<base64>")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"'{field}' is not valid base64: encode the image file's bytes with standard base64") from None
    if not raw:
        raise ImageError(f"'{field}' decodes to zero bytes")
    return raw
