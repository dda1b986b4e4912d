"""VQA examples (`id,Question,Answer` CSV rows + `<id>.jpg` images) as model inputs.

Images are decoded by the inference server's own decoder (`runtime.images.decode_image`: EXIF
rotation, alpha on white, 16-bit rescaled, every mode to RGB), so training and serving see the same pixels:
a large JPEG is decoded DCT-scaled to twice the processor's input side, as the server does
(`draft_side_for`), and the processor does the final resize; nothing is pre-resized on disk.
Every batch is checked to hold exactly `num_query_tokens` image tokens per row: without them BLIP-2
silently ignores the image.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image

from runtime.images import ImageError, decode_image, draft_side_for
from loom.schema import (ANSWER_SEPARATOR, DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, SCHEMA_FILE, Attribute,
                         AttributeSchema, attribute_label)
from training.prepare import VQA_COLUMNS


class DataError(ValueError):
    """A VQA file, row or image that cannot be used."""


@dataclass(frozen=True)
class VqaExample:
    """One question about one product photo, and its expected answer (`Label: Value`)."""

    id: str
    question: str
    answer: str
    attribute: str
    value: str


def read_vqa_rows(path: str | Path) -> list[tuple[str, str, str]]:
    """The (id, question, answer) rows of a VQA CSV; DataError for a wrong header or row.

    The header is `id,Question,Answer`, matched ignoring case (the reference data set writes `Id`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no VQA file at {path}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != tuple(c.lower() for c in VQA_COLUMNS):
            raise DataError(f"{path}: header must be {','.join(VQA_COLUMNS)} (any case), got {header!r}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise DataError(f"{path}:{line}: expected 3 fields (id,Question,Answer), got {len(row)}")
            rows.append(tuple(field.strip() for field in row))
    return rows  # type: ignore[return-value]


def read_vqa_csv(path: str | Path, schema: AttributeSchema) -> list[VqaExample]:
    """The rows of a VQA CSV; DataError for a wrong header or an answer the schema cannot parse."""
    return examples_of(read_vqa_rows(path), schema, where=str(path))


def examples_of(rows: Sequence[tuple[str, str, str]], schema: AttributeSchema, where: str = "the VQA file"
                ) -> list[VqaExample]:
    """(id, question, answer) rows as examples; DataError naming the row whose answer the schema cannot parse."""
    examples = []
    for number, (pid, question, answer) in enumerate(rows, start=2):
        parsed = schema.parse_answer(answer)
        if not pid or parsed is None:
            raise DataError(f"{where}:{number}: product {pid!r}: answer {answer!r} is not "
                            f"'<Label>: <Value>' for an attribute of the schema ({', '.join(schema.names)})")
        examples.append(VqaExample(pid, question, answer, parsed[0], parsed[1]))
    return examples


def infer_schema(rows: Sequence[tuple[str, str, str]], where: str = "the VQA file") -> AttributeSchema:
    """The attribute schema a VQA file implies, for a job given no attribute_schema.json: one attribute per
    answer label (`Label: Value`), asked with the question most often paired with it; a label Loom gives a
    catalog attribute ("Colour", "Product Type") is named as that attribute. Known values are counted later."""
    questions: dict[str, Counter] = {}
    for number, (_, question, answer) in enumerate(rows, start=2):
        label, separator, value = answer.partition(ANSWER_SEPARATOR.strip())
        if not separator or not label.strip() or not value.strip():
            raise DataError(f"{where}:{number}: answer {answer!r} is not '<Label>: <Value>', so no attribute "
                            f"schema can be inferred; add {SCHEMA_FILE} to the training channel")
        questions.setdefault(label.strip(), Counter())[question] += 1
    if not questions:
        raise DataError(f"{where} holds no rows to infer an attribute schema from")
    names = {attribute_label(name): name for name in (*DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE)}
    attributes = [Attribute(names.get(label, label), counts.most_common(1)[0][0], label)
                  for label, counts in questions.items()]
    type_attribute = PRODUCT_TYPE_ATTRIBUTE if any(a.name == PRODUCT_TYPE_ATTRIBUTE for a in attributes) else None
    return AttributeSchema(attributes, type_attribute=type_attribute)


def split_by_product(examples: Sequence[VqaExample], val_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[list[VqaExample], list[VqaExample]]:
    """(train, validation) examples of one file, split by product (no photo in both), for a job given no
    validation channel. The products are shuffled with `seed`; one goes to validation only while every value
    it carries is still held by a product in train (as training.prepare.split_products does)."""
    by_product = values_by_product(examples)
    held: Counter = Counter(pair for values in by_product.values() for pair in values.items())
    order = sorted(by_product)
    random.Random(seed).shuffle(order)
    target = round(val_fraction * len(by_product))
    chosen: set[str] = set()
    for pid in order:
        if len(chosen) >= target:
            break
        pairs = list(by_product[pid].items())
        if all(held[pair] > 1 for pair in pairs):
            chosen.add(pid)
            held.subtract(pairs)
    return [e for e in examples if e.id not in chosen], [e for e in examples if e.id in chosen]


def values_by_product(examples: Sequence[VqaExample]) -> dict[str, dict[str, str]]:
    """The expected values per product, `{id: {attribute: value}}`, products in the order they first appear."""
    values: dict[str, dict[str, str]] = {}
    for example in examples:
        values.setdefault(example.id, {})[example.attribute] = example.value
    return values


def count_known_values(schema: AttributeSchema, examples: Sequence[VqaExample]) -> AttributeSchema:
    """A copy of the schema whose known values are exactly the value counts of `examples`."""
    fresh = AttributeSchema.from_dict(schema.to_dict())
    for attribute in fresh.attributes.values():
        attribute.values = {}
    for example in examples:
        fresh.count(example.attribute, example.value)
    return fresh


def image_path(images_dir: Path, product_id: str) -> Path:
    """A product's photo in the images channel."""
    return images_dir / f"{product_id}.jpg"


def read_image(images_dir: Path, product_id: str, draft_side: int | None = None) -> Image.Image:
    """A product's photo decoded exactly as the server decodes an uploaded one; DataError when unusable.

    `draft_side`: `draft_side_for(image_processor)`, the server's (`Predictor.image_draft_side`).
    """
    path = image_path(images_dir, product_id)
    try:
        return decode_image(path.read_bytes(), draft_side=draft_side)
    except (OSError, ImageError) as exc:
        raise DataError(f"product {product_id}: cannot read {path}: {exc}") from exc


class PixelCache:
    """Pixel tensors of product photos, computed by the processor once per image id.

    With `workers`, photos are decoded on a thread pool: `prefetch` starts the photos of the next step while
    the current one trains (Pillow releases the GIL while it decodes and resizes). Decoding is the server's,
    with the server's JPEG draft side for this processor, so training and serving pixels stay equal.
    """

    def __init__(self, images_dir: str | Path, image_processor, enabled: bool = True, workers: int = 0):
        self.images_dir = Path(images_dir)
        self.image_processor = image_processor
        self.draft_side = draft_side_for(image_processor)
        self.enabled = enabled
        self._cache: dict[str, torch.Tensor] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None
        self._pending: dict[str, Future] = {}

    def path(self, product_id: str) -> Path:
        return image_path(self.images_dir, product_id)

    def check(self, product_ids: Sequence[str]) -> None:
        """DataError listing (a few of) the ids whose image is missing."""
        missing = sorted({pid for pid in product_ids if not self.path(pid).is_file()})
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{len(missing)} image(s) missing from {self.images_dir}: {shown}")

    def _load(self, product_id: str) -> torch.Tensor:
        image = read_image(self.images_dir, product_id, self.draft_side)
        return self.image_processor(image, return_tensors="pt").pixel_values[0]

    def prefetch(self, product_ids: Sequence[str]) -> None:
        """Start decoding these photos in the background (no-op without workers)."""
        if self._pool is None:
            return
        for pid in dict.fromkeys(product_ids):
            if pid not in self._cache and pid not in self._pending:
                self._pending[pid] = self._pool.submit(self._load, pid)

    def __getitem__(self, product_id: str) -> torch.Tensor:
        pixels = self._cache.get(product_id)
        if pixels is None:
            pending = self._pending.pop(product_id, None)
            pixels = pending.result() if pending is not None else self._load(product_id)
            if self.enabled:
                self._cache[product_id] = pixels
        return pixels

    def batch(self, product_ids: Sequence[str]) -> torch.Tensor:
        self.prefetch(product_ids)  # the photos of one batch decode in parallel
        return torch.stack([self[pid] for pid in product_ids])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()


def encode_questions(processor, questions: Sequence[str]) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask with `num_query_tokens` image tokens in front of each question.

    The same layout as `Blip2Processor(images=..., text=...)`, without re-processing the images.
    """
    tokenizer = processor.tokenizer
    nq = processor.num_query_tokens
    if not nq:
        raise DataError("the processor has no num_query_tokens: BLIP-2 would silently ignore the images")
    text = tokenizer(list(questions), padding=True, return_tensors="pt")
    image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token.content)
    prefix = torch.full((len(questions), nq), image_token_id, dtype=text.input_ids.dtype)
    input_ids = torch.cat([prefix, text.input_ids], dim=1)
    attention_mask = torch.cat([torch.ones_like(prefix), text.attention_mask], dim=1)
    check_image_tokens(input_ids, image_token_id, nq)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def check_image_tokens(input_ids: torch.Tensor, image_token_id: int, num_query_tokens: int) -> None:
    """DataError unless every row holds exactly `num_query_tokens` image tokens."""
    counts = (input_ids == image_token_id).sum(dim=1)
    if not bool((counts == num_query_tokens).all()):
        raise DataError(f"every input row must hold exactly {num_query_tokens} image tokens; "
                        f"found {sorted(set(counts.tolist()))}: the image would be ignored or misplaced")


def encode_answers(processor, answers: Sequence[str]) -> torch.Tensor:
    """Label ids for the answers, padding replaced by -100 so that it is not learned."""
    labels = processor.tokenizer(list(answers), padding=True, return_tensors="pt").input_ids
    labels[labels == processor.tokenizer.pad_token_id] = -100
    return labels


def training_batch(examples: Sequence[VqaExample], processor) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels for a list of examples (the images come as features:
    training/features.py)."""
    batch = encode_questions(processor, [e.question for e in examples])
    batch["labels"] = encode_answers(processor, [e.answer for e in examples])
    return batch


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch; the same (seed, epoch) always gives the same order."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def micro_batches(n: int, batch_size: int, seed: int, start: int = 0) -> Iterator[list[int]]:
    """Endless stream of index batches over shuffled epochs, starting at micro-batch number `start`.

    Batches never straddle epochs (the last one of an epoch may be smaller). Resuming at `start`
    yields exactly the batches an uninterrupted run would have seen from there.
    """
    per_epoch = -(-n // batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = epoch_order(n, seed, epoch)
        for b in range(offset, per_epoch):
            yield order[b * batch_size:(b + 1) * batch_size]
        epoch, offset = epoch + 1, 0
