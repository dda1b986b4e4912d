"""Calibration on fixtures with known answers: exact binomial statistics, the fixed-sequence rule, the stored
evidence, moved targets, and the report's figures."""

from __future__ import annotations

import math

import pytest

from loom.calibration import (
    Calibration,
    binomial_tail,
    calibrate_attribute,
    check_min_precision,
    evidence_from,
    fit_calibration,
    fixed_sequence,
    lower_bound,
    min_stated,
    p_value,
)


def outcomes(*groups):
    """Answers from (confidence, right, wrong) groups."""
    return [(ok, c) for c, right, wrong in groups for ok in [True] * right + [False] * wrong]


# -- exact statistics against known values --------------------------------------------------------------------
def test_binomial_tail_matches_direct_sums():
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(10, 10, 0.95) == pytest.approx(0.95 ** 10)
    # P(X >= 8), X ~ Binomial(10, 0.5) = (45 + 10 + 1) / 1024
    assert binomial_tail(8, 10, 0.5) == pytest.approx(56 / 1024)
    direct = sum(math.comb(200, i) * 0.9 ** i * 0.1 ** (200 - i) for i in range(190, 201))
    assert binomial_tail(190, 200, 0.9) == pytest.approx(direct, rel=1e-9)


def test_long_tails_through_the_incomplete_beta_function_match_the_exact_sum(monkeypatch):
    import loom.calibration as calibration

    cases = [(4900, 5000, 0.98), (9500, 10000, 0.95), (2000, 5000, 0.41), (120, 3000, 0.05)]
    fast = [calibration.binomial_tail(k, n, p) for k, n, p in cases]  # more than 400 terms: incomplete beta
    monkeypatch.setattr(calibration, "_DIRECT_TERMS", 10 ** 9)
    exact = [calibration.binomial_tail(k, n, p) for k, n, p in cases]
    assert fast == pytest.approx(exact, rel=1e-9)


def test_clopper_pearson_lower_bound_known_values():
    # With no error the one-sided bound is (1 - confidence) ** (1 / n): 5 of 5 right shows only 0.549, and
    # 59 of 59 is the fewest that shows 0.95 at 95 % (58 of 58 does not).
    assert lower_bound(5, 5, 0.95) == pytest.approx(0.5493, abs=1e-4)
    assert lower_bound(59, 59, 0.95) >= 0.95 > lower_bound(58, 58, 0.95)
    assert min_stated(0.95, 0.95) == 59 and min_stated(0.9, 0.95) == 29 and min_stated(1.0, 0.95) is None
    # Beta quantiles: Beta(0.05; 1, 10) = 1 - 0.95 ** (1/10); Beta(0.05; 95, 6) = 0.8977 (95 of 100 right).
    assert lower_bound(1, 10, 0.95) == pytest.approx(1 - 0.95 ** 0.1, rel=1e-6)
    assert lower_bound(95, 100, 0.95) == pytest.approx(0.8977, abs=5e-4)
    assert lower_bound(0, 10) == 0.0
    # The bound is where the binomial p-value crosses 1 - confidence: the two tests agree.
    q = lower_bound(190, 200, 0.95)
    assert binomial_tail(190, 200, q) == pytest.approx(0.05, rel=1e-6)
    assert p_value(190, 200, q - 1e-4) < 0.05 < p_value(190, 200, q + 1e-4)


# -- the rule -------------------------------------------------------------------------------------------------
def test_the_lowest_threshold_shown_by_fixed_sequence_testing():
    # 80 right at 0.9, 30 right at 0.8, one wrong at 0.7, then 20 wrong at 0.3.
    entry = calibrate_attribute(outcomes((0.9, 80, 0), (0.8, 30, 0), (0.7, 0, 1), (0.3, 0, 20)))
    assert entry.threshold == pytest.approx(0.7)  # 110 of 111 right: lower bound 0.958 >= 0.95
    assert (entry.stated, entry.examples) == (111, 131)
    assert entry.precision == pytest.approx(110 / 111) and entry.lower_bound == pytest.approx(lower_bound(110, 111))
    assert entry.coverage == pytest.approx(111 / 131) and entry.reason is None
    # Laxer targets go lower: at 0.3, 110 of 131 right show 0.777, so 0.75 is shown there but 0.8 is not.
    assert entry.reached(0.75, 0.95).threshold == pytest.approx(0.3)
    assert entry.reached(0.8, 0.95).threshold == pytest.approx(0.7)
    assert entry.reached(1.0, 0.95) is None  # no finite evidence shows 1.0


def test_testing_stops_at_the_first_threshold_that_fails():
    # The top 60 answers hold 2 errors: 58/60 shows only 0.90; testing stops there, even though all 200
    # answers, 198 right, would show 0.97: a threshold below a failed test is never chosen.
    data = outcomes((0.99, 58, 2), (0.5, 140, 0))
    assert calibrate_attribute(data).threshold is None
    assert lower_bound(198, 200) > 0.95


def test_five_lucky_answers_are_not_evidence():
    # The old rule stated this attribute at 0.97 (5 of 5 right, "at least 5 stated"); 5/5 shows 0.549.
    data = outcomes((0.99, 3, 0), (0.97, 2, 0), (0.5, 10, 30))
    entry = calibrate_attribute(data)
    assert entry.threshold is None and entry.reason == "not_enough_evidence"
    assert entry.precision is None and entry.lower_bound is None and entry.coverage == 0.0 and entry.stated == 0


def test_no_threshold_states_fewer_answers_than_the_guarantee_needs():
    import random

    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 300)
        accuracy = rng.uniform(0.8, 1.0)
        data = [(rng.random() < accuracy, round(rng.random(), 3)) for _ in range(n)]
        for target in (0.8, 0.9, 0.95):
            entry = calibrate_attribute(data, target)
            if entry.chosen is not None:
                assert entry.stated >= min_stated(target) and entry.lower_bound >= target - 1e-9


