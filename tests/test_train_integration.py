"""End to end: tiny base -> prepared synthetic catalog -> `train` -> evaluated, merged, reloadable artifact.

The artifact comes from the session fixture `trained_artifact` (tests/fixtures_training.py), which runs
the real `train` entry point with a folder standing in for /opt/ml.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from loom.artifact import MANIFEST_FILE, read_manifest
from training.metrics_regex import METRIC_DEFINITIONS
from training.tiny_base import TINY_BASE_ID

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
VISIBLE = ("baseColour", "Pattern", "Sleeve Length")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_fine_tuned_tiny_base_reaches_the_accuracy_floor(trained_artifact):
    metrics = trained_artifact.metrics
    for name in VISIBLE:
        m = metrics["attributes"][name]
        assert m["examples"] >= 40, f"too few validation examples for {name}"
        assert m["exact_match"] >= 0.9, f"{name}: exact match {m['exact_match']} < 0.9"
        assert m["baseline_exact_match"] is not None and m["baseline_exact_match"] < m["exact_match"]
        assert m["unknown_value_rate"] <= 0.05
    overall = metrics["overall"]
    assert overall["exact_match"] > overall["baseline_exact_match"]
    training = metrics["training"]
    assert training["steps"] == 300 and training["device"] == "cpu" and training["dtype"] == "float32"
    assert training["final_loss"] < 1.0 and training["train_examples"] > training["validation_examples"] > 0


def test_artifact_holds_model_processor_manifest_and_evaluation(trained_artifact):
    model_dir = trained_artifact.model_dir
    for name in ("config.json", "model.safetensors", "processor_config.json", MANIFEST_FILE, "metrics.json",
                 "evaluation/predictions.csv", "evaluation/loss_history.csv"):
        assert (model_dir / name).is_file(), name
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("adapter_*"))

    manifest = read_manifest(model_dir)
    assert manifest["base_model"] == TINY_BASE_ID
    assert manifest["lora"] == {"r": 8, "alpha": 32, "dropout": 0.0, "target_modules": ["q", "v"], "bias": "none"}
    assert manifest["metrics"] == trained_artifact.metrics
    assert manifest["name"] == "loom-tiny-demo" and manifest["num_query_tokens"] == 8
    assert re.match(r"\d{4}-\d\d-\d\dT", manifest["created"])
    assert manifest["hyperparameters"]["max_steps"] == "300"
    # Known values are the train split's value counts.
    schema = manifest["schema"]
    counts: Counter = Counter()
    for row in _rows(trained_artifact.data_dir / "vqa_train.csv"):
        name, value = schema.parse_answer(row["Answer"])
        counts[(name, value)] += 1
    assert {(n, v): c for n in schema.names for v, c in schema.attributes[n].values.items()} == dict(counts)


def test_predictions_and_loss_history_files(trained_artifact):
    evaluation = trained_artifact.model_dir / "evaluation"
    with (evaluation / "predictions.csv").open() as handle:
        assert handle.readline().strip() == "id,attribute,expected,predicted,baseline,correct,baseline_correct"
    rows = _rows(evaluation / "predictions.csv")
    val_rows = _rows(trained_artifact.data_dir / "vqa_val.csv")
    assert len(rows) == len(val_rows) == trained_artifact.metrics["overall"]["examples"]
    assert [r["id"] for r in rows] == [r["id"] for r in val_rows]
    for row in rows:
        assert row["correct"] == str(int(row["predicted"] == row["expected"]))
        assert row["baseline_correct"] == str(int(row["baseline"] == row["expected"]))
        assert ": " not in row["expected"]  # values, not "Label: Value"
    for name in VISIBLE:
        mine = [r for r in rows if r["attribute"] == name]
        share = sum(r["correct"] == "1" for r in mine) / len(mine)
        assert share == pytest.approx(trained_artifact.metrics["attributes"][name]["exact_match"], abs=1e-4)

    history = _rows(evaluation / "loss_history.csv")
    assert list(history[0]) == ["step", "loss", "learning_rate"]
    assert [int(h["step"]) for h in history] == list(range(1, 301))
    first = sum(float(h["loss"]) for h in history[:20]) / 20
    last = sum(float(h["loss"]) for h in history[-20:]) / 20
    assert last < first / 3


def test_log_has_stages_and_parsable_metric_lines(trained_artifact):
    log = trained_artifact.log
    assert [int(n) for n in re.findall(r"\[stage (\d)/8\]", log)] == list(range(1, 9))
    assert "WARNING" not in log
    found = {d["Name"]: [float(m.group(1)) for m in re.finditer(d["Regex"], log)] for d in METRIC_DEFINITIONS}
    assert len(found["train:loss"]) == 12  # every 25 of 300 steps
    assert found["validation:exact_match"] == [trained_artifact.metrics["overall"]["exact_match"]]
    assert found["train:loss"][-1] < found["train:loss"][0]


def test_training_writes_the_evaluation_report_into_the_artifact(trained_artifact):
    evaluation = trained_artifact.model_dir / "evaluation"
    html = (evaluation / "report.html").read_text(encoding="utf-8")
    for name in ("Sleeve Length", "Pattern", "Fabric"):
        assert name in html
    for png in ("accuracy.png", "loss.png"):
        assert (evaluation / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(evaluation.glob("confusion_*.png"))


_RELOAD = r"""
import json, sys, torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor
from loom.artifact import read_manifest
from training.data import PixelCache, read_vqa_csv
from training.evaluate import generate_answers
model_dir, data_dir, images = sys.argv[1:4]
schema = read_manifest(model_dir)["schema"]
processor = Blip2Processor.from_pretrained(model_dir)
model = Blip2ForConditionalGeneration.from_pretrained(model_dir)
examples = read_vqa_csv(f"{data_dir}/vqa_val.csv", schema)
answers = generate_answers(model, processor, examples, PixelCache(images, processor.image_processor), schema,
                           batch_size=128)
