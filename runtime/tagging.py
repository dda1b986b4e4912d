"""Zero-shot requests to a CLIP artifact: the post's prompt probabilities, schema-driven tags, interrogation.

    {"image": "<base64>", "prompt": ["a photo of a cat", "a photo of a dog"]}       (no task)
        -> [[p_cat, p_dog]]: one row per image, one probability per prompt, in order (softmax over CLIP's
           scaled cosine similarities), the shape of the sample CLIP handler the AWS post deploys
    {"task": "tags", "image": "<base64>", "attributes"?: [...], "labels"?: {"Pattern": [...]}, "min_probability"?}
        -> {"tags": {name: {"value", "probability", "probabilities"}}, "withheld": {name: {..., "reason"}}}
    {"task": "interrogate", "image": "<base64>", "mode"?: "fast"|"classic"|"best", "max_terms"?: 1-32, "caption"?}
        -> {"prompt", "caption", "terms": [{"text", "similarity"}], "similarity"}

Tags: the candidates of an attribute are the schema's known values unless `labels` gives them; each value is
embedded through the manifest's templates and the embeddings averaged (prompt ensembling). A value is stated
when its probability reaches the attribute's threshold calibrated on validation photos (loom/calibration.py,
as for the attribute model: the target precision shown with 95 % confidence), else withheld: `below_threshold`,
`not_enough_evidence` when the validation photos do not show the target precision at any threshold (no
probability states it), or `not_calibrated` when the attribute was never calibrated (no validation photos when
the artifact was built).
Caller-given labels change the softmax, so the calibrated threshold does not hold for them: they are withheld
as `not_calibrated` unless the request sets `min_probability`, the caller's own threshold for its labels (a
label list equal to the schema's known values keeps the calibrated threshold). Prompts of the post's form are
used verbatim. Every bad input is a StatusError(400); the tags and interrogate rules are loom/clip_request.py's,
which the API Lambda checks with too.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime import zero_shot as zs
from runtime.embedder import ClipEmbedder
from loom.artifact import PhrasePaths, clip_schema, read_calibration, read_clip_manifest, read_phrase_tables
from loom.calibration import Calibration
from loom.clip_request import MAX_LABELS
from loom.errors import StatusError
from loom.schema import AttributeSchema
from loom.search_request import check_fields, check_text

PROMPT_KEYS = {"image", "prompt"}
LABEL_CACHE = 256  # caller label lists whose embeddings are kept


@dataclass(frozen=True)
class TagPlan:
    """What one tags request asks: per attribute its candidate values and their embeddings, in order, and the
    minimum probability that states a value (None: no threshold, so never stated)."""

    candidates: dict[str, tuple[list[str], np.ndarray]]
    thresholds: dict[str, float | None]


def parse_prompts(request: Mapping[str, Any]) -> list[str]:
    """The post's form: exactly {"image", "prompt": [1..MAX_LABELS strings]}."""
    check_fields(request, PROMPT_KEYS, 'the prompt form {"image", "prompt": [...]}')
    prompts = request["prompt"]
    if not isinstance(prompts, list) or not prompts:
        raise StatusError(400, f"'prompt' must be a list of 1 to {MAX_LABELS} strings")
    if len(prompts) > MAX_LABELS:
        raise StatusError(400, f"'prompt' holds {len(prompts)} prompts; at most {MAX_LABELS} per request")
    return [check_text(p, "prompt[]") for p in prompts]


