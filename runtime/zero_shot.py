"""CLIP zero-shot tagging and prompt building ("interrogation") on embeddings, independent of the model.

Everything here takes L2-normalised embeddings (numpy float32) and an optional `embed_texts` function,
so it runs the same with the tiny stand-in CLIP, a real checkpoint, or test vectors:

- `label_embeddings`: one embedding per candidate label, the normalised mean over prompt templates
  ("a photo of a {} shirt", "{} shirt", ...): the prompt ensembling of the CLIP paper, sec. 3.1.4.
- `probabilities`: softmax over cosine similarities scaled by the model's logit scale, as CLIP scores
  an image against a list of prompts.
- `tag`: per attribute, the most probable value, stated only when its probability reaches the
  attribute's calibrated threshold; otherwise withheld with its reason.
- `interrogate`: ranks phrase tables against the image. `fast` takes the best phrases overall,
  `classic` the best of each table after the caption, `best` chains greedily, adding the phrase that
  most raises the similarity between the image and the whole prompt (which needs `embed_texts`).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from loom.clip_request import MODES

EmbedTexts = Callable[[Sequence[str]], np.ndarray]
DEFAULT_TEMPLATES = ("a photo of a {} {noun}", "a {} {noun}", "{}")
# Tables of one catalog attribute's values ("catalog-colour", training/phrase_tables.table_name): the values
# exclude each other (a shirt has one colour), so a prompt takes at most one phrase from each such table.
EXCLUSIVE_TABLE_PREFIX = "catalog-"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in float32 (a float64 scalar would promote the whole array)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True).astype(np.float32)
    return vectors / np.maximum(norms, np.float32(1e-12))


def label_embeddings(embed_texts: EmbedTexts, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                     noun: str = "") -> np.ndarray:
    """(len(labels), d): for each label the normalised mean of its templated prompts' embeddings."""
    prompts = [" ".join(t.format(label, noun=noun).split()) for label in labels for t in templates]
    embedded = normalise(embed_texts(prompts)).reshape(len(labels), len(templates), -1)
    return normalise(embedded.mean(axis=1))


def probabilities(image: np.ndarray, texts: np.ndarray, logit_scale: float = 100.0) -> np.ndarray:
    """Softmax over the scaled cosine similarities of one image to each text (sums to 1)."""
    logits = (texts @ image).astype(np.float64) * logit_scale
    logits -= logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


@dataclass(frozen=True)
class Tag:
    value: str
    probability: float
    probabilities: dict[str, float]


def tag(image: np.ndarray, candidates: Mapping[str, tuple[Sequence[str], np.ndarray]],
        thresholds: Mapping[str, float | None], logit_scale: float = 100.0) -> tuple[dict, dict]:
    """(tags, withheld) per attribute. `candidates`: attribute -> (values, their label embeddings).

    `thresholds`: the calibrated minimum probability per attribute (inf when the validation photos do not show
    the target precision at any threshold: never stated, `not_enough_evidence`); None (or absent) means the
    attribute was never calibrated, so it is never stated either (`not_calibrated`).
    """
    tags: dict[str, dict] = {}
    withheld: dict[str, dict] = {}
    for name, (values, embeddings) in candidates.items():
        p = probabilities(image, embeddings, logit_scale)
        best = int(np.argmax(p))
        result = Tag(values[best], round(float(p[best]), 4),
                     {v: round(float(x), 4) for v, x in zip(values, p)})
        threshold = thresholds.get(name)
        if threshold is not None and result.probability >= threshold:
            tags[name] = result.__dict__
        else:
            reason = ("not_calibrated" if threshold is None else "not_enough_evidence" if threshold == math.inf
                      else "below_threshold")
            withheld[name] = {**result.__dict__, "reason": reason}
    return tags, withheld


@dataclass(frozen=True)
class PhraseTable:
    """Phrases and their (precomputed, normalised) text embeddings, shipped in the artifact."""

    name: str
    phrases: list[str]
    embeddings: np.ndarray

    @property
    def exclusive(self) -> bool:
        """One catalog attribute's values: a prompt names at most one of them."""
        return self.name.startswith(EXCLUSIVE_TABLE_PREFIX)


def _ranked(image: np.ndarray, table: PhraseTable) -> list[tuple[str, float]]:
    scores = table.embeddings @ image
    order = np.argsort(-scores, kind="stable")
    return [(table.phrases[i], float(scores[i])) for i in order]


def compose(caption: str | None, terms: Sequence[str]) -> str:
    return ", ".join([t for t in ([caption] if caption else []) + list(terms) if t])


def interrogate(image: np.ndarray, tables: Sequence[PhraseTable], *, mode: str = "fast", max_terms: int = 6,
                caption: str | None = None, embed_texts: EmbedTexts | None = None,
                per_table: int = 1, candidates: int = 24) -> dict:
    """{"prompt", "caption", "terms": [{"text", "similarity"}], "similarity"} for one image embedding."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if max_terms < 1:
        raise ValueError("max_terms must be at least 1")
    chosen: list[tuple[str, float]] = []
    if mode == "fast":
        pool = sorted(((*pair, t) for t in tables for pair in _ranked(image, t)), key=lambda p: -p[1])
        used: set[str] = set()
        for text, score, table in pool:
            if len(chosen) == max_terms:
                break
            if text in {c[0] for c in chosen} or table.name in used:
                continue
            chosen.append((text, score))
            if table.exclusive:
                used.add(table.name)
    elif mode == "classic":
        for table in tables:  # tables come in order: the catalog's vocabulary first, then styles
            chosen += [p for p in _ranked(image, table) if p[0] not in {c[0] for c in chosen}][:per_table]
        chosen = chosen[:max_terms]
    else:
        if embed_texts is None:
            raise ValueError("mode 'best' needs a text encoder to score whole prompts")
        ranked = sorted(((*pair, t) for t in tables for pair in _ranked(image, t)[:candidates]), key=lambda p: -p[1])
        pool, seen = [], set()
        for text, score, table in ranked:
            if text not in seen:
                seen.add(text)
                pool.append((text, score, table))
        current = float(normalise(embed_texts([compose(caption, []) or " "]))[0] @ image) if caption else -1.0
        while pool and len(chosen) < max_terms:
            trials = [compose(caption, [c[0] for c in chosen] + [p[0]]) for p in pool]
            scores = normalise(embed_texts(trials)) @ image
            best = int(np.argmax(scores))
            if chosen and float(scores[best]) <= current:
                break  # no phrase makes the prompt closer to the image
            current = float(scores[best])
            text, score, table = pool.pop(best)
            chosen.append((text, score))
            if table.exclusive:  # the other values of that attribute leave the pool
                pool = [p for p in pool if p[2].name != table.name]
    prompt = compose(caption, [c[0] for c in chosen])
    similarity = None
    if embed_texts is not None:
        similarity = round(float(normalise(embed_texts([prompt]))[0] @ image), 4)
    return {"prompt": prompt, "caption": caption,
            "terms": [{"text": text, "similarity": round(score, 4)} for text, score in chosen],
            "similarity": similarity}

