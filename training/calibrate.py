"""Calibrate a saved artifact: value confidences of the served predictor on the validation split -> thresholds.

`served_records` asks the artifact, through the same Predictor the endpoint runs, every validation question
(each product's image encoded once) and returns (attribute, correct, value confidence) records; an answer
that does not parse or names a value never seen in training gets confidence None (it is never stated).
`calibrate_artifact` fits thresholds on any such records (loom.calibration) and stores them in the manifest,
so another evaluation that yields the same records plugs in unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from loom.artifact import write_calibration
from loom.calibration import Calibration, fit_calibration
from training.data import VqaExample

PRODUCTS_PER_BATCH = 16


def served_records(model_dir: str | Path, examples: Sequence[VqaExample], images_dir: str | Path,
                   device: Any = None) -> list[tuple[str, bool, float | None]]:
    """(attribute, answer == expected, value confidence or None) for every example, in order."""
    from PIL import Image

    from inference.server.predictor import Predictor, model_answers

    predictor = Predictor.load(model_dir, device=device)
    schema = predictor.schema
    by_product: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_product.setdefault(example.id, []).append(index)
    records: list[tuple[str, bool, float | None] | None] = [None] * len(examples)
    products = list(by_product.items())
    for start in range(0, len(products), PRODUCTS_PER_BATCH):
        chunk = products[start:start + PRODUCTS_PER_BATCH]
        requests = []
        for product_id, indices in chunk:
            with Image.open(Path(images_dir) / f"{product_id}.jpg") as image:
                requests.append((image.convert("RGB"), [examples[i].question for i in indices]))
        for (_, indices), answers in zip(chunk, predictor.generate_many(requests), strict=True):
            names = [examples[i].attribute for i in indices]
            for i, (name, answer) in zip(indices, model_answers(schema, names, answers).items()):
                usable = answer.value is not None and schema.is_known_value(name, answer.value)
                records[i] = (name, answer.value == examples[i].value, answer.confidence if usable else None)
    return [r for r in records if r is not None]


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
