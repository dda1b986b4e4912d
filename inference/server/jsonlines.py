"""JSON Lines requests (SageMaker Batch Transform, asynchronous inference): one result line per product line.

Valid products go to the model queue `batch_products` (MAX_BATCH_PRODUCTS) at a time; the queue answers
them in one batched call, with other requests' products when there is room (model_queue.py). A line that
cannot be answered gets its error on its own line, with its id: a bad line (JSON, image, attribute names)
before any generation; a product on which the model itself fails, by answering the rest of its batch again
one by one, so that only the failing product gets an error line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from inference.server.model_queue import Admission
from inference.server.request_parsing import RequestError, image_draft_side, load_json, parse_facts, parse_product
from loom.errors import StatusError
from loom.image_header import ImageError

log = logging.getLogger("loom.serve")

# (line index, product id, image, attribute names or None)
Product = tuple[int, Any, Any, "list[str] | None", "dict[str, Any]"]  # (line, id, image, names, facts)


def answer_jsonlines(body: bytes, predictor: Any, admission: Admission, *, batch_products: int,
                     max_image_pixels: int) -> str:
    """The JSON Lines answer to a JSON Lines body: one line per non-blank input line, in order."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise RequestError(400, "the JSON Lines body holds no products: one {\"id\", \"image\"} object per line")
    results: list[dict[str, Any] | None] = [None] * len(lines)
    batch: list[Product] = []
    batch_params: dict[str, int] = {}
    for index, line in enumerate(lines):
        product_id = None
        try:
            item = load_json(line, f"line {index + 1}")
            product_id = item.get("id") if isinstance(item, dict) else None
            image, names, params, _ = parse_product(item, predictor.schema.names, max_image_pixels,
                                                    allow_prompt=False, draft_side=image_draft_side(predictor))
            facts = parse_facts(predictor, item)
        except (RequestError, ImageError) as exc:
            results[index] = {"id": product_id, "error": f"line {index + 1}: {exc}"}
            continue
        if batch and params != batch_params:  # products in one generation share its parameters
            answer_batch(batch, batch_params, predictor, admission, results)
            batch = []
        batch_params = params
        batch.append((index, product_id, image, names, facts))
        if len(batch) >= batch_products:
            answer_batch(batch, batch_params, predictor, admission, results)
            batch = []
    if batch:
        answer_batch(batch, batch_params, predictor, admission, results)
    return "".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results)


def product_item(predictor: Any, image: Any, names: list[str] | None, facts: dict[str, Any]) -> Any:
    """The item `predictor.answer_attributes_many` takes for one product, preprocessed in the calling
    thread when the predictor can (`prepare`), so that the model thread only runs the model."""
    prepare = getattr(predictor, "prepare", None)
    return prepare(image, names, facts) if prepare is not None else (image, names, facts)


def answer_batch(batch: list[Product], params: dict[str, int], predictor: Any, admission: Admission,
                 results: list[dict[str, Any] | None]) -> None:
    """Answer `batch` in one generation into `results`; on a model failure, product by product.

    The request's deadline (StatusError 504 from `admission.run`) is not a product's failure: it ends the
    whole request.
    """
    try:
        items = [product_item(predictor, image, names, facts) for _, _, image, names, facts in batch]
        answers = admission.run_batched(predictor.answer_attributes_many, items, **params)
    except StatusError:
        raise  # the admission's deadline
    except Exception as exc:
        if len(batch) > 1:
            log.warning("a batch of %d products failed (%r); answering them one by one", len(batch), exc)
            for product in batch:
                answer_batch([product], params, predictor, admission, results)
            return
        index, product_id, *_ = batch[0]
        log.exception("the model failed on line %d (id %r)", index + 1, product_id)
        results[index] = {"id": product_id, "error": f"line {index + 1}: the model failed on this product "
                                                     f"({type(exc).__name__}); the other products were answered"}
        return
    for (index, product_id, *_), answer in zip(batch, answers, strict=True):
        results[index] = {"id": product_id, **answer.to_dict()}
