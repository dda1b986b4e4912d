"""The stated precision holds on fresh data: many small validation splits, each calibrated, each threshold
judged by the precision it gives on answers it was not fitted on.

Answers come from a generative model of (confidence, correct) pairs: the confidence c has density
k c^(k-1) on (0, 1) and an answer of confidence c is right with probability a + b c. The precision of the
answers stated at threshold t on a fresh set of unbounded size is then exact:
    precision(t) = a + b E[c | c >= t] = a + b k/(k+1) (1 - t^(k+1)) / (1 - t^k).
A split fails when the threshold it chose has precision(t) < target. Loom's rule (loom/calibration.py:
fixed-sequence binomial tests, Learn-then-Test, arXiv:2110.01052) promises that at most 1 - confidence = 5 %
of splits fail; the earlier rule (the lowest threshold whose stated answers reach the target on the split,
with at least 5 stated) is run on the same splits and fails far more often, so this test would fail under it.
"""

from __future__ import annotations

import random

import pytest

from loom.calibration import DEFAULT_CONFIDENCE, DEFAULT_TARGET_PRECISION, calibrate_attribute

TARGET = DEFAULT_TARGET_PRECISION
RISK = 1 - DEFAULT_CONFIDENCE  # 0.05
SPLITS = 600


def old_rule(outcomes, target=TARGET, min_stated=5):
    """The rule before thresholds came with a guarantee: the lowest threshold whose stated answers reach the
    target on the split itself, with at least `min_stated` of them (None: reached nowhere)."""
    scored = sorted(((c, ok) for ok, c in outcomes), key=lambda x: -x[0])
    chosen, stated, right = None, 0, 0
    for i, (c, ok) in enumerate(scored):
        stated, right = stated + 1, right + ok
        if (i + 1 == len(scored) or scored[i + 1][0] != c) and stated >= min_stated and right / stated >= target:
            chosen = c
    return chosen


class AnswerModel:
    """Confidences with density k c^(k-1) on (0, 1); right with probability a + b c."""

    def __init__(self, k: float, a: float, b: float):
        self.k, self.a, self.b = k, a, b

    def draw(self, rng: random.Random, n: int) -> list[tuple[bool, float]]:
        answers = []
        for _ in range(n):
            c = rng.random() ** (1 / self.k)
            answers.append((rng.random() < self.a + self.b * c, c))
        return answers

    def fresh_precision(self, t: float) -> float:
        k = self.k
        return self.a + self.b * k / (k + 1) * (1 - t ** (k + 1)) / (1 - t ** k)


def failure_shares(model: AnswerModel, n: int, splits: int = SPLITS, seed: int = 0) -> dict[str, float]:
    """Over `splits` validation splits of `n` answers: the share whose chosen threshold falls below the target
    on fresh data, for Loom's rule and the old one, and the mean fresh coverage of Loom's rule."""
    rng = random.Random(seed)
    new_fail = old_fail = 0
    stated_splits = 0
    for _ in range(splits):
        answers = model.draw(rng, n)
        threshold = calibrate_attribute(answers, TARGET).threshold
        if threshold is not None:
            stated_splits += 1
            new_fail += model.fresh_precision(threshold) < TARGET
        old = old_rule(answers)
        old_fail += old is not None and model.fresh_precision(old) < TARGET
    return {"new": new_fail / splits, "old": old_fail / splits, "stated": stated_splits / splits}


# Precision reaches 0.95 only above some confidence (at about the top 40 %, 45 %, 25 % of answers), as a
# fine-tuned attribute that is often but not always right; 100-400 answers, as a small validation split.
MODELS = {"uniform": AnswerModel(1, 0.80, 0.19), "skewed": AnswerModel(4, 0.70, 0.29),
          "mild": AnswerModel(2, 0.85, 0.14)}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n", [100, 200, 400])
def test_precision_holds_on_fresh_data_within_the_stated_risk_and_the_old_rule_breaks_it(name, n):
    shares = failure_shares(MODELS[name], n)
    print(f"{name} n={n}: splits below target on fresh data: Loom {shares['new']:.3f}, old rule "
          f"{shares['old']:.3f}; splits with a threshold {shares['stated']:.3f}")
    assert shares["new"] <= RISK, shares
    assert shares["old"] > RISK * 4, shares  # the old rule fails well beyond the stated risk


def test_a_good_attribute_keeps_most_of_its_coverage():
    # Right 98-100 % of the time: on 150 answers the guarantee still states most of them on average. One split
    # in several loses everything: an error among the first answers tested stops the sequence (the price of
    # fixed-sequence testing; never a precision below target).
    model = AnswerModel(4, 0.98, 0.02)
    rng = random.Random(1)
    coverages = [calibrate_attribute(model.draw(rng, 150), TARGET).coverage for _ in range(200)]
    mean = sum(coverages) / len(coverages)
    print(f"good attribute, 150 answers: mean coverage {mean:.3f}")
    assert mean > 0.8, mean
