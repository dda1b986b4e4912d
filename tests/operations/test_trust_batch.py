"""Batch commands with merchant facts: records carry them, results keep withheld and conflicts, the run
summarises the conflicts, and descriptions use only stated and merchant-given values."""

from __future__ import annotations

import csv
import json

import pytest

from inference.api.describe import OfflineWriter
from operations import batch_records as records
from operations.batch_describe import describe_results
from operations.batch_transform import with_facts

OUTPUT = {"id": "7", "attributes": {"baseColour": "Red", "Fabric": "Cotton"},
          "withheld": {"Fit": {"value": "Slim Fit", "confidence": 0.3, "reason": "below_threshold"}},
          "confidence": {"baseColour": 0.97, "Fabric": 0.2, "Fit": 0.3}, "raw": {}, "unknown_values": [],
          "sources": {"baseColour": "model", "Fabric": "merchant"}, "product_type": None,
          "conflicts": [{"attribute": "Fabric", "merchant_value": "Cotton", "model_value": "Linen",
                         "confidence": 0.99}]}


def test_known_attributes_csv_reaches_each_record(tmp_path):
    sheet = tmp_path / "known.csv"
    sheet.write_text("id,Fabric,Fit\n7,Cotton,\n8,, Slim  Fit \n")
    known = records.read_known_attributes(sheet)
    assert known == {"7": {"Fabric": "Cotton"}, "8": {"Fit": "Slim Fit"}}
    products = [records.ProductImage(pid, lambda: b"img") for pid in ("7", "9")]
    shards = list(records.write_shards(with_facts(products, known, 0.9), tmp_path / "out", records_per_file=5,
                                       max_payload_mb=1))
    lines = [json.loads(line) for line in shards[0].path.read_text().splitlines()]
    assert lines[0]["known_attributes"] == {"Fabric": "Cotton"} and lines[0]["min_precision"] == 0.9
    assert "known_attributes" not in lines[1] and lines[1]["min_precision"] == 0.9
    with pytest.raises(ValueError, match="min_precision"):
        list(with_facts(products, known, 0.2))
    (tmp_path / "bad.csv").write_text("sku,Fabric\n1,Cotton\n")
    with pytest.raises(ValueError, match="'id' column"):
        records.read_known_attributes(tmp_path / "bad.csv")


def test_results_keep_withheld_and_conflicts_and_the_run_counts_them(tmp_path):
    results = records.join_shard(["7", "8"], [OUTPUT, {"id": "8", "attributes": {}, "confidence": {}}])
    assert results[0]["withheld"] == OUTPUT["withheld"] and results[0]["conflicts"] == OUTPUT["conflicts"]
    assert records.summarise_conflicts(results) == {"Fabric": 1}
    path = records.write_results(results, tmp_path / "results.csv")
    row = next(csv.DictReader(path.open()))
    assert json.loads(row["withheld"])["Fit"]["reason"] == "below_threshold"
    assert json.loads(row["conflicts"])[0]["model_value"] == "Linen"


def test_batch_descriptions_state_only_stated_and_merchant_values():
    results = records.join_shard(["7"], [OUTPUT])
    stats = describe_results(results, OfflineWriter())
    assert stats["described"] == 1
    text = results[0]["description"]
    assert "Red" in text and "Cotton" in text  # the merchant's fabric is stated even with a low model confidence
    assert "Slim Fit" not in text and "Linen" not in text
