"""Calibrated thresholds with a guarantee: per attribute, the lowest value confidence at which the stated
answers are shown to reach a precision target with a stated confidence (standard library only: the server
and the Lambda use it).

Training fits them on the validation split (`fit_calibration`, from (attribute, correct, confidence)
records); the manifest stores them with the evidence they rest on; the server reads them back
(`Calibration.from_dict`) and can move the target for a request that asks for another precision
(`Calibration.threshold(name, min_precision)`), under the same rule, from the same stored evidence.

The rule. Answers whose confidence is >= t are stated. For a candidate threshold t (each distinct
confidence seen), n(t) answers are stated and k(t) of them are right. The null hypothesis H(t) says that
the precision of answers stated at t, P(right | confidence >= t), is below the target p; its p-value is the
exact binomial tail P(Binomial(n(t), p) >= k(t)) (conditional on n(t) stated answers). Thresholds are
tested in a fixed sequence from the highest down and testing stops at the first one whose p-value exceeds
alpha = 1 - confidence; the chosen threshold is the lowest one rejected before that. This is fixed-sequence
testing from Learn-then-Test (Angelopoulos, Bates, Candes, Jordan, Lei, "Learn then Test: Calibrating
Predictive Algorithms to Achieve Risk Control", 2021, arXiv:2110.01052, section on fixed-sequence testing):
the chance that any rejected threshold, the chosen one included, has precision below the target is at most
alpha. "p-value <= alpha" is the same statement as "the one-sided Clopper-Pearson lower confidence bound on
precision at level `confidence` is >= p" (`lower_bound`), which is what the manifest reports.

A threshold at which fewer than `min_stated(p, confidence)` answers are stated can never pass (even with no
error: p**n > alpha), so it is not a test in the sequence: it is skipped, not counted as the stopping
failure (which thresholds are skipped depends only on how many answers each states, never on which are
right). With p = 0.95 and confidence 0.95 that minimum is 59 answers. An attribute for which no threshold
passes is withheld with the reason `not_enough_evidence`: the validation answers do not show the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from loom.errors import echo

DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_CONFIDENCE = 0.95  # the probability with which "precision >= target" is shown
RULE = "fixed-sequence binomial test (Learn-then-Test), Clopper-Pearson lower bound"
# A request may move the target within these bounds ("min_precision"): below 0.5 a stated value would be
# wrong as often as right. 1.0 can never be shown on finite evidence: every attribute is then withheld.
MIN_PRECISION_BOUNDS = (0.5, 1.0)
CONFIDENCE_BOUNDS = (0.5, 0.999)
_EPS = 1e-12
_DIRECT_TERMS = 400  # binomial tails with more terms than this use the incomplete beta function


# -- exact binomial statistics (standard library) -------------------------------------------------------------
def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (math.lgamma)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if n - k > _DIRECT_TERMS:
        return _regularized_beta(k, n - k + 1, p)  # the same tail, in O(sqrt(n)) steps
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (P(Binomial(n, x) >= k) = I_x(k, n - k + 1)):
    the continued fraction of Numerical Recipes (betacf, modified Lentz), on the side where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_beta(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return min(1.0, max(0.0, front * h / a))


def p_value(correct: int, stated: int, target: float) -> float:
    """The exact binomial p-value of "precision < target" given `correct` right out of `stated`."""
    return binomial_tail(correct, stated, target)


def lower_bound(correct: int, stated: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The one-sided Clopper-Pearson lower confidence bound on a proportion at level `confidence`.

    The largest q with P(Binomial(stated, q) >= correct) <= 1 - confidence (the Beta(k, n-k+1) quantile),
    found by bisection on the binomial tail; closed form (1 - confidence) ** (1 / n) when every answer is right.
    """
    if stated <= 0 or correct <= 0:
        return 0.0
    alpha = 1.0 - confidence
    if correct >= stated:
        return alpha ** (1.0 / stated)
    low, high = 0.0, correct / stated  # the tail at the observed share is >= 1/2 > alpha
    for _ in range(100):
        mid = (low + high) / 2
        if binomial_tail(correct, stated, mid) > alpha:
            high = mid
        else:
            low = mid
        if high - low < 1e-12:
            break
    return low


