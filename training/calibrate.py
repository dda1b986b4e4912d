"""Calibrate a saved artifact: value confidences of the served predictor on the validation split -> thresholds.

`records_from_predictions` turns the served evaluation's answers (training.evaluate: the saved artifact
reloaded as `serve` loads it, through the same Predictor) into (attribute, correct, value confidence)
records; an answer that does not parse or names a value never seen in training gets confidence None (it
is never stated). `calibrate_artifact` fits thresholds on such records (loom.calibration) and stores
them in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from loom.artifact import write_calibration
from loom.calibration import Calibration, fit_calibration
from loom.schema import AttributeSchema


def records_from_predictions(predictions: Iterable[Any], schema: AttributeSchema
                             ) -> list[tuple[str, bool, float | None]]:
    """(attribute, answer == expected, value confidence or None) from the served predictor's answers
    (training.evaluate.Prediction); an unparsed answer or a value never seen in training gets None."""
    records = []
    for p in predictions:
        usable = p.predicted is not None and schema.is_known_value(p.attribute, p.predicted)
        records.append((p.attribute, p.predicted == p.expected, p.confidence if usable else None))
    return records


def calibrate_artifact(model_dir: str | Path, records: Iterable[tuple[str, bool, float | None]],
                       target_precision: float) -> Calibration:
    """Fit thresholds on `records` and store them (and the records) in the artifact."""
    records = list(records)
    calibration = fit_calibration(records, target_precision)
    write_calibration(model_dir, calibration.to_dict(), records)
    return calibration


def format_calibration(calibration: Calibration) -> str:
    """A small table for the log: threshold, precision and coverage reached per attribute."""
    lines = [f"{'attribute':<16} {'n':>5} {'threshold':>9} {'precision':>9} {'coverage':>8}"
             f"   (target precision {calibration.target_precision:g})"]
    for name, a in calibration.attributes.items():
        threshold = "never" if a.threshold is None else f"{a.threshold:.4f}"
        precision = "-" if a.precision is None else f"{a.precision:.3f}"
        lines.append(f"{name:<16} {a.examples:>5} {threshold:>9} {precision:>9} {a.coverage:>8.3f}")
    return "\n".join(lines)