class ZeroShot:
    """The zero-shot side of a loaded CLIP artifact: schema, tag templates and thresholds, phrase tables."""

    def __init__(self, embedder: ClipEmbedder, schema: AttributeSchema | None, templates: Sequence[str],
                 noun: str, calibration: Calibration | None, tables: list[zs.PhraseTable] | None):
        self.embedder, self.schema, self.calibration, self.tables = embedder, schema, calibration, tables
        self.templates, self.noun = tuple(templates), noun
        self._labels: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._labels_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, embedder: ClipEmbedder) -> "ZeroShot":
        manifest = read_clip_manifest(model_dir)
        schema = clip_schema(manifest)
        settings = manifest.get("zero_shot", {})
        calibration = read_calibration(model_dir, manifest)  # older manifests: refitted from their records
        tables = None
        named = read_phrase_tables(model_dir)
        if named is not None:
            vectors = zs.normalise(np.load(PhrasePaths.of(model_dir).embeddings))
            if vectors.shape != (sum(map(len, named.values())), embedder.dimension):
                raise ValueError(f"{model_dir}: phrase embeddings of shape {vectors.shape} do not match "
                                 f"{sum(map(len, named.values()))} phrases of {embedder.dimension}-d")
            tables, start = [], 0
            for name, phrases in named.items():
                tables.append(zs.PhraseTable(name, phrases, vectors[start:start + len(phrases)]))
                start += len(phrases)
        return cls(embedder, schema, settings.get("templates", zs.DEFAULT_TEMPLATES),
                   settings.get("noun", schema.product_noun if schema else ""), calibration, tables)

    @property
    def summary(self) -> str:
        calibrated = [] if self.calibration is None else [
            n for n, a in self.calibration.attributes.items() if a.threshold is not None]
        return (f"schema: {len(self.schema) if self.schema else 0} attributes, calibrated: {calibrated or 'none'}, "
                f"phrase tables: {len(self.tables) if self.tables else 0}")

    def warm_up(self) -> None:
        if self.schema is not None:
            self.plan(None, None, None)

    # -- tags --------------------------------------------------------------------------------------------
    def label_embeddings(self, values: Sequence[str]) -> np.ndarray:
        """The ensembled embeddings of candidate values (kept for the LABEL_CACHE most recent lists)."""
        key = tuple(values)
        with self._labels_lock:
            found = self._labels.get(key)
            if found is not None:
                self._labels.move_to_end(key)
                return found
        found = zs.label_embeddings(self._embed_verbatim, list(values), self.templates, self.noun)
        with self._labels_lock:
            self._labels[key] = found
            while len(self._labels) > LABEL_CACHE:
                self._labels.popitem(last=False)
        return found

    def plan(self, attributes: list[str] | None, labels: dict[str, list[str]] | None,
             min_probability: float | None) -> TagPlan:
        """Candidates and thresholds for a tags request (parse_tags's output); 400 for what cannot be tagged."""
        labels = labels or {}
        known = self.schema.names if self.schema is not None else []
        if attributes is None:
            attributes = list(labels) if labels else [n for n in known if self.schema.attributes[n].values]
            if not attributes:
                raise StatusError(400, "this CLIP artifact carries no attribute schema: pass 'labels' "
                                       "(rebuild it with loom clip-artifact --schema or --catalog to tag by default)")
        unknown = [n for n in attributes if n not in labels and n not in known]
        if unknown:
            raise StatusError(400, f"unknown attributes {unknown}; known: {known}, or give candidates in 'labels'")
        stray = sorted(set(labels) - set(attributes))
        if stray:
            raise StatusError(400, f"'labels' names attributes {stray} that 'attributes' does not ask for")
        candidates, thresholds = {}, {}
        for name in attributes:
            schema_values = list(self.schema.attributes[name].values) if name in known else []
            values = labels.get(name, schema_values)
            if not values:
                raise StatusError(400, f"attribute {name!r} has no known values: give its candidates in 'labels'")
            candidates[name] = (values, self.label_embeddings(values))
            if name in known and set(values) == set(schema_values):
                thresholds[name] = self.threshold(name)
            else:
                thresholds[name] = min_probability  # the caller's own threshold for its labels, or none
        return TagPlan(candidates, thresholds)

    def threshold(self, name: str) -> float | None:
        """The attribute's calibrated minimum probability; inf when the validation photos do not show the
        target precision at any threshold (never stated: `not_enough_evidence`, as the attribute model says of
        such an attribute); None when the attribute was never calibrated (`not_calibrated`)."""
        if self.calibration is None or name not in self.calibration.attributes:
            return None
        threshold = self.calibration.threshold(name)
        return math.inf if threshold is None else threshold

    def tag(self, image_vectors: np.ndarray, plan: TagPlan) -> list[dict[str, dict]]:
        """{"tags", "withheld"} for each image embedding."""
        answers = []
        for vector in image_vectors:
            tags, withheld = zs.tag(vector, plan.candidates, plan.thresholds, self.embedder.logit_scale)
            answers.append({"tags": tags, "withheld": withheld})
        return answers

    # -- the post's form and interrogation ------------------------------------------------------------------
    def prompt_probabilities(self, image_vectors: np.ndarray, prompts: Sequence[str]) -> list[list[float]]:
        """One row per image: the probability of each prompt, in order (prompts used verbatim)."""
        texts = zs.normalise(self._embed_verbatim(prompts))
        return [[round(float(p), 6) for p in zs.probabilities(v, texts, self.embedder.logit_scale)]
                for v in image_vectors]

    def check_tables(self) -> None:
        """400 when the artifact ships no phrase tables (built before they existed)."""
        if not self.tables:
            raise StatusError(400, "this CLIP artifact has no phrase tables: rebuild it with loom clip-artifact "
                                   "(or loom tiny-clip) to interrogate")

    def interrogate(self, image_vector: np.ndarray, mode: str, max_terms: int, caption: str | None) -> dict:
        self.check_tables()
        return zs.interrogate(image_vector, self.tables, mode=mode, max_terms=max_terms, caption=caption,
                              embed_texts=self._embed_verbatim)

    def _embed_verbatim(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed_texts(list(texts), templated=False)
