"""Evaluation on the validation split through the serving predictor: one generation path for both.

Every model that is scored (the untouched base, the LoRA-wrapped model, the saved artifact) answers
through `runtime.predictor.Predictor`: each product photo decoded as the server decodes it,
encoded once, its questions decoded in one batched generation, answers parsed as the server parses them.
The saved artifact is reloaded with `Predictor.load`, the loader, device and dtype `serve` uses.

- `exact_match`: the value parsed from the generated `Label: Value` equals the expected value; an
  answer that does not parse, or names another attribute, is wrong.
- `baseline_exact_match`: the base model before fine-tuning, which answers in its own words ("cotton",
  a caption): correct when its raw answer names the expected value (case-insensitive, whole words).
- `unknown_value_rate`: the share of answers whose value is not among the schema's known values (the
  train split's values); unparsable answers count as unknown.
"""

from __future__ import annotations

import csv
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from loom.schema import AttributeSchema
from training.data import VqaExample, read_image, values_by_product

PREDICTION_COLUMNS = ("id", "attribute", "expected", "predicted", "baseline", "correct", "baseline_correct",
                      "confidence")
SERVED_PATH = "runtime.predictor.Predictor.load + generate_many"


@dataclass(frozen=True)
class Prediction:
    """One validation question as the model answered it (the record other parts reuse, e.g. calibration)."""

    id: str
    attribute: str
    expected: str
    predicted: str | None  # the parsed value; None when the answer is not `Label: Value` for this attribute
    text: str              # the raw generated text
    confidence: float      # the server's `confidence`: probability of the value tokens given the label

    @property
    def correct(self) -> bool:
        return self.predicted == self.expected

    @property
    def names_expected(self) -> bool:
        """The raw text names the expected value (the baseline's criterion)."""
        return names_value(self.text, self.expected)

    @property
    def shown(self) -> str:
        """The value, or the raw text when it did not parse (for predictions.csv)."""
        return self.predicted if self.predicted is not None else self.text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Prediction":
        return cls(**{k: data[k] for k in ("id", "attribute", "expected", "predicted", "text", "confidence")})


def names_value(text: str, value: str) -> bool:
    """True when `text` contains `value` as whole words, ignoring case ("Red cotton" names "red")."""
    words = r"\s+".join(re.escape(w) for w in value.split())
    return bool(words) and re.search(rf"(?<!\w){words}(?!\w)", text, flags=re.IGNORECASE) is not None


def predict(predictor, examples: Sequence[VqaExample], images_dir: str | Path, *, batch_size: int = 32,
            max_new_tokens: int = 16, progress: bool = False, decode_workers: int = 4) -> list[Prediction]:
    """Answers of a `Predictor` to every example, in the examples' order.

    Products are answered together, up to about `batch_size` questions per generation: each photo is
    decoded with the server's decoder (on `decode_workers` threads, one chunk ahead) and encoded once, its
    questions asked as the server asks them.
    """
    asked = values_by_product(examples)
    chunks: list[list[str]] = [[]]
    for pid, values in asked.items():
        if chunks[-1] and sum(len(asked[p]) for p in chunks[-1]) + len(values) > batch_size:
            chunks.append([])
        chunks[-1].append(pid)
    found: dict[tuple[str, str], tuple[str | None, str, float]] = {}
    draft_side = getattr(predictor, "image_draft_side", None)  # the server's decode
    with ThreadPoolExecutor(max(1, decode_workers), thread_name_prefix="decode") as pool:
        def decode(n: int) -> list[Future]:  # the photos of chunk n, decoded while chunk n - 1 is answered
            return [pool.submit(read_image, Path(images_dir), pid, draft_side) for pid in chunks[n]] \
                if n < len(chunks) else []

        upcoming = decode(0)
        numbers = range(len(chunks))
        if progress:
            from tqdm import tqdm

            numbers = tqdm(numbers, desc="evaluating", unit="batch", leave=False)
        for n in numbers:
            images, upcoming = [f.result() for f in upcoming], decode(n + 1)
            requests = [(image, [predictor.schema.question(a) for a in asked[pid]])
                        for image, pid in zip(images, chunks[n])]
            _record(found, predictor.schema, chunks[n], asked, predictor.generate_many(requests,
                                                                                    max_new_tokens=max_new_tokens))
    return [Prediction(e.id, e.attribute, e.value, *found[(e.id, e.attribute)]) for e in examples]


