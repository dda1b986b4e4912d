"""`POST /invocations` for a CLIP artifact: the body's media type picks the runtime call.

JSON Lines -> `ClipService.answer_lines`; an image body -> its embedding; JSON -> `ClipService.answer`.
The request forms are documented in runtime/clip_service.py. No Flask here: app.py makes the response.
"""

from __future__ import annotations

import json
from typing import Any

from inference.server import legacy_requests
from inference.server.request_parsing import load_json
from loom.errors import StatusError
from loom.json_limits import error_text
from loom.media_types import JSONLINES_TYPE, JSONLINES_TYPES
from runtime.clip_service import ClipService
from runtime.images import ImageError, decode_image
from runtime.zero_shot import compose


def answer_clip_request(service: ClipService, content_type: str, body: bytes,
                        max_image_pixels: int, admission: Any = None) -> tuple[int, str, str]:
    """(status, body, media type) of one `POST /invocations` for a CLIP artifact; app.py makes the Flask
    response, so this module (and the training image that tags through ClipService) needs no Flask.
    `admission` (model_queue.Admission): its `time_left` bounds a JSON Lines request line by line."""
    try:
        if content_type in JSONLINES_TYPES:
            time_left = admission.time_left if admission is not None else None
            lines = [json.dumps(r, ensure_ascii=False)
                     for r in service.answer_lines(body, max_image_pixels, time_left)]
            return 200, "\n".join(lines) + "\n", JSONLINES_TYPE
        if content_type.startswith("image/") or content_type == "application/x-image":
            try:
                image = decode_image(body, max_image_pixels)
            except ImageError as exc:
                raise StatusError(400, str(exc)) from None
            result = service.embeddings(service.embedder.embed_images([image]))
        else:
            request = load_json(body)
            if legacy_requests.is_interrogator_request(request):  # the interrogator sample's {"inputs", ...}
                result = legacy_requests.answer_interrogator(
                    request, lambda loom_request: service.interrogate(loom_request, max_image_pixels), compose)
            else:
                result = service.answer(request, max_image_pixels)
    except StatusError as exc:
        return exc.status, json.dumps({"error": error_text(exc.message)}), "application/json"
    return 200, json.dumps(result, ensure_ascii=False), "application/json"
