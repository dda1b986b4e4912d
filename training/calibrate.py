"""Calibrate a saved artifact: value confidences of the served predictor on the validation split -> thresholds.

`records_from_predictions` turns the served evaluation's answers (training.evaluate: the saved artifact
reloaded as `serve` loads it, through the same Predictor) into (attribute, correct, value confidence)
records; an answer that does not parse or names a value never seen in training gets confidence None (it
is never stated). `calibrate_artifact` fits thresholds on such records (loom.calibration: the target
precision shown with a stated confidence) and stores them, with the evidence they rest on, in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from loom.artifact import write_calibration
from loom.calibration import DEFAULT_CONFIDENCE, Calibration, fit_calibration
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
                       target_precision: float, confidence: float = DEFAULT_CONFIDENCE) -> Calibration:
    """Fit thresholds on `records` and store them (and the records) in the artifact."""
    records = list(records)
    calibration = fit_calibration(records, target_precision, confidence)
    write_calibration(model_dir, calibration.to_dict(), records)
    return calibration


def format_calibration(calibration: Calibration) -> str:
    """A table for the log: per attribute the threshold, the answers it rests on, the observed precision and
    its lower confidence bound, the coverage, or why the attribute is never stated."""
    lines = [f"{'attribute':<16} {'answers':>7} {'threshold':>9} {'stated':>6} {'precision':>9} {'lower':>6} "
             f"{'coverage':>8}   (precision >= {calibration.target_precision:g} shown with "
             f"{calibration.confidence:.0%} confidence; at least {calibration.min_stated} stated answers)"]
    for name, a in calibration.attributes.items():
        if a.threshold is None:
            lines.append(f"{name:<16} {a.examples:>7} {'never':>9} {'-':>6} {'-':>9} {'-':>6} {0:>8.3f}   "
                         f"{a.reason}")
        else:
            lines.append(f"{name:<16} {a.examples:>7} {a.threshold:>9.4f} {a.stated:>6} {a.precision:>9.3f} "
                         f"{a.lower_bound:>6.3f} {a.coverage:>8.3f}")
    return "\n".join(lines)