def min_stated(target: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """The fewest stated answers that can show precision >= target (all right: target ** n <= alpha);
    None when no number can (target 1.0)."""
    if target >= 1.0 - _EPS:
        return None
    alpha = 1.0 - confidence
    n = max(1, math.ceil(math.log(alpha) / math.log(target) - 1e-9))
    while target ** n > alpha:
        n += 1
    return n


# -- per attribute ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it states on the validation answers: `stated` answers, `correct` of them right."""

    threshold: float
    stated: int
    correct: int
    examples: int
    confidence: float

    @property
    def precision(self) -> float:
        return self.correct / self.stated

    @property
    def lower_bound(self) -> float:
        return lower_bound(self.correct, self.stated, self.confidence)

    @property
    def coverage(self) -> float:
        return self.stated / self.examples if self.examples else 0.0


def evidence_from(outcomes: Iterable[tuple[bool, float | None]]) -> tuple[int, tuple[tuple[float, int, int], ...]]:
    """(answers, (threshold, stated, correct) at every distinct confidence, threshold descending).

    An answer with confidence None (unparsed, unknown value) is never stated but counts among the answers.
    """
    outcomes = list(outcomes)
    # Six decimals, as evaluation/calibration.csv stores them: a refit from the records gives the same points.
    scored = sorted(((round(float(c), 6), bool(ok)) for ok, c in outcomes if c is not None), key=lambda x: -x[0])
    points = []
    stated = correct = 0
    for i, (confidence, ok) in enumerate(scored):
        stated += 1
        correct += ok
        if i + 1 == len(scored) or scored[i + 1][0] != confidence:  # ties are stated together
            points.append((confidence, stated, correct))
    return len(outcomes), tuple(points)


def fixed_sequence(evidence: Iterable[tuple[float, int, int]], target: float,
                   confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, int, int] | None:
    """The lowest threshold rejected by fixed-sequence testing from the highest down (module docstring), as
    its (threshold, stated, correct); None when none is: the evidence does not show the target."""
    needed = min_stated(target, confidence)
    if needed is None:
        return None
    alpha = 1.0 - confidence
    chosen = None
    for threshold, stated, correct in evidence:  # descending threshold, ascending stated
        if stated < needed:
            continue  # cannot pass with any number right: not a test in the sequence
        if p_value(correct, stated, target) > alpha:
            break
        chosen = (threshold, stated, correct)
    return chosen


@dataclass(frozen=True)
class AttributeCalibration:
    """One attribute: its evidence (threshold, stated, correct per distinct confidence, descending) over
    `examples` validation answers, and the threshold chosen at the calibration's target (None: withheld)."""

    examples: int
    evidence: tuple[tuple[float, int, int], ...]
    chosen: OperatingPoint | None

    @property
    def threshold(self) -> float | None:
        return None if self.chosen is None else self.chosen.threshold

    @property
    def precision(self) -> float | None:
        return None if self.chosen is None else self.chosen.precision

    @property
    def lower_bound(self) -> float | None:
        return None if self.chosen is None else self.chosen.lower_bound

    @property
    def coverage(self) -> float:
        return 0.0 if self.chosen is None else self.chosen.coverage

    @property
    def stated(self) -> int:
        return 0 if self.chosen is None else self.chosen.stated

    @property
    def reason(self) -> str | None:
        """Why the attribute is never stated at the target (None: it has a threshold)."""
        return "not_enough_evidence" if self.chosen is None else None

    def reached(self, target: float, confidence: float) -> OperatingPoint | None:
        """The operating point for another target (same rule, same evidence); None: not shown."""
        point = fixed_sequence(self.evidence, target, confidence)
        return None if point is None else OperatingPoint(*point, self.examples, confidence)

    def curve(self, confidence: float, max_points: int = 300) -> list[tuple[float, float, float, float]]:
        """(threshold, coverage, precision, lower bound), threshold descending: at every distinct confidence,
        or at `max_points` of them spread evenly (the first, the last and the chosen one always included) so
        that a large validation split draws in seconds."""
        points = list(self.evidence)
        if len(points) > max_points:
            keep = {round(i * (len(points) - 1) / (max_points - 1)) for i in range(max_points)}
            points = [p for i, p in enumerate(points)
                      if i in keep or (self.chosen is not None and p[0] == self.chosen.threshold)]
        return [(t, n / self.examples, k / n, lower_bound(k, n, confidence)) for t, n, k in points]

    def summary(self, confidence: float) -> dict[str, Any]:
        """What the manifest, metrics.json and the report say of the attribute (no evidence)."""
        return {"threshold": self.threshold, "stated": self.stated, "examples": self.examples,
                "precision": None if self.precision is None else round(self.precision, 4),
                "lower_bound": None if self.lower_bound is None else round(self.lower_bound, 4),
                "coverage": round(self.coverage, 4), "confidence": confidence, "reason": self.reason}

    def to_dict(self, confidence: float) -> dict[str, Any]:
        return {**self.summary(confidence), "evidence": [list(p) for p in self.evidence]}


def calibrate_attribute(outcomes: Iterable[tuple[bool, float | None]], target_precision: float = DEFAULT_TARGET_PRECISION,
                        confidence: float = DEFAULT_CONFIDENCE) -> AttributeCalibration:
    """The threshold of one attribute's (correct, confidence) answers under the rule of the module docstring."""
    examples, evidence = evidence_from(outcomes)
    point = fixed_sequence(evidence, target_precision, confidence)
    chosen = None if point is None else OperatingPoint(*point, examples, confidence)
    return AttributeCalibration(examples, evidence, chosen)


@dataclass(frozen=True)
class Calibration:
    """Thresholds for every calibrated attribute at `target_precision`, shown with `confidence`."""

    target_precision: float
    attributes: dict[str, AttributeCalibration] = field(default_factory=dict)
    confidence: float = DEFAULT_CONFIDENCE
    _moved: dict = field(default_factory=dict, compare=False, repr=False)  # (name, target) -> threshold

    @property
    def min_stated(self) -> int | None:
        """The fewest stated answers that can show the target at this confidence (59 for 0.95 at 95 %)."""
        return min_stated(self.target_precision, self.confidence)

    def point(self, name: str, min_precision: float | None = None) -> OperatingPoint | None:
        """The operating point of `name` at `min_precision` (default: the trained target); None: not shown.

        Raises KeyError for an attribute that was not calibrated (the caller decides what that means)."""
        entry = self.attributes[name]
        if min_precision is None or abs(min_precision - self.target_precision) < _EPS:
            return entry.chosen
        key = (name, round(float(min_precision), 9))
        if key not in self._moved:
            self._moved[key] = entry.reached(float(min_precision), self.confidence)
        return self._moved[key]

    def threshold(self, name: str, min_precision: float | None = None) -> float | None:
        """The threshold of `name` at `min_precision`; None: the evidence does not show that precision
        (withheld as `not_enough_evidence`). KeyError for an attribute that was not calibrated."""
        point = self.point(name, min_precision)
        return None if point is None else point.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"target_precision": self.target_precision, "confidence": self.confidence, "rule": RULE,
                "min_stated": self.min_stated,
                "attributes": {name: a.to_dict(self.confidence) for name, a in self.attributes.items()}}

    def summary(self) -> dict[str, Any]:
        """The manifest's figures without the evidence (for metrics.json and logs)."""
        return {"target_precision": self.target_precision, "confidence": self.confidence, "rule": RULE,
                "min_stated": self.min_stated,
                "attributes": {name: a.summary(self.confidence) for name, a in self.attributes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """Read the manifest's "calibration" entry; ValueError when it is malformed or holds no evidence
        (a manifest written before thresholds came with a guarantee: refit it from its records,
        `from_records`)."""
        try:
            target = float(data["target_precision"])
            confidence = float(data["confidence"])
            attributes = {}
            for name, a in data["attributes"].items():
                examples = int(a["examples"])
                evidence = tuple((float(t), int(n), int(k)) for t, n, k in a["evidence"])
                if any(not 0 <= k <= n <= examples for _, n, k in evidence):
                    raise ValueError(f"{name}: evidence counts out of range")
                point = fixed_sequence(evidence, target, confidence)
                attributes[str(name)] = AttributeCalibration(
                    examples, evidence, None if point is None else OperatingPoint(*point, examples, confidence))
            check_confidence(confidence)
            return cls(target, attributes, confidence)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed calibration: {exc!r}") from exc

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, bool, float | None]], data: Mapping[str, Any]) -> "Calibration":
        """Refit an older manifest's calibration (no evidence) from its records at its target, under this rule."""
        return fit_calibration(records, float(data.get("target_precision", DEFAULT_TARGET_PRECISION)),
                               float(data.get("confidence", DEFAULT_CONFIDENCE)))


