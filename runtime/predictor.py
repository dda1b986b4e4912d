"""The predictor: load a merged Loom artifact once and answer attribute questions about an image.

Every attribute of a product is a question about the same picture. `Blip2ForConditionalGeneration.generate`
re-runs the vision tower, the Q-Former and the projection for every question; here the image is encoded
once and the K questions are decoded together in one batched `language_model.generate`. The token ids are
the same as those of the per-question path (tests/runtime/test_predictor.py proves it), at a fraction of the cost.
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from runtime.decoding import Decoder, resolve_mode, row_bucket
from runtime.images import draft_side_for
from loom.abstention import ModelAnswer, check_known_attributes, state_answers, withheld_reason
from loom.artifact import read_calibration, read_manifest
from loom.calibration import Calibration
from loom.schema import ANSWER_SEPARATOR, AttributeSchema
from runtime.devices import pick_device, pick_dtype

log = logging.getLogger("loom.serve")

DEFAULT_MAX_NEW_TOKENS = 16


class ImageTokenError(RuntimeError):
    """Input rows without exactly `num_query_tokens` image tokens: the model would silently ignore the image."""


@dataclass
class Answer:
    """One generated answer: its text, its token ids (without the decoder start) and its confidence.

    `confidence` is the mean token probability of the whole text (free prompts); `value_confidence` is the
    probability of the value given the label: the product of the probabilities of the tokens after the
    `Label:` separator, end-of-sequence included (the forced label tokens are near 1 and say nothing about
    the value). Without a separator it is the probability of the whole sequence.
    """

    text: str
    token_ids: list[int]
    confidence: float
    value_confidence: float | None = None

    @property
    def attribute_confidence(self) -> float:
        return self.confidence if self.value_confidence is None else self.value_confidence


@dataclass
class AttributeAnswers:
    """What Loom states and withholds about one image: the contract's response fields (loom.abstention)."""

    body: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # attributes, withheld, confidence, raw, unknown_values, ...
        try:
            return self.__dict__["body"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return self.body


def model_answers(schema: AttributeSchema, names: Sequence[str], answers: Sequence[Answer]) -> dict[str, ModelAnswer]:
    """Parse `Label: Value` answers to the attributes `names` (an answer naming another attribute does not parse)."""
    parsed = {}
    for name, answer in zip(names, answers, strict=True):
        value = schema.parse_answer(answer.text, expected=name)
        parsed[name] = ModelAnswer(answer.text, value[1] if value else None, answer.attribute_confidence)
    return parsed


def interpret_answers(schema: AttributeSchema, names: Sequence[str], answers: Sequence[Answer], *,
                      calibration: Calibration | None = None, **facts: Any) -> AttributeAnswers:
    """Parse the answers and decide what is stated and withheld (`facts`: see loom.abstention.state_answers)."""
    return AttributeAnswers(state_answers(schema, calibration, model_answers(schema, names, answers), **facts))


def check_image_token_setup(model, processor) -> None:
    """Raise unless the processor writes the image tokens the model reads: the same token id, and as many
    as the model has query tokens. Otherwise BLIP-2 silently ignores every image (training and serving)."""
    config = model.config
    expected = getattr(processor, "num_query_tokens", None)
    if expected != config.num_query_tokens:
        raise ImageTokenError(
            f"the processor inserts {expected} image tokens but the model expects {config.num_query_tokens}: "
            f"the image would be ignored; re-save the processor with num_query_tokens={config.num_query_tokens}")
    token = getattr(processor, "image_token", None)
    token_id = processor.tokenizer.convert_tokens_to_ids(getattr(token, "content", token)) if token else None
    if token_id != config.image_token_id:
        raise ImageTokenError(
            f"the processor's image token {token!s} has id {token_id} but the model's image_token_id is "
            f"{config.image_token_id}: the image features would never reach the language model")


@dataclass
class QuestionRows:
    """One image and its questions, preprocessed on the CPU: 1 x C x H x W pixels and K token rows."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def count(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class PreparedProduct:
    """One product ready for the model (built in the request thread): its question rows, the attribute each
    row asks (the product type first when it is asked), and the facts that decide what is stated."""

    image: Image.Image
    rows: QuestionRows | None  # None: nothing to ask
    asked: list[str]
    names: list[str]
    known: dict[str, str]
    min_precision: float | None


class Predictor:
    """A loaded model + processor + attribute schema; thread-safe.

    Preprocessing (image resizing, tokenisation) runs in the calling thread on a copy of the processor that
    no other thread uses meanwhile (`borrowed_processor`): Blip2Processor changes its tokenizer's padding
    state on every call, so a shared one raises sporadic ValueErrors under threads (FACTS.md). Only the
    model calls are serialised by a lock.
    """

    def __init__(self, model: Blip2ForConditionalGeneration, processor: Blip2Processor,
                 schema: AttributeSchema, *, info: dict[str, Any] | None = None,
                 calibration: Calibration | None = None, decoding: str = "auto"):
        self.model = model.eval()
        self.processor = processor
        self.schema = schema
        self.calibration = calibration  # None: an artifact trained before calibration; every known value is stated
        self.info = dict(info or {})
        self.device = next(model.parameters()).device
        check_image_token_setup(model, processor)
        self.num_query_tokens = model.config.num_query_tokens
        self.image_token_id = model.config.image_token_id
        self.pad_token_id = processor.tokenizer.pad_token_id or 0
        # Large JPEGs are decoded DCT-scaled to this side (images.decode_image), as training decodes them.
        self.image_draft_side = draft_side_for(processor.image_processor)
        # "eager": transformers' generate; "compiled": static caches and a compiled decoder step (decoding.py).
        self.decoder = Decoder(model.language_model, resolve_mode(decoding, self.device))
        self._lock = threading.Lock()
        self._processors: queue.SimpleQueue = queue.SimpleQueue()  # idle copies for borrowed_processor

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, decoding: str = "auto") -> "Predictor":
        """Load a Loom artifact folder (offline): on the GPU in bf16 when there is one, else on CPU in fp32."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        device = pick_device(device)
        dtype = dtype or pick_dtype(device)
        processor = Blip2Processor.from_pretrained(model_dir, local_files_only=True)
        model = Blip2ForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        model.to(device)
        info = {"name": manifest.get("name", model_dir.name), "base_model": manifest.get("base_model"),
                "device": str(device), "dtype": str(dtype).removeprefix("torch.")}
        calibration = read_calibration(model_dir, manifest)  # older manifests: refitted from their records
        return cls(model, processor, manifest["schema"], info=info, calibration=calibration, decoding=decoding)

    @property
    def decoding(self) -> str:
        """"eager" or "compiled" (decoding.py); compiled decoding turns itself off when it fails."""
        return self.decoder.mode

    # -- preprocessing: any thread, outside the model lock ------------------------------------------------

    @contextmanager
    def borrowed_processor(self) -> Iterator[Blip2Processor]:
        """A copy of the processor that no other thread uses meanwhile (its tokenizer's padding state is its
        own). Copies are made on demand and reused: as many as calls ever ran at once, not one per thread."""
        try:
            source, processor = self._processors.get_nowait()
        except queue.Empty:
            source, processor = self.processor, copy.deepcopy(self.processor)
        try:
            yield processor
        finally:
            if source is self.processor:  # a processor replaced meanwhile retires its copies
                self._processors.put((source, processor))

    def question_rows(self, image: Image.Image, questions: Sequence[str]) -> QuestionRows:
        """Pixels and token rows of one image's questions: [<image> x NQ, question, </s>, <pad>...] per row."""
        with self.borrowed_processor() as processor:
            inputs = processor(images=[image], text=list(questions), padding="longest", return_tensors="pt")
        self.check_image_tokens(inputs["input_ids"])
        return QuestionRows(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])

    def _inputs(self, images: Sequence[Image.Image], questions: Sequence[str]):
        """The processor's batch on the model's device (for benchmarks and feature checks)."""
        with self.borrowed_processor() as processor:
            inputs = processor(images=list(images), text=list(questions), padding="longest", return_tensors="pt")
        self.check_image_tokens(inputs["input_ids"])
        return inputs.to(self.device)

    def check_image_tokens(self, input_ids: torch.Tensor) -> None:
        """Raise unless every row carries exactly `num_query_tokens` image tokens."""
        counts = (input_ids == self.image_token_id).sum(dim=1)
        bad = (counts != self.num_query_tokens).nonzero().flatten().tolist()
        if bad:
            raise ImageTokenError(f"rows {bad} hold {counts[bad].tolist()} image tokens, expected "
                                  f"{self.num_query_tokens} each: the image would be silently ignored")

    # -- the model call: one vision pass, one T5 encoder pass, one generation, one copy to the host ---------

    def generate(self, image: Image.Image, questions: Sequence[str], *,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> list[Answer]:
        """Answer K questions about one image: encode the image once, decode the K answers in one batch."""
        return self.generate_many([(image, questions)], max_new_tokens=max_new_tokens, num_beams=num_beams)[0]

    def generate_many(self, requests: Sequence[tuple[Image.Image, Sequence[str]]], *,
                      max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> list[list[Answer]]:
        """Answer the questions of several images together: every image is encoded once, in one vision
        batch, and all their questions are decoded in one generation. The answers are those of `generate`
        for each image alone."""
        rows = [self.question_rows(image, list(qs)) if len(qs) else None for image, qs in requests]
        return self.answer_rows(rows, max_new_tokens=max_new_tokens, num_beams=num_beams)

    def answer_rows(self, batch: Sequence[QuestionRows | None], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                    num_beams: int = 1) -> list[list[Answer]]:
        """The answers to prepared question rows (one entry per image; None asks nothing)."""
        present = [rows for rows in batch if rows is not None and rows.count]
        if not present:
            return [[] for _ in batch]
        with self._lock:
            sequences, logprobs = self._generate_rows(present, max_new_tokens, num_beams)
        answers = iter(self._answers(sequences, logprobs))
        return [[next(answers) for _ in range(rows.count)] if rows is not None else [] for rows in batch]

    @torch.inference_mode()
    def _generate_rows(self, present: Sequence[QuestionRows], max_new_tokens: int, num_beams: int):
        """Token ids and log-probabilities of every row, copied to the host together (one device sync)."""
        width = max(rows.input_ids.shape[1] for rows in present)
        input_ids = torch.cat([_pad_right(rows.input_ids, width, self.pad_token_id) for rows in present])
        mask = torch.cat([_pad_right(rows.attention_mask, width, 0) for rows in present])
        owner = torch.cat([torch.full((rows.count,), i) for i, rows in enumerate(present)])
        pixel_values = torch.cat([rows.pixel_values for rows in present])
        model = self.model
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        features = model.get_image_features(
            pixel_values=pixel_values.to(self.device, model.dtype)).pooler_output
        embeds = model.get_input_embeddings()(input_ids)
        image_mask = (input_ids == self.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(image_mask, features[owner.to(self.device)].to(embeds.dtype))
        sequences, logprobs = self.decoder.generate(embeds, mask, max_new_tokens=max_new_tokens, num_beams=num_beams)
        generated = sequences[:, 1:]  # drop the decoder start token
        steps = min(generated.shape[1], logprobs.shape[1])
        # Token ids are exact in float32 (vocabularies are far below 2^24): one tensor, one copy.
        host = torch.stack([generated[:, :steps].float(), logprobs[:, :steps].float()]).cpu()
        return host[0].long().tolist(), host[1].tolist()

    def input_embeddings(self, inputs, owner: torch.Tensor) -> torch.Tensor:
        """The T5 input embeddings of the text rows, each row's image tokens replaced by the features of its
        image (row r shows image owner[r]); every image goes through the vision tower and Q-Former once."""
        model = self.model
        input_ids = inputs["input_ids"]
        features = model.get_image_features(pixel_values=inputs["pixel_values"].to(model.dtype)).pooler_output
        embeds = model.get_input_embeddings()(input_ids)
        image_mask = (input_ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(image_mask, features[owner].to(embeds.dtype))

    @torch.inference_mode()
    def generate_per_question(self, image: Image.Image, question: str, *,
                              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> Answer:
        """The reference path: the plain `model.generate` for one question (the image is encoded again)."""
        with self.borrowed_processor() as processor:
            inputs = processor(images=image, text=question, return_tensors="pt")
        self.check_image_tokens(inputs["input_ids"])
        with self._lock:
            inputs = inputs.to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      do_sample=False, output_scores=True, return_dict_in_generate=True)
            logprobs = self.model.language_model.compute_transition_scores(
                out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=True)
            generated = out.sequences[:, 1:]
            steps = min(generated.shape[1], logprobs.shape[1])
            ids, scores = generated[:, :steps].tolist(), logprobs[:, :steps].float().tolist()
        return self._answers(ids, scores)[0]

    def _answers(self, sequences: list[list[int]], logprobs: list[list[float]]) -> list[Answer]:
        """Answers from host-side token ids and log-probabilities (no device access)."""
        with self.borrowed_processor() as processor:
            return self._decode_answers(processor.tokenizer, sequences, logprobs)

    def _decode_answers(self, tokenizer, sequences: list[list[int]], logprobs: list[list[float]]) -> list[Answer]:
        pad = self.model.language_model.generation_config.pad_token_id
        separator = ANSWER_SEPARATOR.strip()
        answers = []
        for sequence, scores in zip(sequences, logprobs, strict=True):
            kept = [(t, s) for t, s in zip(sequence, scores) if pad is None or t != pad]
            ids = [t for t, _ in kept]
            token_logprobs = [s for _, s in kept]
            confidence = sum(math.exp(s) for s in token_logprobs) / len(ids) if ids else 0.0
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            # The value starts after the first token that carries the separator (its own piece in T5's
            # SentencePiece vocabulary, the end of "Colour:" in the tiny base's word-level one).
            pieces = tokenizer.convert_ids_to_tokens(ids)
            start = next((i + 1 for i, piece in enumerate(pieces) if separator in piece), 0)
            value_confidence = math.exp(math.fsum(token_logprobs[start:])) if ids else 0.0
            answers.append(Answer(text=text, token_ids=ids, confidence=min(max(confidence, 0.0), 1.0),
                                  value_confidence=min(max(value_confidence, 0.0), 1.0)))
        return answers

    # -- what the server asks -----------------------------------------------------------------------------

    def prepare(self, image: Image.Image, attributes: Iterable[str] | None = None,
                facts: Mapping[str, Any] | None = None) -> PreparedProduct:
        """What to ask about one product, preprocessed (any thread). Without a product type, the type
        question is asked together with every requested attribute: one encode per product; applicability
        is applied to the answers afterwards (`finish`). KeyError for unknown attribute names."""
        schema, type_name = self.schema, self.schema.type_attribute
        facts = dict(facts or {})
        names = list(attributes) if attributes is not None else schema.names
        unknown = schema.unknown(names)
        if unknown:
            raise KeyError(f"unknown attributes {unknown}; known: {schema.names}")
        known = check_known_attributes(schema, facts.get("known_attributes"))
        given_type = facts.get("product_type") or (known.get(type_name) if type_name else None)
        if given_type is not None and type_name is not None:
            known[type_name] = self.product_type(given_type)
        product_type = known.get(type_name) if type_name else None
        needs_type = bool(type_name) and product_type is None and any(
            n == type_name or not schema.applies_to_every_type(n) for n in names)
        asked = ([type_name] if needs_type else []) + [
            n for n in names if n != type_name and schema.applies(n, product_type)]
        rows = self.question_rows(image, [schema.question(n) for n in asked]) if asked else None
        return PreparedProduct(image, rows, asked, names, known, facts.get("min_precision"))

    def finish(self, product: PreparedProduct, answers: Sequence[Answer]) -> AttributeAnswers:
        """What is stated and withheld, from the answers to `product.asked` (see `prepare`)."""
        schema, type_name = self.schema, self.schema.type_attribute
        parsed = model_answers(schema, product.asked, answers)
        product_type = product.known.get(type_name) if type_name else None
        answer = parsed.get(type_name) if type_name else None
        if product_type is None and answer is not None and withheld_reason(
                schema, self.calibration, type_name, answer, product.min_precision) is None:
            product_type = answer.value
        not_applicable = [n for n in product.names if n != type_name and not schema.applies(n, product_type)]
        for name in not_applicable:
            parsed.pop(name, None)  # asked with the type question, before the type was known
        if type_name in parsed and type_name not in product.names:
            del parsed[type_name]  # asked only to know which attributes apply
        return AttributeAnswers(state_answers(schema, self.calibration, parsed, not_applicable=not_applicable,
                                              min_precision=product.min_precision, known=product.known))

    def answer_attributes(self, image: Image.Image, attributes: Iterable[str] | None = None,
                          facts: Mapping[str, Any] | None = None, **params: Any) -> AttributeAnswers:
        """Ask every attribute in `attributes` (default: all of the manifest) about one image."""
        return self.answer_attributes_many([(image, attributes, facts)], **params)[0]

    def answer_attributes_many(self, items: Sequence[PreparedProduct | tuple], **params: Any) -> list[AttributeAnswers]:
        """`answer_attributes` for several products in one model call (one vision batch, one T5 encoder
        pass, one generation). An item is a `PreparedProduct` or `(image, attributes[, facts])`; facts:
        `product_type`, `known_attributes`, `min_precision` (loom.abstention)."""
        products = [item if isinstance(item, PreparedProduct) else self.prepare(*item) for item in items]
        answers = self.answer_rows([p.rows for p in products], **params)
        return [self.finish(product, answered) for product, answered in zip(products, answers, strict=True)]

    def product_type(self, text: str) -> str:
        """The schema's product type a request names ("t-shirt" -> "Tshirts"); ValueError for one it lacks."""
        if not self.schema.product_types:
            return text  # an artifact without applicability: any type is taken as given
        matched = self.schema.match_product_type(text)
        if matched is None:
            raise ValueError(f"unknown product_type {text!r}; this model knows: {', '.join(self.schema.product_types)}")
        return matched

    def answer_prompt(self, image: Image.Image, prompt: str, **params: Any) -> Answer:
        """Answer one free question (the reference notebook's request)."""
        return self.generate(image, [prompt], **params)[0]

    def warm_up(self, max_products: int = 1) -> None:
        """Run small generations so that the first real request pays for no lazy initialisation; with
        compiled decoding, compile every padded shape up to `max_products` products of every question,
        after checking the compiled answers against eager ones once."""
        image = Image.new("RGB", (64, 64), (128, 128, 128))
        questions = [self.schema.question(n) for n in self.schema.names]
        if self.decoding == "compiled":
            probe = self.question_rows(image, questions)
            with self._lock, torch.inference_mode():
                inputs = {"input_ids": probe.input_ids.to(self.device),
                          "pixel_values": probe.pixel_values.to(self.device)}
                owner = torch.zeros(probe.count, dtype=torch.long, device=self.device)
                embeds = self.input_embeddings(inputs, owner)
                self.decoder.verify(embeds, probe.attention_mask.to(self.device), DEFAULT_MAX_NEW_TOKENS)
            shapes, rows = [], row_bucket(1)
            while rows <= row_bucket(max_products * len(questions)):  # every padded row count a call can have
                shapes.append(rows)
                rows = row_bucket(rows + 1)
            for rows in shapes:
                if self.decoding != "compiled":
                    break
                cycled = [questions[i % len(questions)] for i in range(rows)]
                self.generate(image, cycled, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
            log.info("decoding: %s%s", self.decoding,
                     f" ({self.decoder.failure})" if self.decoder.failure else f", {len(shapes)} shapes compiled")
        self.generate(image, questions, max_new_tokens=2)

    @property
    def model_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.info.items() if v is not None}


def _pad_right(rows: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if rows.shape[1] == width:
        return rows
    return torch.cat([rows, rows.new_full((rows.shape[0], width - rows.shape[1]), value)], dim=1)
