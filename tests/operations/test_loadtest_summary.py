"""The load test's summary: the median of the rounds with their range, so that noise between rounds shows."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import loadtest  # noqa: E402


def test_the_summary_gives_the_median_and_the_range_of_the_rounds():
    assert loadtest.spread([17.9, 16.9, 19.5], ".2f") == "17.90 (16.90-19.50)"
    assert loadtest.spread([512.4], ".0f") == "512"  # one round: no range to give
    assert loadtest.spread([], ".1f") == "n/a"


def test_the_rounds_alternate_which_server_is_loaded_first():
    assert [loadtest.phase_order(r) for r in range(3)] == [["off", "on"], ["on", "off"], ["off", "on"]]
