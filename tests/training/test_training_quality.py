"""The quality gate's verdict, the served/adapter comparison, the baseline's criterion and its keeping."""

from __future__ import annotations

import pytest

from training.config import from_hyperparameters
from training.data import VqaExample
from training.evaluate import Prediction, names_value
from training.quality import baseline_key, disagreements, gate, load_baseline, save_baseline


@pytest.mark.parametrize("text,value,named", [
    ("Red", "red", True), ("a RED striped shirt", "Red", True), ("Long Sleeves", "long  sleeves", True),
    ("reddish", "Red", False), ("Short Sleeves", "Long Sleeves", False), ("", "Red", False),
    ("Colour: Off White", "Off White", True), ("white", "Off White", False), ("C++ fabric", "C++", True),
])
def test_the_baseline_counts_whole_words_in_any_case(text, value, named):
    assert names_value(text, value) is named


def _metrics(exact, base, adapter=None):
    return {"overall": {"exact_match": exact, "baseline_exact_match": base, "adapter_exact_match": adapter},
            "attributes": {"Pattern": {"exact_match": exact, "adapter_exact_match": adapter}}}


def test_the_gate_needs_the_baseline_beaten_and_the_floor_reached():
    on = from_hyperparameters({})
    assert gate(_metrics(0.6, 0.4), on)["passed"]
    verdict = gate(_metrics(0.4, 0.4), on)
    assert not verdict["passed"] and "does not beat the baseline 0.4000" in verdict["reason"]
    floor = from_hyperparameters({"min_exact_match": "0.8"})
    verdict = gate(_metrics(0.6, 0.4), floor)
    assert not verdict["passed"] and "below min_exact_match 0.8000" in verdict["reason"]
    assert not gate(_metrics(0.0, None), on)["passed"]  # no baseline: at least something right
    off = from_hyperparameters({"quality_gate": "false"})
    verdict = gate(_metrics(0.1, 0.4), off)
    assert verdict["passed"] and not verdict["enabled"] and verdict["reason"]


def test_disagreements_name_what_moved_beyond_the_tolerance():
    assert disagreements(_metrics(0.90, 0.1, adapter=0.91), 0.02) == []
    lines = disagreements(_metrics(0.80, 0.1, adapter=0.90), 0.02)
    assert lines == ["Pattern: served 0.800 vs adapter 0.900 (tolerance 0.02)",
                     "overall: served 0.800 vs adapter 0.900 (tolerance 0.02)"]


def test_the_kept_baseline_is_reused_only_for_the_same_questions(tmp_path):
    examples = [VqaExample("1", "q", "Colour: Red", "baseColour", "Red")]
    answers = [Prediction("1", "baseColour", "Red", None, "a red shirt", 0.5)]
    key = baseline_key("base", examples, 16)
    save_baseline(tmp_path, key, answers)
    assert load_baseline(tmp_path, key) == answers
    assert load_baseline(tmp_path, baseline_key("other base", examples, 16)) is None
    assert load_baseline(tmp_path, baseline_key("base", examples, 8)) is None
    assert load_baseline(tmp_path / "missing", key) is None


def test_predict_asks_each_product_once_in_chunks_and_returns_records_in_example_order(tmp_path):
    from runtime.predictor import Answer
    from loom.schema import AttributeSchema
    from training.evaluate import predict
    from training.synthetic import draw_shirt

    schema = AttributeSchema.from_names(["baseColour", "Pattern"])
    for pid in ("a", "b", "c"):
        draw_shirt("Red", "Solid", "Short Sleeves").save(tmp_path / f"{pid}.jpg")
    examples = [VqaExample(pid, schema.question(n), schema.format_answer(n, v), n, v)
                for pid, n, v in [("a", "baseColour", "Red"), ("b", "Pattern", "Solid"), ("a", "Pattern", "Solid"),
                                  ("c", "baseColour", "Blue"), ("b", "baseColour", "Red")]]

    class Fake:  # answers "Colour: Red" / "a striped shirt", and records how it was asked
        def __init__(self):
            self.schema, self.calls = schema, []

        def generate_many(self, requests, max_new_tokens):
            self.calls.append([len(questions) for _, questions in requests])
            return [[Answer("Colour: Red" if "colour" in q else "a striped shirt", [], 0.9) for q in questions]
                    for image, questions in requests]

    fake = Fake()
    records = predict(fake, examples, tmp_path, batch_size=3)
    assert fake.calls == [[2], [2, 1]]  # a's two questions; then b's two and c's one: at most 3 per generation
    assert [(r.id, r.attribute) for r in records] == [(e.id, e.attribute) for e in examples]
    assert [r.predicted for r in records] == ["Red", None, None, "Red", "Red"]
    assert [r.correct for r in records] == [True, False, False, False, True]
    assert records[1].text == "a striped shirt" and records[1].confidence == 0.9