print(json.dumps([a.text for a in answers]))
"""


def test_merged_model_answers_like_the_adapter_and_reloads_offline(trained_artifact):
    from peft import PeftModel
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from training.data import PixelCache, read_vqa_csv
    from training.evaluate import generate_answers

    schema = read_manifest(trained_artifact.model_dir)["schema"]
    processor = Blip2Processor.from_pretrained(trained_artifact.base_dir)
    examples = read_vqa_csv(trained_artifact.data_dir / "vqa_val.csv", schema)
    pixels = PixelCache(trained_artifact.catalog_dir / "images", processor.image_processor)

    base = Blip2ForConditionalGeneration.from_pretrained(trained_artifact.base_dir, dtype=torch.float32)
    adapter_model = PeftModel.from_pretrained(base, str(trained_artifact.adapter_dir))
    adapter_answers = [a.text for a in generate_answers(adapter_model, processor, examples, pixels, schema,
                                                        batch_size=128)]
    merged = Blip2ForConditionalGeneration.from_pretrained(trained_artifact.model_dir)
    merged_answers = [a.text for a in generate_answers(merged, processor, examples, pixels, schema, batch_size=128)]
    assert merged_answers == adapter_answers

    predicted = [r["predicted"] for r in _rows(trained_artifact.model_dir / "evaluation" / "predictions.csv")]
    assert [schema.parse_answer(a)[1] if schema.parse_answer(a) else a for a in merged_answers] == predicted

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _RELOAD, str(trained_artifact.model_dir),
                           str(trained_artifact.data_dir), str(trained_artifact.catalog_dir / "images")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == merged_answers


def test_a_restarted_job_resumes_from_its_last_checkpoint(trained_artifact, tmp_path, capsys):
    """A spot restart after training finished: no step is trained again, the artifact is the same."""
    from training.train import main

    sm_root = tmp_path / "opt_ml"
    shutil.copytree(trained_artifact.sm_root, sm_root, symlinks=True)
    shutil.rmtree(sm_root / "model")
    assert main(["--sm-root", str(sm_root)]) == 0
    log = capsys.readouterr().out
    assert "resumed from" in log and "step-00000300" in log and "train_loss" not in log
    again = json.loads((sm_root / "model" / "metrics.json").read_text())
    assert again["training"]["steps"] == 300
    for name in VISIBLE:
        assert again["attributes"][name]["exact_match"] == trained_artifact.metrics["attributes"][name]["exact_match"]
