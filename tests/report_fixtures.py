"""A fake model folder in the real artifact layout (manifest, metrics, predictions, loss history, photos),
with known right and wrong answers, for the evaluation report and the CLIP baseline tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loom.artifact import write_manifest
from loom.schema import AttributeSchema
from training.synthetic import draw_shirt

ATTRIBUTES = ["baseColour", "Pattern", "Sleeve Length", "Fabric"]  # Fabric gets no validation rows


XSS = "<script>alert(1)</script>"


# (id, colour, pattern, sleeve, predicted colour, predicted pattern, predicted sleeve)
PRODUCTS = [
    ("101", "Red", "Solid", "Long Sleeves", "Red", "Solid", "Long Sleeves"),
    ("102", "Blue", "Striped", "Short Sleeves", "Blue", "Checked", "Short Sleeves"),
    ("103", "Green", "Checked", "Sleeveless", "Green", "Checked", "Sleeveless"),
    ("104", "Black", "Solid", "Long Sleeves", "Black", "Solid", XSS),
    ("105", "Pink", "Striped", "Short Sleeves", "Red", "Striped", "Short Sleeves"),
    ("106", "Yellow", "Checked", "Long Sleeves", "Yellow", "Checked", "Long Sleeves"),
]


MISSING_IMAGE_ID = "106"


def prediction_rows() -> list[dict[str, str]]:
    rows = []
    for pid, *values in PRODUCTS:
        truth, predicted = values[:3], values[3:]
        for attribute, t, p in zip(ATTRIBUTES, truth, predicted):
            rows.append({"id": pid, "attribute": attribute, "expected": t, "predicted": p,
                         "baseline": "a shirt", "correct": str(int(t == p)), "baseline_correct": "0"})
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def model_folder(tmp_path) -> tuple[Path, Path]:
    model, images = tmp_path / "model", tmp_path / "images"
    images.mkdir(parents=True)
    model.mkdir()
    for pid, colour, pattern, sleeve, *_ in PRODUCTS:
        if pid != MISSING_IMAGE_ID:
            draw_shirt(colour, pattern, sleeve).save(images / f"{pid}.jpg")
    schema = AttributeSchema.from_names(ATTRIBUTES)
    for pid, colour, pattern, sleeve, *_ in PRODUCTS:
        schema.count("baseColour", colour)
        schema.count("Pattern", pattern)
        schema.count("Sleeve Length", sleeve)
    write_manifest(model, schema, base_model="tiny/blip2-test",
                   lora={"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q", "v"]},
                   extra={"name": "loom-report-test"})
    rows = prediction_rows()
    per_attribute = {}
    for attribute in ATTRIBUTES[:3]:
        mine = [r for r in rows if r["attribute"] == attribute]
        per_attribute[attribute] = {"exact_match": sum(int(r["correct"]) for r in mine) / len(mine),
                                    "baseline_exact_match": 0.0, "unknown_value_rate": 0.0, "examples": len(mine)}
    metrics = {
        "overall": {"exact_match": 0.8333333, "baseline_exact_match": 0.0555556,
                    "unknown_value_rate": 0.0555556, "examples": len(rows)},
        "attributes": per_attribute,
        "training": {"steps": 120, "epochs": 3, "seconds": 41.5, "final_loss": 0.0123, "device": "cpu",
                     "dtype": "float32", "train_examples": 48, "validation_examples": len(rows)},
    }
    (model / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    write_csv(model / "evaluation" / "predictions.csv", rows,
              ["id", "attribute", "expected", "predicted", "baseline", "correct", "baseline_correct"])
    history = [{"step": s, "loss": 8.0 * 0.95 ** s, "learning_rate": 1e-4 * (1 - s / 120)} for s in range(0, 120, 2)]
    write_csv(model / "evaluation" / "loss_history.csv", history, ["step", "loss", "learning_rate"])
    return model, images


