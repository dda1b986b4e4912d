"""A bag-of-words embedder whose geometry is known, for the zero-shot tests: each word gets a random unit
vector, a text is the normalised sum of its words' vectors, a picture the normalised sum of its true words'
vectors plus noise. Words and noise are drawn from one generator, so a test module's vectors depend only on
its seed and the order it asks for words."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.zero_shot import normalise


class WordSpace:
    def __init__(self, dimension: int, seed: int):
        self.dimension = dimension
        self.rng = np.random.default_rng(seed)
        self.words: dict[str, np.ndarray] = {}

    def word(self, w: str) -> np.ndarray:
        if w not in self.words:
            self.words[w] = normalise(self.rng.normal(size=self.dimension))
        return self.words[w]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(np.stack([sum(self.word(w) for w in t.lower().replace(",", " ").split()) for t in texts]))

    def picture(self, *words: str, noise: float) -> np.ndarray:
        return normalise(sum(self.word(w.lower()) for w in words) + noise * self.rng.normal(size=self.dimension))
