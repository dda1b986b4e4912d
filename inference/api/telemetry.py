"""X-Ray subsegments and CloudWatch metrics for the API Lambda (Powertools Tracer and Metrics).

Tracing. Terraform turns on active tracing; `subsegment(name)` wraps each paid call (SageMaker
InvokeEndpoint, Bedrock Converse and InvokeModel) in an X-Ray subsegment with the route's annotations.
The Tracer is made on the first traced call, not at import: Powertools' Tracer imports the X-Ray SDK and
botocore (about 0.7 s here), which would triple the cold import; the first paid call imports botocore
anyway. Outside Lambda (tests, local mode) or with POWERTOOLS_TRACE_DISABLED=true nothing is imported and
`subsegment` does nothing, as Powertools itself decides (aws_lambda_powertools/tracing/tracer.py).

Metrics (CloudWatch embedded metric format, one JSON line per request flushed by `metrics.log_metrics`;
namespace POWERTOOLS_METRICS_NAMESPACE, default "Loom"; dimensions service and route). Names and units
are listed in docs/api.md ("Metrics").
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = "loom-api"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or "Loom"
WITHHELD_REASONS = ("below_threshold", "not_applicable", "unknown_value", "unparsed")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
_TRACER: list[Any] = []


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Powertools' own rule: in Lambda (LAMBDA_TASK_ROOT), not under SAM/Chalice local, not disabled."""
    env = os.environ if env is None else env
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in ("1", "true", "yes", "on")
    local = env.get("AWS_SAM_LOCAL") or env.get("AWS_CHALICE_CLI_MODE")
    return bool(env.get("LAMBDA_TASK_ROOT")) and not local and not disabled


def tracer() -> Any | None:
    """The container's Tracer, made on first use; None when tracing is off."""
    if not _TRACER:
        if not tracing_enabled():
            return None
        try:
            from aws_lambda_powertools import Tracer

            _TRACER.append(Tracer(service=SERVICE, auto_patch=False))
        except ImportError:  # a zip built without the X-Ray SDK: answer untraced rather than fail the request
            _TRACER.append(None)
    return _TRACER[0]


def use_tracer(value: Any | None) -> None:
    """Install a Tracer (tests give one with a recording provider); None forgets it."""
    _TRACER.clear()
    if value is not None:
        _TRACER.append(value)


@contextlib.contextmanager
def subsegment(name: str, **annotations: str | int | float | bool) -> Iterator[None]:
    """An X-Ray subsegment `## name` around a paid call, annotated (`service`, `operation`, ...)."""
    current = tracer()
    if current is None:
        yield
        return
    with current.provider.in_subsegment(name=f"## {name}") as segment:
        for key, value in annotations.items():
            segment.put_annotation(key=key, value=value)
        yield


def record_request(route: str, status: int, latency_ms: float, body: Mapping[str, Any] | None = None) -> None:
    """One request's metrics, under dimension `route`: its latency and status class, and for the attribute
    routes what was stated and withheld (by reason) and whether the description covered every attribute.

    Nothing is recorded when metrics are off (POWERTOOLS_METRICS_DISABLED, POWERTOOLS_DEV): Powertools 3.37 then
    skips the flush but keeps the metrics, and prints them anyway once 100 values pile up."""
    if is_metrics_disabled():
        return
    metrics.add_dimension(name="route", value=route)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=latency_ms)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=f"Status{status // 100}xx", unit=MetricUnit.Count, value=1)
    if status != 200 or not body or "withheld" not in body or "sources" not in body:
        return
    stated = sum(1 for source in body["sources"].values() if source == "model")
    withheld = body["withheld"]
    asked = stated + len(withheld)
    metrics.add_metric(name="AttributesStated", unit=MetricUnit.Count, value=stated)
    metrics.add_metric(name="AttributesWithheld", unit=MetricUnit.Count, value=len(withheld))
    if asked:
        metrics.add_metric(name="StatedCoverage", unit=MetricUnit.Percent, value=round(100 * stated / asked, 2))
    for reason in WITHHELD_REASONS:
        count = sum(1 for w in withheld.values() if w.get("reason") == reason)
        metrics.add_metric(name=f"Withheld_{reason}", unit=MetricUnit.Count, value=count)
    coverage = body.get("coverage")
    if isinstance(coverage, dict):
        metrics.add_metric(name="DescriptionComplete", unit=MetricUnit.Count, value=int(bool(coverage.get("complete"))))
