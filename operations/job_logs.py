"""Follow a SageMaker job's CloudWatch log lines while `loom launch --wait` waits for it.

SageMaker writes a training job's output to the log group /aws/sagemaker/TrainingJobs, one stream per
instance named `<job name>/algo-<n>-<epoch seconds>`. Streams are looked up by that prefix on every poll
(DescribeLogStreams), so a stream created later (another instance, a restarted job) is followed too.

Each stream is read forward with GetLogEvents and its `nextForwardToken`, so no line is shown twice. Rules
from the CloudWatch Logs API reference (GetLogEvents, also in botocore's logs service model): a page can be
partly full or even empty while more events wait, and the end of the stream is reached when the returned
`nextForwardToken` equals the `nextToken` sent; a token expires after 24 hours (we then read again from the
last timestamp shown, skipping the events already shown at it).
https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_GetLogEvents.html
https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_DescribeLogStreams.html

Reading logs never ends the wait: a log group or stream that does not exist yet (ResourceNotFoundException)
is simply not there yet; a missing permission is said once and the wait goes on with statuses only;
any other error is said once per kind of error and the next poll tries again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# The permissions an operator needs on that group for `--wait` to show log lines (docs/deploy.md).
LOG_PERMISSIONS = ("logs:DescribeLogStreams", "logs:GetLogEvents")
MAX_PAGES_PER_POLL = 50  # a bound per stream and poll; the next poll goes on from the saved token
_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException"}


@dataclass
class _StreamPosition:
    token: str | None = None          # the nextForwardToken to send next
    last_timestamp: int | None = None  # the timestamp of the last event shown
    shown_at_last: int = 0            # how many events shown carry that timestamp
    skip: int = 0                     # events at last_timestamp to skip after a restart without a token


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)


class JobLogs:
    """The new log lines of one job's streams on each `poll()`; never raises for AWS errors."""

    def __init__(self, logs: Any, job_name: str, group: str = TRAINING_LOG_GROUP,
                 warn: Callable[[str], None] | None = None):
        self.logs, self.group, self.prefix = logs, group, job_name + "/"
        self.streams: dict[str, _StreamPosition] = {}
        self.enabled = True
        self._warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self._warned: set[str] = set()

    def poll(self) -> list[str]:
        """Lines written since the last poll, in timestamp order across streams; prefixed with the
        stream's name (after the job name) when the job has more than one stream."""
        if not self.enabled:
            return []
        from botocore.exceptions import BotoCoreError, ClientError

        events: list[tuple[int, str, str]] = []
        try:
            for name in self._stream_names():
                self.streams.setdefault(name, _StreamPosition())
            for name in sorted(self.streams):
                self._read(name, events)
        except ClientError as exc:
            self._failed(_error_code(exc), str(exc))
        except BotoCoreError as exc:
            self._failed(type(exc).__name__, str(exc))
        events.sort(key=lambda event: event[0])  # stable: one stream's events keep their order
        several = len(self.streams) > 1
        return [(f"{name[len(self.prefix):]} | " if several else "") + message.rstrip("\n")
                for _, name, message in events]

    def _stream_names(self) -> list[str]:
        from botocore.exceptions import ClientError

        names: list[str] = []
        request: dict[str, Any] = {"logGroupName": self.group, "logStreamNamePrefix": self.prefix}
        while True:
            try:
                page = self.logs.describe_log_streams(**request)
            except ClientError as exc:
                if _error_code(exc) == "ResourceNotFoundException":  # the group is created with the first job
                    return names
                raise
            names += [stream["logStreamName"] for stream in page.get("logStreams", [])]
            if not page.get("nextToken") or page["nextToken"] == request.get("nextToken"):
                return names
            request["nextToken"] = page["nextToken"]

    def _read(self, name: str, shown: list[tuple[int, str, str]]) -> None:
        """Append the stream's new events to `shown` as they are read, so that an error on a later page
        loses none of the events whose position was already passed."""
        from botocore.exceptions import ClientError

        position = self.streams[name]
        for _ in range(MAX_PAGES_PER_POLL):
            request: dict[str, Any] = {"logGroupName": self.group, "logStreamName": name, "startFromHead": True}
            if position.token:
                request["nextToken"] = position.token
            elif position.last_timestamp is not None:
                request["startTime"] = position.last_timestamp
            try:
                page = self.logs.get_log_events(**request)
            except ClientError as exc:
                code = _error_code(exc)
                if code == "ResourceNotFoundException":  # listed but not readable yet, or gone
                    return
                if code == "InvalidParameterException" and position.token:  # an expired token
                    position.token, position.skip = None, position.shown_at_last
                    continue
                raise
            for event in page.get("events", []):
                if position.skip and event["timestamp"] == position.last_timestamp:
                    position.skip -= 1
                    continue
                position.skip = 0
                if event["timestamp"] == position.last_timestamp:
                    position.shown_at_last += 1
                else:
                    position.last_timestamp, position.shown_at_last = event["timestamp"], 1
                shown.append((event["timestamp"], name, event["message"]))
            token = page.get("nextForwardToken")
            if not token or token == request.get("nextToken"):
                return
            position.token = token

    def _failed(self, code: str, text: str) -> None:
        if code in _DENIED:
            self.enabled = False
            self._warn(f"warning: cannot read the job's log ({code}); showing statuses only. Allow "
                       f"{' and '.join(LOG_PERMISSIONS)} on log group {self.group} (docs/deploy.md, step 6)")
        elif code not in self._warned:
            self._warned.add(code)
            self._warn(f"warning: reading the job's log failed ({' '.join(text.split())}); trying again at the "
                       "next status check")
