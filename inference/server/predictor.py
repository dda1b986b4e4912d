"""The predictor: load a merged Loom artifact once and answer attribute questions about an image.

Every attribute of a product is a question about the same picture. `Blip2ForConditionalGeneration.generate`
re-runs the vision tower, the Q-Former and the projection for every question; here the image is encoded
once and the K questions are decoded together in one batched `language_model.generate`. The token ids are
the same as those of the per-question path (tests/test_predictor.py proves it), at a fraction of the cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from loom.artifact import read_manifest
from loom.schema import AttributeSchema

DEFAULT_MAX_NEW_TOKENS = 16


class ImageTokenError(RuntimeError):
    """Input rows without exactly `num_query_tokens` image tokens: the model would silently ignore the image."""


@dataclass
class Answer:
    """One generated answer: its text, its token ids (without the decoder start) and its confidence."""

    text: str
    token_ids: list[int]
    confidence: float


@dataclass
class AttributeAnswers:
    """The parsed answers to the attribute questions about one image (the contract's response fields)."""

    attributes: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    unknown_values: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": self.attributes, "confidence": self.confidence, "raw": self.raw,
                "unknown_values": self.unknown_values}


def interpret_answers(schema: AttributeSchema, names: Sequence[str], answers: Sequence[Answer]) -> AttributeAnswers:
    """Parse `Label: Value` answers into attributes; keep unparsable text in `raw`; flag unknown values."""
    result = AttributeAnswers()
    for name, answer in zip(names, answers, strict=True):
        result.confidence[name] = round(answer.confidence, 4)
        parsed = schema.parse_answer(answer.text, expected=name)
        if parsed is None:
            result.raw[name] = answer.text
            continue
        value = parsed[1]
        result.attributes[name] = value
        if not schema.is_known_value(name, value):
            result.unknown_values.append(name)
    return result


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


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # Flan-T5 overflows in fp16; bf16 where the GPU has it, fp32 on CPU (bf16 matmuls are slow there).
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.float32


class Predictor:
    """A loaded model + processor + attribute schema; thread-safe (preprocessing and generation are
    serialised by one lock: Blip2Processor changes its shared tokenizer's padding state on every call)."""

    def __init__(self, model: Blip2ForConditionalGeneration, processor: Blip2Processor,
                 schema: AttributeSchema, *, info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.processor = processor
        self.schema = schema
        self.info = dict(info or {})
        self.device = next(model.parameters()).device
        check_image_token_setup(model, processor)
        self.num_query_tokens = model.config.num_query_tokens
        self.image_token_id = model.config.image_token_id
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
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        processor = Blip2Processor.from_pretrained(model_dir, local_files_only=True)
        model = Blip2ForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        model.to(device)
        info = {"name": manifest.get("name", model_dir.name), "base_model": manifest.get("base_model"),
                "device": str(device), "dtype": str(dtype).removeprefix("torch.")}
        return cls(model, processor, manifest["schema"], info=info)

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
        answers = []
        for sequence, logprobs in zip(out.sequences, scores):
            generated = sequence[1:]  # drop the decoder start token
            steps = min(len(generated), len(logprobs))
            keep = generated[:steps] != pad if pad is not None else torch.ones(steps, dtype=torch.bool)
            ids = generated[:steps][keep].tolist()
            probs = logprobs[:steps][keep].float().exp()
            confidence = float(probs.mean()) if len(probs) else 0.0
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            answers.append(Answer(text=text, token_ids=ids, confidence=min(max(confidence, 0.0), 1.0)))
        return answers

    # -- what the server asks -----------------------------------------------------------------------------

    def answer_attributes(self, image: Image.Image, attributes: Iterable[str] | None = None,
                          **params: Any) -> AttributeAnswers:
        """Ask every attribute in `attributes` (default: all of the manifest) about one image."""
        return self.answer_attributes_many([(image, attributes)], **params)[0]

    def answer_attributes_many(self, items: Sequence[tuple[Image.Image, Iterable[str] | None]],
                               **params: Any) -> list[AttributeAnswers]:
        """`answer_attributes` for several images in one batched generation (see `generate_many`)."""
        asked = []
        for image, attributes in items:
            names = list(attributes) if attributes is not None else self.schema.names
            unknown = self.schema.unknown(names)
            if unknown:
                raise KeyError(f"unknown attributes {unknown}; known: {self.schema.names}")
            asked.append((image, names))
        answers = self.generate_many([(image, [self.schema.question(n) for n in names]) for image, names in asked],
                                     **params)
        return [interpret_answers(self.schema, names, a) for (_, names), a in zip(asked, answers, strict=True)]

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
