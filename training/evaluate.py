"""Evaluation on the validation split: batched greedy answers, exact match per attribute, baseline.

A prediction is the value parsed from the generated `Label: Value` text for the attribute asked
about; an answer that does not parse (or names another attribute) is wrong, and its raw text is kept.
`unknown_value_rate` is the share of answers whose value is not among the schema's known values (the
train split's values); unparsable answers count as unknown.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from loom.schema import AttributeSchema
from training.data import PixelCache, VqaExample, encode_questions

PREDICTION_COLUMNS = ("id", "attribute", "expected", "predicted", "baseline", "correct", "baseline_correct")


@dataclass(frozen=True)
class Answer:
    """What the model answered to one example: the raw text, and the value when it parses."""

    text: str
    value: str | None

    @property
    def shown(self) -> str:
        """The value, or the raw text when it did not parse (for predictions.csv)."""
        return self.value if self.value is not None else self.text


@torch.no_grad()
def generate_answers(model, processor, examples: Sequence[VqaExample], pixels: PixelCache, schema: AttributeSchema,
                     *, batch_size: int = 32, max_new_tokens: int = 16, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, progress: bool = False) -> list[Answer]:
    """Greedy answers of `model` (plain, LoRA-wrapped or merged) to every example, in order."""
    was_training = model.training
    model.eval()
    answers: list[Answer] = []
    starts = range(0, len(examples), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluating", unit="batch", leave=False)
    for start in starts:
        chunk = examples[start:start + batch_size]
        inputs = encode_questions(processor, [e.question for e in chunk])
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = pixels.batch([e.id for e in chunk]).to(device, dtype)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        texts = processor.tokenizer.batch_decode(output, skip_special_tokens=True)
        for example, text in zip(chunk, texts):
            text = text.strip()
            parsed = schema.parse_answer(text, expected=example.attribute)
            answers.append(Answer(text, parsed[1] if parsed else None))
    if was_training:
        model.train()
    return answers


def score(examples: Sequence[VqaExample], answers: Sequence[Answer], schema: AttributeSchema,
          baseline: Sequence[Answer] | None = None) -> dict[str, Any]:
    """{"overall": {...}, "attributes": {name: {...}}} with exact_match, baseline_exact_match,
    unknown_value_rate and examples (baseline_exact_match is None without a baseline)."""
    if len(answers) != len(examples) or (baseline is not None and len(baseline) != len(examples)):
        raise ValueError("one answer per example is needed")
    groups: dict[str, list[int]] = {name: [] for name in schema.names}
    for i, example in enumerate(examples):
        groups.setdefault(example.attribute, []).append(i)

    def summary(indices: list[int]) -> dict[str, Any]:
        n = len(indices)
        correct = sum(answers[i].value == examples[i].value for i in indices)
        unknown = sum(answers[i].value is None or not schema.is_known_value(examples[i].attribute, answers[i].value)
                      for i in indices)
        base = None
        if baseline is not None and n:
            base = round(sum(baseline[i].value == examples[i].value for i in indices) / n, 4)
        return {
            "exact_match": round(correct / n, 4) if n else None,
            "baseline_exact_match": base,
            "unknown_value_rate": round(unknown / n, 4) if n else None,
            "examples": n,
        }

    return {
        "overall": summary(list(range(len(examples)))),
        "attributes": {name: summary(indices) for name, indices in groups.items() if indices},
    }


def write_predictions(path: str | Path, examples: Sequence[VqaExample], answers: Sequence[Answer],
                      baseline: Sequence[Answer] | None = None) -> Path:
    """evaluation/predictions.csv: one row per validation example (values, not `Label: Value` text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for i, (example, answer) in enumerate(zip(examples, answers)):
            base = baseline[i] if baseline is not None else None
            writer.writerow([
                example.id, example.attribute, example.value, answer.shown,
                base.shown if base is not None else "",
                int(answer.value == example.value),
                int(base is not None and base.value == example.value),
            ])
    return path


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small table for the log: exact match and baseline per attribute, then overall."""
    def cell(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"{'attribute':<16} {'n':>5} {'exact':>6} {'base':>6} {'unknown':>7}"]
    rows = list(metrics["attributes"].items()) + [("overall", metrics["overall"])]
    for name, m in rows:
        lines.append(f"{name:<16} {m['examples']:>5} {cell(m['exact_match'])} "
                     f"{cell(m['baseline_exact_match'])} {cell(m['unknown_value_rate']):>7}")
    return "\n".join(lines)
