"""What a run must show before it ships: the baseline (computed once), served-path agreement, the gate.

- The baseline is the base model's answers to the validation questions. It is computed once, before
  fine-tuning, and kept in the checkpoint folder (`baseline.json`, synced to S3 with the checkpoints), so
  that a resumed spot job reads it instead of spending another pass over the validation split. A key
  (base model, validation questions, generation length) makes sure a stale file is never reused.
- The adapter (LoRA on the training-precision base) and the saved artifact (merged, saved in `save_dtype`,
  reloaded as `serve` loads it) are both scored; when an attribute's figures differ by more than
  `served_tolerance`, the run prints a WARNING naming them. The artifact's figures are the ones reported.
- The quality gate: unless the served overall exact match beats the baseline's and reaches
  `min_exact_match`, the job fails (`QualityGateFailed`) and ships no model; `quality_gate=false` turns it off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from training.config import TrainingConfig
from training.data import VqaExample
from training.evaluate import Prediction

BASELINE_FILE = "baseline.json"


class QualityGateFailed(RuntimeError):
    """The fine-tuned model does not beat the baseline (or the floor): the job must not ship it."""


def baseline_key(base_model: str, examples: Sequence[VqaExample], max_new_tokens: int) -> str:
    """A fingerprint of what the baseline answered: the base model, the questions and the answer length."""
    text = json.dumps([base_model, max_new_tokens, [[e.id, e.attribute, e.value] for e in examples]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_baseline(checkpoint_dir: str | Path, key: str, predictions: Sequence[Prediction]) -> Path:
    """Keep the baseline's answers beside the checkpoints (written whole, then renamed into place)."""
    path = Path(checkpoint_dir) / BASELINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"key": key, "predictions": [p.to_dict() for p in predictions]}) + "\n",
                       encoding="utf-8")
    partial.replace(path)
    return path


def load_baseline(checkpoint_dir: str | Path, key: str) -> list[Prediction] | None:
    """The kept baseline when it was computed for the same key; else None."""
    path = Path(checkpoint_dir) / BASELINE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return [Prediction.from_dict(p) for p in data["predictions"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def disagreements(metrics: dict[str, Any], tolerance: float) -> list[str]:
    """One line per attribute (and overall) whose served exact match is more than `tolerance` from the
    adapter's."""
    lines = []
    rows = list(metrics["attributes"].items()) + [("overall", metrics["overall"])]
    for name, m in rows:
        served, adapter = m.get("exact_match"), m.get("adapter_exact_match")
        if served is not None and adapter is not None and abs(served - adapter) > tolerance:
            lines.append(f"{name}: served {served:.3f} vs adapter {adapter:.3f} (tolerance {tolerance})")
    return lines


def gate(metrics: dict[str, Any], config: TrainingConfig) -> dict[str, Any]:
    """The gate's verdict: {"enabled", "passed", "exact_match", "baseline_exact_match", "min_exact_match",
    "reason"}. Without a baseline, only the floor applies (and the model must answer something right)."""
    overall = metrics["overall"]
    exact = overall["exact_match"] or 0.0
    base = overall.get("baseline_exact_match")
    reasons = []
    if base is not None and not exact > base:
        reasons.append(f"exact match {exact:.4f} does not beat the baseline {base:.4f}")
    if base is None and not exact > 0:
        reasons.append(f"exact match is {exact:.4f}")
    if exact < config.min_exact_match:
        reasons.append(f"exact match {exact:.4f} is below min_exact_match {config.min_exact_match:.4f}")
    return {"enabled": config.quality_gate, "passed": not reasons or not config.quality_gate,
            "exact_match": exact, "baseline_exact_match": base, "min_exact_match": config.min_exact_match,
            "reason": "; ".join(reasons)}
