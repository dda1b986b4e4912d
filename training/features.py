"""Each product photo through the vision tower and Q-Former once, not once per question.

A product has one question per attribute, and `Blip2ForConditionalGeneration.forward` runs the image
through the vision tower (ViT-g: a quarter of BLIP-2's weights, 257 tokens per image) and the Q-Former
again for every question row. With LoRA on the language model only, that image side is frozen: its output
(the query features, projected to the language model's width) is a fixed function of the image. So the
features of each product are computed once, with the frozen image side in eval mode (no Q-Former dropout)
and without autograd, kept for the run, and scattered into the image-token positions of every question row
of a batch; the language model then runs on those embeddings. The loss is the one `forward` computes.

When a LoRA target lies in the image side (it is not frozen), the features of the distinct products of a
batch are computed once per step, with gradients, and nothing is cached.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

from training.data import PixelCache


def blip2(model):
    """The Blip2ForConditionalGeneration inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def image_side(model) -> list[torch.nn.Parameter]:
    """The parameters of the vision tower, query tokens, Q-Former and projection."""
    inner = blip2(model)
    params = [inner.query_tokens]
    for part in (inner.vision_model, inner.qformer, inner.language_projection):
        params += list(part.parameters())
    return params


@contextmanager
def eval_mode(*modules: torch.nn.Module):
    """Modules in eval mode for the block (no dropout), their previous mode restored after it."""
    before = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, before):
            m.train(mode)


class ImageFeatures:
    """The query features of product photos (batch x num_query_tokens x language width), each image once."""

    def __init__(self, model, pixels: PixelCache, *, device: torch.device, dtype: torch.dtype, cache: bool = True):
        self.model = model
        self.pixels = pixels
        self.device = device
        self.dtype = dtype
        self.frozen = not any(p.requires_grad for p in image_side(model))
        self.cache = cache and self.frozen
        self._features: dict[str, torch.Tensor] = {}
        self.encoded = 0  # images run through the vision tower so far (the benchmark and tests read it)

    def _encode(self, product_ids: list[str]) -> torch.Tensor:
        inner = blip2(self.model)
        pixel_values = self.pixels.batch(product_ids).to(self.device, self.dtype)
        self.encoded += len(product_ids)
        if not self.frozen:
            return inner.get_image_features(pixel_values=pixel_values).pooler_output
        with torch.no_grad(), eval_mode(inner.vision_model, inner.qformer, inner.language_projection):
            return inner.get_image_features(pixel_values=pixel_values).pooler_output.detach()

    def prefetch(self, product_ids: Sequence[str]) -> None:
        """Start decoding the photos whose features are not cached yet (those of the next step)."""
        self.pixels.prefetch([pid for pid in product_ids if pid not in self._features])

    def __call__(self, product_ids: Sequence[str]) -> torch.Tensor:
        """Features for each id (ids may repeat: a product's questions share its features)."""
        distinct = list(dict.fromkeys(product_ids))
        missing = [pid for pid in distinct if pid not in self._features]
        fresh = dict(zip(missing, self._encode(missing))) if missing else {}
        if self.cache:
            # Kept where the step runs; a GPU holds them easily (flan-t5-xl: 32 x 2048 bf16 = 128 kB a product).
            self._features.update(fresh)
        found = {**self._features, **fresh} if self.cache else fresh
        index = {pid: i for i, pid in enumerate(distinct)}
        stacked = torch.stack([found[pid] for pid in distinct])
        return stacked[torch.tensor([index[pid] for pid in product_ids], device=stacked.device)]


def loss_with_features(model, batch: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """The language-model loss of a batch whose image-token positions hold `features` (row r: features[r]);
    the same computation as `Blip2ForConditionalGeneration.forward(pixel_values=...)` after its image side."""
    inner = blip2(model)
    input_ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(input_ids)
    image_mask = (input_ids == inner.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(image_mask, features.to(embeds.device, embeds.dtype))
    return model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                labels=batch["labels"], return_dict=True).loss


def loss_per_row_images(model, batch: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """The plain path: `forward` with one image per question row (the image side runs for every row)."""
    return model(**batch, pixel_values=pixel_values).loss
