"""The worker's model: its loading state, and the bounded queue of requests waiting for it.

`ModelSlot` loads the predictor in a background thread, so that `/ping` answers 503 while it loads.

`ModelQueue` runs every model call on one model thread, behind a bounded admission:

- A request is admitted only while fewer than `max_pending` admitted requests are unfinished; past that
  it is refused at once with 503 and a JSON reason (back-pressure), before its body is read. The
  request threads of gunicorn's gthread pool that are not admitted stay free, so `/ping` never waits
  behind inference (gunicorn's pool is one first-in-first-out queue: docs/endpoint-contract.md).
- An admitted request waits for its model calls until its deadline (`request_timeout_s`); then it is
  answered 504 and its thread is free again. A model call that has not started is cancelled; one that
  runs keeps the model thread until it ends, and its admission is given back only then.
- A model call that has run for more than `stuck_after_s` makes `/ping` report the worker unhealthy,
  so that SageMaker replaces the instance instead of queueing requests behind a hung GPU.
- When the worker is told to stop (`stop(within_s)`, on SIGTERM: serve.py), every admitted request's
  deadline becomes at most that: it is answered (503, or a JSON Lines request's remaining lines as error
  lines) before gunicorn's graceful timeout ends the worker, never dropped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from loom.errors import StatusError

log = logging.getLogger("loom.serve")

_POLL_S = 0.1  # how often a waiting request looks at its deadline


class ModelSlot:
    """The worker's predictor and its loading state: loading, ready, or failed (with the reason)."""

    def __init__(self, predictor: Any = None, load_timeout_s: float | None = None):
        self.predictor = predictor
        self.error: str | None = None
        self.started = time.monotonic()
        self.load_timeout_s = load_timeout_s
        self.loader: threading.Thread | None = None

    def load_in_background(self, factory: Callable[[], Any]) -> threading.Thread:
        """Start loading the predictor that `factory` returns; `state` says how far it got."""
        def run() -> None:
            try:
                self.predictor = factory()
                log.info("model loaded in %.1f s", time.monotonic() - self.started)
            except Exception as exc:  # reported by /ping as a 500: the endpoint must not go InService
                log.exception("model failed to load")
                self.error = f"the model failed to load: {exc!r}"

        self.loader = threading.Thread(target=run, name="loom-model-loader", daemon=True)
        self.loader.start()
        return self.loader

    @property
    def state(self) -> str:
        """"ok", "loading" or "failed" (then `error` says why)."""
        if self.predictor is not None:
            return "ok"
        if (self.error is None and self.load_timeout_s
                and time.monotonic() - self.started > self.load_timeout_s):
            self.error = f"the model did not load within MODEL_LOAD_TIMEOUT={self.load_timeout_s:g} s"
        return "failed" if self.error else "loading"

    def ready_predictor(self) -> Any:
        """The predictor, or the StatusError a request gets while there is none (503 loading, 500 failed)."""
        state = self.state
        if state == "failed":
            raise StatusError(500, self.error or "the model failed to load")
        if state == "loading":
            raise StatusError(503, "the model is still loading: retry shortly")
        return self.predictor


class ModelQueue:
    """One model thread per worker, at most `max_pending` admitted requests, a deadline for each."""

    def __init__(self, max_pending: int, request_timeout_s: float, stuck_after_s: float):
        if max_pending < 1 or request_timeout_s <= 0 or stuck_after_s <= 0:
            raise ValueError("max_pending >= 1, request_timeout_s > 0 and stuck_after_s > 0 are required")
        self.max_pending = max_pending
        self.request_timeout_s = request_timeout_s
        self.stuck_after_s = stuck_after_s
        self._admissions = threading.BoundedSemaphore(max_pending)
        self._model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="loom-model")
        self._busy_since: float | None = None
        self.stop_at: float | None = None  # monotonic time by which every admitted request must be answered

    def stop(self, within_s: float) -> None:
        """The worker stops: every admitted request ends within `within_s` (503 past it); none is admitted."""
        stop_at = time.monotonic() + max(0.0, within_s)
        self.stop_at = stop_at if self.stop_at is None else min(self.stop_at, stop_at)

    @contextmanager
    def admitted(self) -> Iterator["Admission"]:
        """Admit one request for the duration of the block, or raise StatusError(503) at once when full."""
        if self.stop_at is not None:
            raise StatusError(503, "this worker is stopping: retry, another instance or worker will answer")
        if not self._admissions.acquire(blocking=False):
            raise StatusError(503, f"the model is busy: {self.max_pending} requests are already waiting for it "
                                   f"on this worker (MAX_PENDING_REQUESTS); retry shortly")
        admission = Admission(self, time.monotonic() + self.request_timeout_s)
        try:
            yield admission
        finally:
            admission.close()

    def busy_for(self) -> float:
        """Seconds the model call that runs now has been running (0.0 when idle)."""
        since = self._busy_since
        return time.monotonic() - since if since is not None else 0.0

    def stuck_reason(self) -> str | None:
        """Why this worker should be replaced, or None while its model calls end in sane time."""
        busy = self.busy_for()
        if busy > self.stuck_after_s:
            return (f"one model call has run for {busy:.0f} s, past MODEL_STUCK_AFTER_S={self.stuck_after_s:g} s: "
                    f"the model is stuck; replace this instance")
        return None

    def _timed(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        self._busy_since = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self._busy_since = None


class Admission:
    """One admitted request: runs its model calls on the model thread until its deadline."""

    def __init__(self, queue: ModelQueue, deadline: float):
        self.queue = queue
        self.deadline = deadline
        self._running: concurrent.futures.Future | None = None

    def time_left(self) -> float:
        """Seconds until this request must be answered: its deadline, or sooner when the worker stops."""
        stop_at = self.queue.stop_at
        return (self.deadline if stop_at is None else min(self.deadline, stop_at)) - time.monotonic()

    def expired(self) -> StatusError:
        """The error of a request whose time is up: 503 when the worker stops, else 504."""
        stop_at = self.queue.stop_at
        if stop_at is not None and stop_at < self.deadline:
            return StatusError(503, "the server is stopping (SIGTERM) and could not finish this request "
                                    "in time: send it again")
        return self._timeout()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` on the model thread; StatusError(504) when the deadline passes first (503 when
        the worker stops first)."""
        if self.time_left() <= 0:
            raise self.expired()
        future = self.queue._model_thread.submit(self.queue._timed, fn, args, kwargs)
        while True:  # in short waits: a stop may bring the deadline forward meanwhile
            remaining = self.time_left()
            if remaining <= 0:
                if not future.cancel():
                    self._running = future  # it holds the model thread: give the admission back when it ends
                raise self.expired()
            try:
                return future.result(timeout=min(remaining, _POLL_S))
            except concurrent.futures.TimeoutError:
                continue

    def _timeout(self) -> StatusError:
        limit = self.queue.request_timeout_s
        return StatusError(504, f"the model did not answer within REQUEST_TIMEOUT_S={limit:g} s; "
                                f"send fewer products per request or retry later")

    def close(self) -> None:
        release = self.queue._admissions.release
        if self._running is not None:  # called at once if it has ended meanwhile
            self._running.add_done_callback(lambda _: release())
        else:
            release()
