"""The metric lines the `train` program prints and the SageMaker metric definitions that parse them.

Lines look like

    loom_metric train_loss=0.1234 step=50 epoch=1.25 learning_rate=0.00098
    loom_metric val_exact_match=0.93 val_baseline_exact_match=0.21 val_unknown_value_rate=0.01
    loom_metric val_exact_match.sleeve_length=0.92 val_baseline_exact_match.sleeve_length=0.3

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
