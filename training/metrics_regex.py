"""The metric lines the `train` program prints and the SageMaker metric definitions that parse them.

Lines look like

    loom_metric train_loss=0.1234 step=50 epoch=1.25 learning_rate=0.00098
    loom_metric val_exact_match=0.93 val_baseline_exact_match=0.21 val_unknown_value_rate=0.01
    loom_metric val_exact_match.sleeve_length=0.92 val_baseline_exact_match.sleeve_length=0.3

The program also prints the lines the fashion post's metric definitions parse (`SEED_METRIC_DEFINITIONS`):

    Loss: 0.123400          after every loom_metric train_loss line (its value)
    Epoch Loss: 0.118000    when an epoch ends: the mean of that epoch's logged train_loss values

This module has no third-party imports, so that the job launcher (boto3 only) can import
`METRIC_DEFINITIONS` for `create_training_job(AlgorithmSpecification={"MetricDefinitions": ...})`.
"""

from __future__ import annotations

import re
from typing import Iterable

PREFIX = "loom_metric"
_NUMBER = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf))"


def _regex(key: str) -> str:
    # The key must follow a space (so val_exact_match never matches val_baseline_exact_match) and end at "=".
    return rf"{PREFIX}\b.*?\s{re.escape(key)}={_NUMBER}"


_KEYS = (
    ("train:loss", "train_loss"),
    ("train:learning_rate", "learning_rate"),
    ("train:epoch", "epoch"),
    ("validation:exact_match", "val_exact_match"),
    ("validation:baseline_exact_match", "val_baseline_exact_match"),
    ("validation:unknown_value_rate", "val_unknown_value_rate"),
)

# SageMaker metric definitions ({"Name", "Regex"}; the first group is the value).
METRIC_DEFINITIONS: list[dict[str, str]] = [{"Name": name, "Regex": _regex(key)} for name, key in _KEYS]


def slug(attribute: str) -> str:
    """An attribute name as it appears in metric keys: "Sleeve Length" -> "sleeve_length"."""
    return re.sub(r"[^0-9a-z]+", "_", attribute.lower()).strip("_")


def attribute_metric_definitions(attributes: Iterable[str]) -> list[dict[str, str]]:
    """Definitions for the per-attribute validation lines, for a launcher that knows the attributes."""
    return [
        {"Name": f"validation:{kind}:{slug(name)}", "Regex": _regex(f"val_{kind}.{slug(name)}")}
        for name in attributes for kind in ("exact_match", "baseline_exact_match")
    ]


def metric_line(**values) -> str:
    """`loom_metric key=value ...` (floats to 6 significant digits); keys may hold dots."""
    parts = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    return " ".join([PREFIX, *parts])


# The fashion post's training job defines these metrics (its regexes, verbatim); `SeedLossLines` prints lines
# they match, so a job launched with the post's estimator still charts its loss.
SEED_METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:loss", "Regex": r"Loss: ([0-9\.]+)"},
    {"Name": "train:epoch_loss", "Regex": r"Epoch Loss: ([0-9\.]+)"},
]
_TRAIN_LOSS = re.compile(rf"{PREFIX}\b.*?\strain_loss={_NUMBER}")
_EPOCH = re.compile(rf"{PREFIX}\b.*?\sepoch={_NUMBER}")


class SeedLossLines:
    """Wraps a log function: every line passes through; a `loom_metric train_loss=... epoch=...` line is
    followed by `Loss: <value>`, and the first line past an epoch's end by `Epoch Loss: <mean>` of that
    epoch's logged losses. `finish()` prints the last, unfinished epoch's line."""

    def __init__(self, log):
        self.log, self.losses, self.epoch = log, [], 0

    def __call__(self, line: str) -> None:
        self.log(line)
        loss, epoch = _TRAIN_LOSS.search(line), _EPOCH.search(line)
        if loss is None:
            return
        value = float(loss.group(1))
        if value == value and value >= 0:  # the post's regex reads plain decimals only
            self.log(f"Loss: {value:.6f}")
            self.losses.append(value)
        if epoch is not None and float(epoch.group(1)) >= self.epoch + 1:
            self.epoch = int(float(epoch.group(1)))
            self._epoch_line()

    def finish(self) -> None:
        self._epoch_line()

    def _epoch_line(self) -> None:
        if self.losses:
            self.log(f"Epoch Loss: {sum(self.losses) / len(self.losses):.6f}")
            self.losses = []
