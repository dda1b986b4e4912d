"""`make demo`'s script end to end on a small synthetic catalog: every stage runs, the summary is written,
the report exists and the server it started is gone afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_stage_and_stops_its_server(tmp_path):
    work, cache = tmp_path / "demo", tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-m", "operations.cli", "demo", "--workdir", str(work), "--cache", str(cache),
         "--products", "240", "--base-steps", "300", "--show", "2",
         # 48 validation products cannot show 0.95 with 95 % confidence (that takes 59 stated answers);
         # 0.9 takes 29, so the small demo still states something.
         "--hyperparameters", json.dumps({"target_precision": 0.9}),
         "--no-search"],  # the search stage is tests/operations/test_search_page.py's subject
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert set(summary["stage_seconds"]) == {"catalog", "prepare", "base model", "train, evaluate, merge",
                                             "serve + API"}
    assert summary["api_products"] == 2
    assert set(summary["accuracy"]) == {"articleType", "Fabric", "Fit", "Collar", "Pattern", "Neck",
                                        "Sleeve Length", "Sleeve Styling", "baseColour"}
    # What was stated over every validation product, per attribute (loom.abstention.stated_quality).
    stated = summary["stated"]
    assert set(stated["attributes"]) == set(summary["accuracy"])
    assert stated["overall"]["stated"] > 0 and 0.0 <= stated["overall"]["precision"] <= 1.0
    assert "withheld (reason, confidence)" in run.stdout and "(merchant)" in run.stdout
    # Per attribute: the threshold, the answers it rests on, precision and its lower bound, coverage, or why not.
    calibration = summary["calibration"]
    assert calibration["target_precision"] == 0.9 and calibration["confidence"] == 0.95
    assert calibration["min_stated"] == 29 and set(calibration["attributes"]) == set(summary["accuracy"])
    for entry in calibration["attributes"].values():
        if entry["threshold"] is None:
            assert entry["reason"] == "not_enough_evidence" and entry["coverage"] == 0
        else:
            assert entry["stated"] >= 29 and entry["precision"] >= entry["lower_bound"] >= 0.9
    assert "precision >= 0.9 shown with 95% confidence" in run.stdout and "lower" in run.stdout
    assert Path(summary["paths"]["report"]).is_file()
    assert "serve is healthy at http://127.0.0.1:" in run.stdout
    assert "description:" in run.stdout and "stated" in run.stdout
    # The tiny base was built into the given cache, and the server's log shows it shut down.
    assert len(list(cache.glob("tiny-base-*/tiny_base.json"))) == 1
    log = Path(summary["paths"]["server_log"]).read_text()
    assert "Shutting down" in log or "Handling signal" in log, log[-2000:]
