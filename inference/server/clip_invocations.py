"""`POST /invocations` for a CLIP artifact: the body's media type picks the runtime call.

JSON Lines -> `ClipService.answer_lines`; an image body -> its embedding; JSON -> `ClipService.answer`.
The request forms are documented in runtime/clip_service.py. No Flask here: app.py makes the response.
"""

from __future__ import annotations

import json

from inference.server.request_parsing import JSONLINES_TYPES
from loom.errors import StatusError
from runtime.clip_service import ClipService
from runtime.images import ImageError, decode_image


def answer_clip_request(service: ClipService, content_type: str, body: bytes,
                        max_image_pixels: int) -> tuple[int, str, str]:
    """(status, body, media type) of one `POST /invocations` for a CLIP artifact; app.py makes the Flask
    response, so this module (and the training image that tags through ClipService) needs no Flask."""
    try:
        if content_type in JSONLINES_TYPES:
            lines = [json.dumps(r, ensure_ascii=False) for r in service.answer_lines(body, max_image_pixels)]
            return 200, "\n".join(lines) + "\n", "application/jsonlines"
        if content_type.startswith("image/") or content_type == "application/x-image":
            try:
                image = decode_image(body, max_image_pixels)
            except ImageError as exc:
                raise StatusError(400, str(exc)) from None
            result = service.embeddings(service.embedder.embed_images([image]))
        else:
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise StatusError(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
            result = service.answer(request, max_image_pixels)
    except StatusError as exc:
        return exc.status, json.dumps(exc.body()), "application/json"
    return 200, json.dumps(result, ensure_ascii=False), "application/json"
