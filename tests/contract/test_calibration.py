"""Calibration on fixtures with known scores: the lowest threshold that reaches the target precision."""

from __future__ import annotations

import pytest

from loom.calibration import (
    Calibration,
    calibrate_attribute,
    check_min_precision,
    fit_calibration,
    precision_curve,
)


def outcomes(*pairs):
    return [(bool(ok), c) for ok, c in pairs]


def test_lowest_threshold_reaching_the_target():
    # Sorted by confidence: 10 right answers at 0.9..0.81, then one wrong at 0.8, then 9 right, then 10 wrong.
    data = [(1, 0.9 - i / 100) for i in range(10)] + [(0, 0.80)] + [(1, 0.79 - i / 100) for i in range(9)]
    data += [(0, 0.3 - i / 100) for i in range(10)]
    entry = calibrate_attribute(outcomes(*data), target_precision=0.95, min_stated=5)
    # At 0.71 the 20 stated answers hold 19 right (0.95): the lowest threshold that reaches it.
    assert entry.threshold == pytest.approx(0.71)
    assert entry.precision == pytest.approx(0.95)
    assert entry.coverage == pytest.approx(20 / 30, abs=1e-4)
    assert entry.examples == 30
    # A stricter target stops above the wrong answer at 0.8.
    assert entry.reached(1.0)[0] == pytest.approx(0.81)
    assert entry.reached(1.0)[2] == pytest.approx(10 / 30, abs=1e-4)
    # A laxer target goes lower and states more.
    threshold, precision, coverage = entry.reached(0.5)
    assert precision >= 0.5 and threshold < 0.71 and coverage > 20 / 30


def test_an_attribute_reaching_the_target_nowhere_is_never_stated():
    data = [(i % 2, 0.99 - i / 100) for i in range(40)]  # right half the time at every confidence
    entry = calibrate_attribute(outcomes(*data), target_precision=0.95, min_stated=5)
    assert entry.threshold is None and entry.precision is None and entry.coverage == 0.0
    calibration = Calibration(0.95, {"Fabric": entry})
    assert calibration.threshold("Fabric") is None
    assert calibration.threshold("Fabric", 0.5) is not None  # a catalog team reviewing by hand may see more


def test_a_few_lucky_answers_at_the_top_do_not_make_an_attribute_stated():
    data = [(1, 0.99), (1, 0.98), (1, 0.97)] + [(0, 0.9 - i / 100) for i in range(30)]
    assert calibrate_attribute(outcomes(*data), 0.95, min_stated=5).threshold is None
    assert calibrate_attribute(outcomes(*data), 0.95, min_stated=3).threshold == pytest.approx(0.97)


def test_ties_are_stated_together_and_unscored_answers_count_in_coverage():
    data = [(1, 0.8)] * 6 + [(0, 0.8)] + [(1, None)] * 3  # unparsed answers have no confidence
    total, points = precision_curve(outcomes(*data), min_stated=1)
    assert total == 10
    assert points == [(0.8, pytest.approx(6 / 7), pytest.approx(0.7))]


def test_fit_groups_by_attribute_and_round_trips_through_the_manifest_dict():
    records = [("Colour", True, 0.9 - i / 100) for i in range(20)] + [("Fabric", i % 3 == 0, 0.7) for i in range(20)]
    calibration = fit_calibration(records, target_precision=0.95)
    assert calibration.attributes["Colour"].threshold == pytest.approx(0.71)
    assert calibration.attributes["Colour"].coverage == 1.0
    assert calibration.attributes["Fabric"].threshold is None
    again = Calibration.from_dict(calibration.to_dict())
    assert again == calibration
    with pytest.raises(KeyError):
        calibration.threshold("Neck")


@pytest.mark.parametrize("bad", [0.2, 1.5, "0.9", True, None])
def test_min_precision_bounds(bad):
    with pytest.raises(ValueError, match="min_precision"):
        check_min_precision(bad)
    assert check_min_precision(0.8) == 0.8


def test_malformed_calibration_is_refused():
    with pytest.raises(ValueError, match="malformed calibration"):
        Calibration.from_dict({"attributes": {}})


def test_report_plots_precision_against_coverage_with_the_chosen_point(tmp_path):
    from PIL import Image

    from training.report import plot_calibration

    records = [("Colour", True, 0.9 - i / 100) for i in range(20)] + [("Fabric", i % 3 == 0, 0.7) for i in range(20)]
    calibration = fit_calibration(records)
    path = plot_calibration(records, calibration, ["Colour", "Fabric"], {"Colour": "Colour"}, tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 200
