"""Shared helpers for the serving tests: a tiny predictor whose answers differ by image and question, a
schema with a product-type question and applicability, and noise images."""

from __future__ import annotations

import torch
from PIL import Image

from runtime.predictor import Predictor
from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, AttributeSchema
from training import tiny_base


def typed_schema() -> AttributeSchema:
    """The demo attributes plus the product-type question; Collar applies to shirts only, Neck to T-shirts."""
    base = tiny_base.demo_schema()
    schema = AttributeSchema.from_names([PRODUCT_TYPE_ATTRIBUTE, *DEFAULT_ATTRIBUTES])
    for name in base.names:
        for value in base.attributes[name].values:
            schema.count(name, value)
    for kind in ("Shirts", "Tshirts"):
        schema.count(PRODUCT_TYPE_ATTRIBUTE, kind)
    everywhere = [n for n in DEFAULT_ATTRIBUTES if n not in ("Collar", "Neck")]
    schema.applies_to = {"Shirts": [*everywhere, "Collar"], "Tshirts": [*everywhere, "Neck"]}
    return schema


def noisy_predictor(artifact, schema: AttributeSchema | None = None, **kwargs) -> Predictor:
    """The untrained tiny artifact with large random weights, so that answers differ by image and question
    (an untrained model repeats one token whatever it sees, which would make equivalence trivially true)."""
    predictor = Predictor.load(artifact, **kwargs)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in predictor.model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                parameter.copy_(noise * 0.5)
            else:
                parameter.copy_(noise * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    if schema is not None:
        predictor.schema = schema
    return predictor


def noise_images(count: int, seed: int = 1, size: tuple[int, int] = (48, 64)) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(seed)
    return [Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=generator,
                                          dtype=torch.uint8).numpy()) for _ in range(count)]


class VisionCounter:
    """Counts the vision tower's forward calls and the images they carry, and the T5 encoder's calls."""

    def __init__(self, predictor: Predictor):
        self.calls, self.images, self.encoder_calls = 0, 0, 0
        model = predictor.model
        self._hooks = [model.vision_model.register_forward_hook(self._vision, with_kwargs=True),
                       model.language_model.encoder.register_forward_hook(self._encoder)]

    def _vision(self, module, args, kwargs, output):
        self.calls += 1
        pixel_values = args[0] if args else kwargs["pixel_values"]
        self.images += pixel_values.shape[0]

    def _encoder(self, *args):
        self.encoder_calls += 1

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
