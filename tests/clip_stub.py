"""A stand-in for runtime.embedder.ClipEmbedder: 4-d zero vectors, enough for the CLIP server's request paths
in-process (parsing, JSON Lines, errors) without a model."""

from __future__ import annotations

import numpy as np


class StubEmbedder:
    model_info = {"name": "stub-clip"}
    dimension = 4

    def embed_images(self, images):
        return np.zeros((len(images), 4), dtype=np.float32)

    def embed_texts(self, texts):  # the tests that use it never reach a text embedding
        raise AssertionError(f"embedded {texts!r}")
