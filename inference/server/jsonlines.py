"""JSON Lines requests (SageMaker Batch Transform, asynchronous inference): one result line per product line.

Valid products go to the model queue `batch_products` (MAX_BATCH_PRODUCTS) at a time; the queue answers
them in one batched call, with other requests' products when there is room (model_queue.py). A line that
cannot be answered gets its error on its own line, with its id, and costs the others nothing:

- a bad line (JSON, fields, facts, then image: the facts are checked before the image is decoded) gets its
  error before any generation, whatever exception its reading raised;
- a product on which the model itself fails: the rest of its batch is answered again one by one, so that
  only the failing product gets an error line;
- the request's deadline (REQUEST_TIMEOUT_S) is checked before every line and every generation, and so is
  a stop of the worker (SIGTERM): past it, nothing more is decoded or generated, the lines answered so far
  keep their answers and every other line gets an error line that says to send it again. When no product
  was answered yet, the request as a whole gets the 504 (503 when stopping), so that it is retried as one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from runtime.images import DecodePool
from inference.server.model_queue import Admission
from inference.server.request_parsing import (RequestError, image_draft_side, load_json, parse_facts,
                                              parse_product_fields)
from loom.errors import StatusError
from loom.json_limits import error_text
from loom.image_header import ImageError

log = logging.getLogger("loom.serve")

# (line index, product id, image, attribute names or None, facts)
Product = tuple[int, Any, Any, "list[str] | None", "dict[str, Any]"]


def answer_jsonlines(body: bytes, predictor: Any, admission: Admission, *, batch_products: int,
                     max_image_pixels: int, decoder: DecodePool | None = None) -> str:
    """The JSON Lines answer to a JSON Lines body: one line per non-blank input line, in order.

    `decoder`: the worker's DecodePool (images then decode within the deadline, a few at a time); None
    decodes on the request thread.
    """
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise RequestError(400, "the JSON Lines body holds no products: one {\"id\", \"image\"} object per line")
    results: list[dict[str, Any] | None] = [None] * len(lines)
    ids: dict[int, Any] = {}
    batch: list[Product] = []
    batch_params: dict[str, int] = {}
    draft_side = image_draft_side(predictor)
    stopped: StatusError | None = None
    for index, line in enumerate(lines):
        if admission.time_left() <= 0:
            stopped = admission.expired()
            break
        try:
            product = read_line(index, line, predictor, admission, ids, max_image_pixels, draft_side, decoder)
        except RequestError as exc:
            results[index] = {"id": ids.get(index), "error": f"line {index + 1}: {error_text(exc.message)}"}
            continue
        except StatusError as exc:  # the deadline, or the worker stops, while the image decodes
            stopped = exc
            break
        product, params = product
        if batch and params != batch_params:  # products in one generation share its parameters
            stopped = answer_batch(batch, batch_params, predictor, admission, results)
            batch = []
            if stopped:
                break
        batch_params = params
        batch.append(product)
        if len(batch) >= batch_products:
            stopped = answer_batch(batch, batch_params, predictor, admission, results)
            batch = []
            if stopped:
                break
    if batch and not stopped:
        stopped = answer_batch(batch, batch_params, predictor, admission, results)
    if stopped:
        if not any(result is not None and "error" not in result for result in results):
            raise stopped  # nothing answered: the whole request is a 504 (503: stopping), retried as one
        unanswered(lines, results, ids, stopped)
    return "".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results)


def product_item(predictor: Any, image: Any, names: list[str] | None, facts: dict[str, Any]) -> Any:
    """The item `predictor.answer_attributes_many` takes for one product, preprocessed in the calling
    thread when the predictor can (`prepare`), so that the model thread only runs the model."""
    prepare = getattr(predictor, "prepare", None)
    return prepare(image, names, facts) if prepare is not None else (image, names, facts)


def read_line(index: int, line: bytes, predictor: Any, admission: Admission, ids: dict[int, Any],
              max_image_pixels: int, draft_side: int | None, decoder: DecodePool | None):
    """(product, generation parameters) of one line; RequestError(400) for anything wrong with it, the
    image's last: its decode is paid for only by a line whose every other field is right."""
    try:
        item = load_json(line, "the line")
        if isinstance(item, dict):
            ids[index] = item.get("id")
        data, names, params, _ = parse_product_fields(item, predictor.schema.names, allow_prompt=False)
        facts = parse_facts(predictor, item)
        if decoder is None:
            from runtime.images import decode_image

            image = decode_image(data, max_image_pixels, draft_side=draft_side)
        else:
            image = decoder.decode(data, max_image_pixels, draft_side=draft_side, admission=admission)
    except ImageError as exc:
        raise RequestError(400, str(exc)) from None
    except StatusError:
        raise
    except Exception as exc:  # a line must never cost the other lines their answers
        log.exception("line %d could not be read", index + 1)
        raise RequestError(400, f"the line could not be read ({type(exc).__name__}); check its fields") from None
    return (index, ids.get(index), image, names, facts), params


def answer_batch(batch: list[Product], params: dict[str, int], predictor: Any, admission: Admission,
                 results: list[dict[str, Any] | None]) -> StatusError | None:
    """Answer `batch` in one generation into `results`; on a model failure, product by product.

    The request's deadline (StatusError from `admission.run`: 504, or 503 when the worker stops) is not a
    product's failure: it is returned, the batch's lines stay unanswered, and the caller stops.
    """
    try:
        items = [product_item(predictor, image, names, facts) for _, _, image, names, facts in batch]
        answers = admission.run_batched(predictor.answer_attributes_many, items, **params)
    except StatusError as exc:
        return exc
    except Exception as exc:
        if len(batch) > 1:
            log.warning("a batch of %d products failed (%r); answering them one by one", len(batch), exc)
            for product in batch:
                stopped = answer_batch([product], params, predictor, admission, results)
                if stopped:
                    return stopped
            return None
        index, product_id, *_ = batch[0]
        log.exception("the model failed on line %d (id %r)", index + 1, product_id)
        results[index] = {"id": product_id, "error": f"line {index + 1}: the model failed on this product "
                                                     f"({type(exc).__name__}); the other products were answered"}
        return None
    for (index, product_id, *_), answer in zip(batch, answers, strict=True):
        results[index] = {"id": product_id, **answer.to_dict()}
    return None


def unanswered(lines: list[bytes], results: list[dict[str, Any] | None], ids: dict[int, Any],
               stopped: StatusError) -> None:
    """An error line for every line without a result: the request's time is up (`stopped` says why)."""
    for index, result in enumerate(results):
        if result is None:
            product_id = ids[index] if index in ids else line_id(lines[index])
            results[index] = {"id": product_id, "error": f"line {index + 1}: not answered: {stopped.message}"}


def line_id(line: bytes) -> Any:
    """The `id` of a line not read yet, or None when it has none that can be read."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    product_id = item.get("id") if isinstance(item, dict) else None
    return product_id if isinstance(product_id, (str, int, float)) and not isinstance(product_id, bool) else None