def test_ties_are_stated_together_and_unscored_answers_count_in_coverage():
    data = [(True, 0.8)] * 6 + [(False, 0.8)] + [(True, None)] * 3  # unparsed answers have no confidence
    total, points = evidence_from(data)
    assert total == 10 and points == ((0.8, 7, 6),)
    assert fixed_sequence(points, 0.45, 0.95) == (0.8, 7, 6)  # 6 of 7 right show 0.479
    assert fixed_sequence(points, 0.5, 0.95) is None


def test_fit_groups_by_attribute_and_round_trips_through_the_manifest_dict():
    records = [("Colour", True, 0.9 - i / 1000) for i in range(80)] + [("Fabric", i % 3 == 0, 0.7) for i in range(90)]
    calibration = fit_calibration(records)
    assert calibration.attributes["Colour"].threshold == pytest.approx(0.821)
    assert calibration.attributes["Colour"].coverage == 1.0
    assert calibration.attributes["Fabric"].threshold is None
    data = calibration.to_dict()
    assert data["confidence"] == 0.95 and data["min_stated"] == 59
    colour = data["attributes"]["Colour"]
    assert {k: colour[k] for k in ("stated", "examples", "precision", "coverage", "confidence", "reason")} == {
        "stated": 80, "examples": 80, "precision": 1.0, "coverage": 1.0, "confidence": 0.95, "reason": None}
    assert colour["lower_bound"] == pytest.approx(0.05 ** (1 / 80), abs=1e-4)
    assert data["attributes"]["Fabric"]["reason"] == "not_enough_evidence"
    again = Calibration.from_dict(data)
    assert again == calibration
    with pytest.raises(KeyError):
        calibration.threshold("Neck")


def test_a_request_moves_the_target_under_the_same_rule():
    records = [("Fabric", ok, c) for ok, c in outcomes((0.9, 70, 0), (0.6, 60, 10), (0.2, 20, 40))]
    calibration = fit_calibration(records)
    assert calibration.threshold("Fabric") == pytest.approx(0.9)
    assert calibration.threshold("Fabric", 0.95) == pytest.approx(0.9)
    assert calibration.threshold("Fabric", 0.85) == pytest.approx(0.6)  # 130 of 140 right: bound 0.882
    assert calibration.threshold("Fabric", 0.7) == pytest.approx(0.6)  # 150 of 200 at 0.2: bound 0.695 < 0.7
    assert calibration.threshold("Fabric", 0.65) == pytest.approx(0.2)
    assert calibration.threshold("Fabric", 1.0) is None
    point = calibration.point("Fabric", 0.85)
    assert (point.stated, point.correct) == (140, 130)


@pytest.mark.parametrize("bad", [0.2, 1.5, "0.9", True, None])
def test_min_precision_bounds(bad):
    with pytest.raises(ValueError, match="min_precision"):
        check_min_precision(bad)
    assert check_min_precision(0.8) == 0.8


@pytest.mark.parametrize("data", [
    {"attributes": {}},
    {"target_precision": 0.95, "attributes": {}},  # no confidence: written before the guarantee
    {"target_precision": 0.95, "confidence": 0.95, "attributes": {"A": {"examples": 5, "evidence": [[0.9, 6, 3]]}}},
    {"target_precision": 0.95, "confidence": 1.5, "attributes": {}},
])
def test_malformed_calibration_is_refused(data):
    with pytest.raises(ValueError, match="malformed calibration"):
        Calibration.from_dict(data)


def test_an_older_manifest_is_refitted_from_its_records(tmp_path):
    from loom.artifact import read_calibration, write_calibration, write_json
    from loom.schema import SchemaError

    records = [("Colour", True, 0.9 - i / 1000) for i in range(80)] + [("Fit", True, 0.99)] * 5
    write_json(tmp_path / "loom_manifest.json", {"schema": {}})
    old = {"target_precision": 0.95, "min_stated": 5, "attributes": {
        "Colour": {"threshold": 0.5, "precision": 1.0, "coverage": 1.0, "examples": 80, "curve": []},
        "Fit": {"threshold": 0.99, "precision": 1.0, "coverage": 1.0, "examples": 5, "curve": []}}}
    write_calibration(tmp_path, old, records)
    calibration = read_calibration(tmp_path, {"calibration": old})
    assert calibration.attributes["Colour"].threshold == pytest.approx(0.821)
    assert calibration.attributes["Fit"].threshold is None  # its 5 lucky answers no longer state it
    (tmp_path / "evaluation" / "calibration.csv").unlink()
    with pytest.raises(SchemaError, match="calibrate the artifact again"):
        read_calibration(tmp_path, {"calibration": old})
    assert read_calibration(tmp_path, {}) is None


# -- the report's figures -------------------------------------------------------------------------------------
def test_report_draws_reliability_and_precision_coverage_with_the_chosen_point(tmp_path):
    from PIL import Image

    from training.report import plot_calibration, plot_reliability, reliability_bins

    records = [("Colour", True, 0.9 - i / 1000) for i in range(80)] + [("Fabric", i % 3 == 0, 0.7) for i in range(20)]
    calibration = fit_calibration(records)
    path = plot_calibration(records, calibration, ["Colour", "Fabric"], {"Colour": "Colour"}, tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 200
    path = plot_reliability(records, ["Colour", "Fabric"], {}, tmp_path / "r.png")
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 200
    bins = reliability_bins([(True, 0.95), (False, 0.91), (True, 0.15), (True, None), (True, 1.0)])
    assert bins == [(0.1, 0.2, 1.0, 1), (0.9, 1.0, pytest.approx(2 / 3), 3)]