def _record(found: dict, schema: AttributeSchema, chunk: list[str], asked: dict[str, dict[str, str]],
            answers) -> None:
    """Each answer's parsed value (as the server parses it, whether or not it would be stated), raw text and
    value confidence, by (product, attribute): evaluation and calibration score every answer."""
    from runtime.predictor import model_answers

    for pid, product_answers in zip(chunk, answers, strict=True):
        parsed = model_answers(schema, list(asked[pid]), product_answers)
        for name, answer in parsed.items():
            found[(pid, name)] = (answer.value, answer.text, round(answer.confidence, 4))


def in_memory_predictor(model, processor, schema: AttributeSchema):
    """A Predictor around a model in memory (the base, or the LoRA-wrapped model) for `predict`."""
    from runtime.predictor import Predictor

    return Predictor(model, processor, schema)


def served_predictions(model_dir: str | Path, examples: Sequence[VqaExample], images_dir: str | Path, *,
                       device=None, batch_size: int = 32, max_new_tokens: int = 16,
                       progress: bool = False) -> tuple[list[Prediction], dict[str, str]]:
    """The saved artifact reloaded exactly as `serve` loads it, and its answers; (predictions, how measured)."""
    from runtime.predictor import Predictor

    predictor = Predictor.load(model_dir, device=device)
    try:
        predictions = predict(predictor, examples, images_dir, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, progress=progress)
    finally:
        info = {"path": SERVED_PATH, "device": predictor.info["device"], "dtype": predictor.info["dtype"]}
        del predictor
    return predictions, info


def score(examples: Sequence[VqaExample], predictions: Sequence[Prediction], schema: AttributeSchema,
          baseline: Sequence[Prediction] | None = None,
          adapter: Sequence[Prediction] | None = None) -> dict[str, Any]:
    """{"overall": {...}, "attributes": {name: {...}}}: exact_match, baseline_exact_match,
    adapter_exact_match (the LoRA-wrapped model before merging), unknown_value_rate and examples."""
    for other in (predictions, baseline, adapter):
        if other is not None and len(other) != len(examples):
            raise ValueError("one prediction per example is needed")
    groups: dict[str, list[int]] = {name: [] for name in schema.names}
    for i, example in enumerate(examples):
        groups.setdefault(example.attribute, []).append(i)

    def share(indices: list[int], hits) -> float | None:
        return round(sum(bool(hits(i)) for i in indices) / len(indices), 4) if indices else None

    def summary(indices: list[int]) -> dict[str, Any]:
        return {
            "exact_match": share(indices, lambda i: predictions[i].correct),
            "baseline_exact_match": share(indices, lambda i: baseline[i].names_expected) if baseline else None,
            "adapter_exact_match": share(indices, lambda i: adapter[i].correct) if adapter else None,
            "unknown_value_rate": share(indices, lambda i: predictions[i].predicted is None or not
                                        schema.is_known_value(examples[i].attribute, predictions[i].predicted)),
            "examples": len(indices),
        }

    return {
        "overall": summary(list(range(len(examples)))),
        "attributes": {name: summary(indices) for name, indices in groups.items() if indices},
    }


def write_predictions(path: str | Path, predictions: Sequence[Prediction],
                      baseline: Sequence[Prediction] | None = None) -> Path:
    """evaluation/predictions.csv: one row per validation question (values, not `Label: Value` text);
    `baseline` is the base model's raw answer, `baseline_correct` whether it names the expected value."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for i, p in enumerate(predictions):
            base = baseline[i] if baseline is not None else None
            writer.writerow([p.id, p.attribute, p.expected, p.shown, base.text if base is not None else "",
                             int(p.correct), int(base is not None and base.names_expected), p.confidence])
    return path


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small table for the log: served exact match, the adapter's and the baseline per attribute, then overall."""
    def cell(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"{'attribute':<16} {'n':>5} {'exact':>6} {'adapter':>7} {'base':>6} {'unknown':>7}"]
    rows = list(metrics["attributes"].items()) + [("overall", metrics["overall"])]
    for name, m in rows:
        lines.append(f"{name:<16} {m['examples']:>5} {cell(m['exact_match'])} {cell(m.get('adapter_exact_match')):>7} "
                     f"{cell(m['baseline_exact_match'])} {cell(m['unknown_value_rate']):>7}")
    return "\n".join(lines)
