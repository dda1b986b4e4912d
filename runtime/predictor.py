"""The predictor: load a merged Loom artifact once and answer attribute questions about an image.

Every attribute of a product is a question about the same picture. `Blip2ForConditionalGeneration.generate`
re-runs the vision tower, the Q-Former and the projection for every question; here the image is encoded
once and the K questions are decoded together in one batched `language_model.generate`. The token ids are
the same as those of the per-question path (tests/runtime/test_predictor.py proves it), at a fraction of the cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from runtime.images import draft_side_for
from loom.abstention import ModelAnswer, check_known_attributes, state_answers, withheld_reason
from loom.artifact import read_calibration, read_manifest
from loom.calibration import Calibration
from loom.schema import ANSWER_SEPARATOR, AttributeSchema
from runtime.devices import pick_device, pick_dtype

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


class Predictor:
    """A loaded model + processor + attribute schema; thread-safe (preprocessing and generation are
    serialised by one lock: Blip2Processor changes its shared tokenizer's padding state on every call)."""

    def __init__(self, model: Blip2ForConditionalGeneration, processor: Blip2Processor,
                 schema: AttributeSchema, *, info: dict[str, Any] | None = None,
                 calibration: Calibration | None = None):
        self.model = model.eval()
        self.processor = processor
        self.schema = schema
        self.calibration = calibration  # None: an artifact trained before calibration; every known value is stated
        self.info = dict(info or {})
        self.device = next(model.parameters()).device
        check_image_token_setup(model, processor)
        self.num_query_tokens = model.config.num_query_tokens
        self.image_token_id = model.config.image_token_id
        # Large JPEGs are decoded DCT-scaled to this side (images.decode_image), as training decodes them.
        self.image_draft_side = draft_side_for(processor.image_processor)
        # None: transformers' dynamic cache. "static": a fixed-size decoder cache, which transformers compiles
        # (CUDA graphs) on GPUs; same answers, fewer kernel launches per step (scripts/bench.py --static-cache).
        self.cache_implementation: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> "Predictor":
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
        return cls(model, processor, manifest["schema"], info=info, calibration=calibration)

    # -- the encode-once path ---------------------------------------------------------------------------

    def _inputs(self, images: Sequence[Image.Image], questions: Sequence[str]):
        # The processor lays out every row as [<image> x NQ, question, </s>, <pad>...]: exactly the
        # per-question layout plus right padding, which the T5 encoder's attention mask hides.
        inputs = self.processor(images=list(images), text=list(questions), padding="longest", return_tensors="pt")
        self.check_image_tokens(inputs["input_ids"])
        return inputs.to(self.device)

    def check_image_tokens(self, input_ids: torch.Tensor) -> None:
        """Raise unless every row carries exactly `num_query_tokens` image tokens."""
        counts = (input_ids == self.image_token_id).sum(dim=1)
        bad = (counts != self.num_query_tokens).nonzero().flatten().tolist()
        if bad:
            raise ImageTokenError(f"rows {bad} hold {counts[bad].tolist()} image tokens, expected "
                                  f"{self.num_query_tokens} each: the image would be silently ignored")

    def generate(self, image: Image.Image, questions: Sequence[str], *,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> list[Answer]:
        """Answer K questions about one image: encode the image once, decode the K answers in one batch."""
        return self.generate_many([(image, questions)], max_new_tokens=max_new_tokens, num_beams=num_beams)[0]

    @torch.inference_mode()
    def generate_many(self, requests: Sequence[tuple[Image.Image, Sequence[str]]], *,
                      max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1) -> list[list[Answer]]:
        """Answer the questions of several images together (Batch Transform's MultiRecord batches): every
        image is encoded once, in one vision batch, and all their questions are decoded in one generation.
        The answers are those of `generate` for each image alone."""
        requests = [(image, list(questions)) for image, questions in requests]
        questions = [q for _, qs in requests for q in qs]
        if not questions:
            return [[] for _ in requests]
        asked = [(image, qs) for image, qs in requests if qs]
        # Row r of the text batch belongs to image owner[r].
        owner = torch.tensor([i for i, (_, qs) in enumerate(asked) for _ in qs], device=self.device)
        with self._lock:  # the processor too: each call resets the shared fast tokenizer's padding state
            inputs = self._inputs([image for image, _ in asked], questions)
            embeds = self.input_embeddings(inputs, owner)
            cache = {"cache_implementation": self.cache_implementation} if self.cache_implementation else {}
            out = self.model.language_model.generate(
                inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_new_tokens=max_new_tokens,
                num_beams=num_beams, do_sample=False, output_scores=True, return_dict_in_generate=True, **cache)
        answers = iter(self._answers(out))
        return [[next(answers) for _ in qs] for _, qs in requests]

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
        with self._lock:  # the processor too: each call resets the shared fast tokenizer's padding state
            inputs = self.processor(images=image, text=question, return_tensors="pt")
            self.check_image_tokens(inputs["input_ids"])
            inputs = inputs.to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      do_sample=False, output_scores=True, return_dict_in_generate=True)
        return self._answers(out)[0]

    def _answers(self, out) -> list[Answer]:
        lm = self.model.language_model
        scores = lm.compute_transition_scores(out.sequences, out.scores, getattr(out, "beam_indices", None),
                                              normalize_logits=True)
        pad = lm.generation_config.pad_token_id
        tokenizer = self.processor.tokenizer
        separator = ANSWER_SEPARATOR.strip()
        answers = []
        for sequence, logprobs in zip(out.sequences, scores):
            generated = sequence[1:]  # drop the decoder start token
            steps = min(len(generated), len(logprobs))
            keep = generated[:steps] != pad if pad is not None else torch.ones(steps, dtype=torch.bool)
            ids = generated[:steps][keep].tolist()
            token_logprobs = logprobs[:steps][keep].float()
            probs = token_logprobs.exp()
            confidence = float(probs.mean()) if len(probs) else 0.0
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            # The value starts after the first token that carries the separator (its own piece in T5's
            # SentencePiece vocabulary, the end of "Colour:" in the tiny base's word-level one).
            pieces = tokenizer.convert_ids_to_tokens(ids)
            start = next((i + 1 for i, piece in enumerate(pieces) if separator in piece), 0)
            value_confidence = float(token_logprobs[start:].sum().exp()) if len(ids) else 0.0
            answers.append(Answer(text=text, token_ids=ids, confidence=min(max(confidence, 0.0), 1.0),
                                  value_confidence=min(max(value_confidence, 0.0), 1.0)))
        return answers

    # -- what the server asks -----------------------------------------------------------------------------

    def answer_attributes(self, image: Image.Image, attributes: Iterable[str] | None = None,
                          facts: Mapping[str, Any] | None = None, **params: Any) -> AttributeAnswers:
        """Ask every attribute in `attributes` (default: all of the manifest) about one image."""
        return self.answer_attributes_many([(image, attributes, facts)], **params)[0]

    def answer_attributes_many(self, items: Sequence[tuple[Image.Image, Iterable[str] | None]]
                               | Sequence[tuple[Image.Image, Iterable[str] | None, Mapping[str, Any]]],
                               **params: Any) -> list[AttributeAnswers]:
        """`answer_attributes` for several images in batched generations (see `generate_many`).

        An item may carry a third element, the product's facts: `product_type`, `known_attributes`,
        `min_precision` (loom.abstention). Without a product type, the product-type question is asked
        first (one batch), then the attributes that apply to the stated type (a second batch).
        """
        schema, type_name = self.schema, self.schema.type_attribute
        products = []
        for image, attributes, *rest in items:
            facts = dict(rest[0]) if rest and rest[0] else {}
            names = list(attributes) if attributes is not None else schema.names
            unknown = schema.unknown(names)
            if unknown:
                raise KeyError(f"unknown attributes {unknown}; known: {schema.names}")
            known = check_known_attributes(schema, facts.get("known_attributes"))
            given_type = facts.get("product_type") or (known.get(type_name) if type_name else None)
            if given_type is not None and type_name is not None:
                known[type_name] = self.product_type(given_type)
            products.append({"image": image, "names": names, "known": known, "answers": {},
                             "min_precision": facts.get("min_precision")})
        # 1. The product type, where it is not given and applicability depends on it.
        to_type = [p for p in products if type_name and type_name not in p["known"]
                  and any(n == type_name or not schema.applies_to_every_type(n) for n in p["names"])]
        typed = self.generate_many([(p["image"], [schema.question(type_name)]) for p in to_type], **params)
        for product, answers in zip(to_type, typed, strict=True):
            product["answers"] = model_answers(schema, [type_name], answers)
        # 2. The attributes that apply to the product's type (the merchant's, or the model's when stated).
        for product in products:
            product_type = product["known"].get(type_name) if type_name else None
            answer = product["answers"].get(type_name)
            if product_type is None and answer is not None and withheld_reason(
                    schema, self.calibration, type_name, answer, product["min_precision"]) is None:
                product_type = answer.value
            product["asked"] = [n for n in product["names"] if n != type_name and schema.applies(n, product_type)]
            product["not_applicable"] = [n for n in product["names"]
                                         if n != type_name and n not in product["asked"]]
        generated = self.generate_many([(p["image"], [schema.question(n) for n in p["asked"]]) for p in products],
                                       **params)
        results = []
        for product, answers in zip(products, generated, strict=True):
            product["answers"].update(model_answers(schema, product["asked"], answers))
            if type_name in product["answers"] and type_name not in product["names"]:
                del product["answers"][type_name]  # asked only to know which attributes apply
            results.append(AttributeAnswers(state_answers(
                schema, self.calibration, product["answers"], not_applicable=product["not_applicable"],
                min_precision=product["min_precision"], known=product["known"])))
        return results

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

    def warm_up(self) -> None:
        """Run one small generation so that the first real request does not pay for lazy initialisation."""
        self.generate(Image.new("RGB", (64, 64), (128, 128, 128)), [self.schema.question(n) for n in self.schema.names],
                      max_new_tokens=2)

    @property
    def model_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.info.items() if v is not None}
