"""Calibrated thresholds: per attribute, the lowest value confidence at which stated answers reach a precision.

Training fits them on the validation split (`fit_calibration`, from (attribute, correct, confidence)
records); the manifest stores them; the server reads them back (`Calibration.from_dict`) and can move
them for a request that asks for another precision (`Calibration.threshold(name, min_precision)`).

The rule: answers whose confidence is >= t are stated. For each candidate t (each distinct confidence
seen), precision(t) = correct stated / stated and coverage(t) = stated / all answers of the attribute.
The chosen threshold for a target p is the lowest t with precision(t) >= p and at least `min_stated`
stated answers (a single lucky answer at the top does not make an attribute trustworthy). An attribute
that reaches p at no threshold is never stated. Standard library only: the server and the Lambda use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from loom.errors import echo

DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_MIN_STATED = 5
# A request may move the target within these bounds ("min_precision"): below 0.5 a stated value would be
# wrong as often as right; 1.0 states only what was never wrong on the validation split.
MIN_PRECISION_BOUNDS = (0.5, 1.0)


@dataclass(frozen=True)
class AttributeCalibration:
    """One attribute: the chosen threshold (None: never stated), what it reached, and the precision staircase.

    `curve` holds (threshold, precision, coverage) points in ascending threshold whose precision is higher
    than at every lower threshold: exactly the points where "the lowest threshold reaching p" can land.
    """

    threshold: float | None
    precision: float | None
    coverage: float
    examples: int
    curve: tuple[tuple[float, float, float], ...] = ()

    def reached(self, min_precision: float) -> tuple[float | None, float | None, float]:
        """(threshold, precision, coverage) for a target precision; (None, None, 0.0) when unreachable."""
        for point in self.curve:
            if point[1] >= min_precision - 1e-12:
                return point
        return None, None, 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "precision": self.precision, "coverage": self.coverage,
                "examples": self.examples, "curve": [list(p) for p in self.curve]}


@dataclass(frozen=True)
class Calibration:
    """Thresholds for every calibrated attribute at `target_precision`."""

    target_precision: float
    attributes: dict[str, AttributeCalibration] = field(default_factory=dict)
    min_stated: int = DEFAULT_MIN_STATED

    def threshold(self, name: str, min_precision: float | None = None) -> float | None:
        """The threshold of `name` at `min_precision` (default: the trained target); None: never stated.

        Raises KeyError for an attribute that was not calibrated (the caller decides what that means).
        """
        entry = self.attributes[name]
        if min_precision is None or abs(min_precision - self.target_precision) < 1e-12:
            return entry.threshold
        return entry.reached(min_precision)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"target_precision": self.target_precision, "min_stated": self.min_stated,
                "attributes": {name: a.to_dict() for name, a in self.attributes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """Read the manifest's "calibration" entry; ValueError when it is malformed."""
        try:
            attributes = {
                str(name): AttributeCalibration(
                    threshold=None if a["threshold"] is None else float(a["threshold"]),
                    precision=None if a.get("precision") is None else float(a["precision"]),
                    coverage=float(a.get("coverage", 0.0)),
                    examples=int(a.get("examples", 0)),
                    curve=tuple((float(t), float(p), float(c)) for t, p, c in a.get("curve", [])),
                )
                for name, a in data["attributes"].items()
            }
            return cls(float(data["target_precision"]), attributes, int(data.get("min_stated", DEFAULT_MIN_STATED)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed calibration: {exc!r}") from exc


def check_min_precision(value: Any) -> float:
    """A request's "min_precision" as a float within MIN_PRECISION_BOUNDS; ValueError saying what is allowed."""
    low, high = MIN_PRECISION_BOUNDS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ValueError(f"'min_precision' must be a number from {low} to {high}, got {echo(value)}")
    return float(value)


def precision_curve(outcomes: Iterable[tuple[bool, float | None]],
                    min_stated: int = DEFAULT_MIN_STATED) -> tuple[int, list[tuple[float, float, float]]]:
    """(answers, every (threshold, precision, coverage) point with >= min_stated stated), threshold descending.

    An answer with confidence None (unparsed, unknown value) is never stated but counts in coverage.
    """
    outcomes = list(outcomes)
    total = len(outcomes)
    scored = sorted(((c, bool(ok)) for ok, c in outcomes if c is not None), key=lambda x: -x[0])
    points = []
    stated = correct = 0
    for i, (confidence, ok) in enumerate(scored):
        stated += 1
        correct += ok
        last_of_tie = i + 1 == len(scored) or scored[i + 1][0] != confidence
        if last_of_tie and stated >= min_stated:
            points.append((confidence, correct / stated, stated / total))
    return total, points


def calibrate_attribute(outcomes: Iterable[tuple[bool, float | None]], target_precision: float,
                        min_stated: int = DEFAULT_MIN_STATED) -> AttributeCalibration:
    """The lowest threshold whose stated answers reach `target_precision` (see the module docstring)."""
    total, points = precision_curve(outcomes, min_stated)
    staircase, best = [], -1.0
    for threshold, precision, coverage in reversed(points):  # ascending threshold
        if precision > best:
            staircase.append((round(threshold, 6), round(precision, 4), round(coverage, 4)))
            best = precision
    entry = AttributeCalibration(None, None, 0.0, total, tuple(staircase))
    threshold, precision, coverage = entry.reached(target_precision)
    return AttributeCalibration(threshold, precision, coverage, total, tuple(staircase))


def fit_calibration(records: Iterable[tuple[str, bool, float | None]],
                    target_precision: float = DEFAULT_TARGET_PRECISION,
                    min_stated: int = DEFAULT_MIN_STATED) -> Calibration:
    """Thresholds per attribute from validation records (attribute, correct, value confidence)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    grouped: dict[str, list[tuple[bool, float | None]]] = {}
    for name, correct, confidence in records:
        grouped.setdefault(name, []).append((correct, confidence))
    return Calibration(target_precision, {name: calibrate_attribute(outcomes, target_precision, min_stated)
                                          for name, outcomes in grouped.items()}, min_stated)