def check_min_precision(value: Any) -> float:
    """A request's "min_precision" as a float within MIN_PRECISION_BOUNDS; ValueError saying what is allowed."""
    low, high = MIN_PRECISION_BOUNDS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ValueError(f"'min_precision' must be a number from {low} to {high}, got {echo(value)}")
    return float(value)


def check_confidence(value: Any) -> float:
    """A calibration confidence level within CONFIDENCE_BOUNDS; ValueError saying what is allowed."""
    low, high = CONFIDENCE_BOUNDS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ValueError(f"the calibration confidence must be a number from {low} to {high}, got {value!r}")
    return float(value)


def fit_calibration(records: Iterable[tuple[str, bool, float | None]],
                    target_precision: float = DEFAULT_TARGET_PRECISION,
                    confidence: float = DEFAULT_CONFIDENCE) -> Calibration:
    """Thresholds per attribute from validation records (attribute, correct, value confidence)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    check_confidence(confidence)
    grouped: dict[str, list[tuple[bool, float | None]]] = {}
    for name, correct, confidence_of_answer in records:
        grouped.setdefault(name, []).append((correct, confidence_of_answer))
    return Calibration(target_precision, {name: calibrate_attribute(outcomes, target_precision, confidence)
                                          for name, outcomes in grouped.items()}, confidence)
