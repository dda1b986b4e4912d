"""The CLIP embedder: load a CLIP artifact once and turn texts and images into L2-normalised vectors.

One code path for the endpoint (`{"task": "embed"}`), the index build and the evaluation, so a catalog's
vectors and a shopper's query vector always come from the same preprocessing. Works for the tiny stand-in
and for real checkpoints alike: the tokenizer and image processor are whatever the artifact saved.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from loom.artifact import read_clip_manifest
from runtime.devices import pick_device

# Files whose bytes define the embeddings: the checksum an index bundle records to refuse a wrong model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def model_checksum(model_dir: str | Path) -> str:
    """sha256 over the artifact's weight files (name and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class ClipEmbedder:
    """A loaded CLIP artifact: `embed_texts`, `embed_images` -> float32 (n x dimension), rows of norm 1."""

    kind = "clip"

    def __init__(self, model: CLIPModel, tokenizer, image_processor, manifest: dict, model_dir: Path,
                 device: torch.device):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.manifest, self.model_dir, self.device = manifest, model_dir, device
        self.dimension = int(manifest["embedding_dimension"])
        self.prompt_templates: list[str] = list(manifest["prompt_templates"])
        self.checksum = model_checksum(model_dir)
        # CLIP's learned temperature: logits = logit_scale * cosine (100 for the released checkpoints).
        self.logit_scale = float(model.logit_scale.detach().exp())
        self._lock = threading.Lock()  # one forward pass at a time; tokenizers are not thread-safe (FACTS.md)

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> "ClipEmbedder":
        model_dir = Path(model_dir)
        manifest = read_clip_manifest(model_dir)
        target = pick_device(device)
        model = CLIPModel.from_pretrained(model_dir).to(target).eval()
        if model.config.projection_dim != manifest["embedding_dimension"]:
            raise ValueError(f"{model_dir}: the manifest says {manifest['embedding_dimension']}-d embeddings, "
                             f"the model projects to {model.config.projection_dim}")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        image_processor = AutoImageProcessor.from_pretrained(model_dir)
        return cls(model, tokenizer, image_processor, manifest, model_dir, target)

    @property
    def model_id(self) -> str:
        return str(self.manifest["base_model"])

    @property
    def model_info(self) -> dict:
        return {"kind": "clip", "base_model": self.model_id, "dimension": self.dimension,
                "checksum": self.checksum}

    def query_text(self, text: str) -> str:
        """A shopper's query wrapped in the artifact's first prompt template."""
        return self.prompt_templates[0].format(text.strip())

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], *, templated: bool = True) -> np.ndarray:
        """Embed texts (wrapped in the prompt template unless `templated` is False)."""
        prompts = [self.query_text(t) if templated else t for t in texts]
        limit = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        with self._lock:
            batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            features = self.model.get_text_features(input_ids=batch["input_ids"].to(self.device),
                                                    attention_mask=batch["attention_mask"].to(self.device))
        return _normalised(_pooled(features))

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB images."""
        with self._lock:
            pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
            features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return _normalised(_pooled(features))

    def warm_up(self) -> None:
        self.embed_texts(["warm up"])
        self.embed_images([Image.new("RGB", (32, 32), (128, 128, 128))])


def _pooled(features) -> torch.Tensor:
    # transformers 5 returns a BaseModelOutputWithPooling from get_*_features: the embedding is pooler_output.
    return features.pooler_output if hasattr(features, "pooler_output") else features


def _normalised(features: torch.Tensor) -> np.ndarray:
    vectors = features.float().cpu().numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))
