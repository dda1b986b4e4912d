"""The worker's model: its loading state, and the bounded queue of requests waiting for it.

`ModelSlot` loads the predictor in a background thread, so that `/ping` answers 503 while it loads.

`ModelQueue` runs every model call on one model thread, behind a bounded admission, and batches across
requests:

- A request is admitted only while fewer than `max_pending` admitted requests are unfinished; past that
  it is refused at once with 503 and a JSON reason (back-pressure), before its body is read. The
  request threads of gunicorn's gthread pool that are not admitted stay free, so `/ping` never waits
  behind inference (gunicorn's pool is one first-in-first-out queue: docs/endpoint-contract.md).
- An admitted request waits for its model calls until its deadline (`request_timeout_s`); then it is
  answered 504 and its thread is free again. A model call that has not started is cancelled; one that
  runs keeps the model thread until it ends, and its admission is given back only then.
- A model call that has run for more than `stuck_after_s` makes `/ping` report the worker unhealthy,
  so that SageMaker replaces the instance instead of queueing requests behind a hung GPU.
- Batching: a job submitted with `run_batched(fn, items, **params)` means `fn(items, **params)` returns one
  result per item. When the model thread is free it takes the oldest job and every other waiting job with
  the same `fn` and parameters, up to `max_batch_products` items, and answers them all from one call.
  While the model is busy, requests queue up and the next call takes them together; an idle server starts
  at once. `batch_wait_ms` (default 0) lets the first job wait that long for more, and only while other
  admitted requests are still being read and preprocessed. A job past its deadline is answered 504 before
  the call. When a call of several jobs fails, each job is run again alone, so that one bad product fails
  alone.
- When the worker is told to stop (`stop(within_s)`, on SIGTERM: serve.py), every admitted request's
  deadline becomes at most that: it is answered (503, or a JSON Lines request's remaining lines as error
  lines) before gunicorn's graceful timeout ends the worker, never dropped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator

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


@dataclass
class Job:
    """One submitted model call: `fn(*args, **kwargs)`, or with `batched`, `fn(items, **params)`."""

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    deadline: float
    batched: bool = False
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    @property
    def items(self) -> list:
        return self.args[0]

    def key(self) -> Hashable | None:
        """Jobs with equal keys can share one call (same function, same generation settings)."""
        if not self.batched:
            return None
        try:
            return (self.fn, tuple(sorted(self.kwargs.items())))
        except TypeError:  # unhashable or unorderable settings: never shared
            return None


class ModelQueue:
    """One model thread per worker, at most `max_pending` admitted requests, a deadline for each, and
    batched calls of up to `max_batch_products` items across requests."""

    def __init__(self, max_pending: int, request_timeout_s: float, stuck_after_s: float,
                 max_batch_products: int = 1, batch_wait_ms: float = 0.0):
        if max_pending < 1 or request_timeout_s <= 0 or stuck_after_s <= 0:
            raise ValueError("max_pending >= 1, request_timeout_s > 0 and stuck_after_s > 0 are required")
        if max_batch_products < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch_products >= 1 and batch_wait_ms >= 0 are required")
        self.max_pending = max_pending
        self.request_timeout_s = request_timeout_s
        self.stuck_after_s = stuck_after_s
        self.max_batch_products = max_batch_products
        self.batch_wait_s = batch_wait_ms / 1000
        self._admissions = threading.BoundedSemaphore(max_pending)
        self._jobs: collections.deque[Job] = collections.deque()
        self._changed = threading.Condition()
        self._preparing = 0  # admitted requests that have not submitted a job yet
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None
        self.calls: collections.deque[int] = collections.deque(maxlen=1000)  # items per recent model call
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

    # -- the model thread -----------------------------------------------------------------------------------

    def submit(self, job: Job) -> concurrent.futures.Future:
        with self._changed:
            if self._thread is None:  # started on first use: after gunicorn's fork, once per worker
                self._thread = threading.Thread(target=self._serve, name="loom-model", daemon=True)
                self._thread.start()
            self._jobs.append(job)
            self._changed.notify_all()
        return job.future

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except BaseException:  # noqa: BLE001 - the model thread must outlive any job
                log.exception("the model thread failed to answer a batch")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(StatusError(500, "internal error in the model queue"))

    def _next_batch(self) -> list[Job]:
        """The oldest job and every waiting job that can share its call, up to `max_batch_products` items."""
        with self._changed:
            while True:
                while not self._jobs:
                    self._changed.wait()
                first = self._jobs.popleft()
                if first.future.set_running_or_notify_cancel():  # False: its request gave up while it waited
                    break
            key = first.key()
            if key is None:
                return [first]
            batch, size = [first], len(first.items)
            wait_until = time.monotonic() + self.batch_wait_s
            while True:
                for job in list(self._jobs):
                    if size >= self.max_batch_products:
                        break
                    if job.key() == key and size + len(job.items) <= self.max_batch_products:
                        self._jobs.remove(job)
                        if job.future.set_running_or_notify_cancel():
                            batch.append(job)
                            size += len(job.items)
                remaining = wait_until - time.monotonic()
                # Wait only for requests already admitted and still being read: an idle server waits for nothing.
                if size >= self.max_batch_products or remaining <= 0 or self._preparing == 0:
                    return batch
                self._changed.wait(remaining)

    def _run(self, batch: list[Job]) -> None:
        now, stop_at = time.monotonic(), self.stop_at
        live = []
        for job in batch:
            if min(job.deadline, stop_at if stop_at is not None else job.deadline) <= now:
                # Its request is answered (504, or 503 when the worker stops); the model does not work for nobody.
                stopping = stop_at is not None and stop_at < job.deadline
                job.future.set_exception(self._stopping_error() if stopping else self._timeout_error())
            else:
                live.append(job)
        if not live:
            return
        if len(live) == 1 or live[0].key() is None:
            for job in live:
                self._call_one(job)
            return
        items = [item for job in live for item in job.items]
        try:
            results = self._timed(live[0].fn, (items,), live[0].kwargs, len(items))
            if len(results) != len(items):
                raise RuntimeError(f"{len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - one job's product may be at fault: each again alone
            log.warning("a batched call of %d jobs (%d items) failed (%r); running each job alone",
                        len(live), len(items), exc)
            for job in live:
                self._call_one(job)
            return
        start = 0
        for job in live:
            job.future.set_result(results[start:start + len(job.items)])
            start += len(job.items)

    def _call_one(self, job: Job) -> None:
        try:
            result = self._timed(job.fn, job.args, job.kwargs, len(job.items) if job.batched else 1)
        except BaseException as exc:  # noqa: BLE001 - handed to the request thread that waits for it
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _timed(self, fn: Callable[..., Any], args: tuple, kwargs: dict, size: int) -> Any:
        self._busy_since = time.monotonic()
        self.calls.append(size)
        try:
            return fn(*args, **kwargs)
        finally:
            self._busy_since = None

    @staticmethod
    def _stopping_error() -> StatusError:
        return StatusError(503, "the server is stopping (SIGTERM) and could not finish this request in time: "
                                "send it again")

    def _timeout_error(self) -> StatusError:
        return StatusError(504, f"the model did not answer within REQUEST_TIMEOUT_S={self.request_timeout_s:g} s; "
                                f"send fewer products per request or retry later")

    def _prepared(self, delta: int) -> None:
        with self._changed:
            self._preparing += delta
            self._changed.notify_all()


class Admission:
    """One admitted request: runs its model calls on the model thread until its deadline."""

    def __init__(self, queue: ModelQueue, deadline: float):
        self.queue = queue
        self.deadline = deadline
        self._running: concurrent.futures.Future | None = None
        self._preparing = True
        queue._prepared(+1)

    def time_left(self) -> float:
        """Seconds until this request must be answered: its deadline, or sooner when the worker stops."""
        stop_at = self.queue.stop_at
        return (self.deadline if stop_at is None else min(self.deadline, stop_at)) - time.monotonic()

    def expired(self) -> StatusError:
        """The error of a request whose time is up: 503 when the worker stops, else 504."""
        stop_at = self.queue.stop_at
        if stop_at is not None and stop_at < self.deadline:
            return self.queue._stopping_error()
        return self.queue._timeout_error()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` on the model thread, alone; StatusError(504) when the deadline passes first
        (503 when the worker stops first)."""
        return self._wait(Job(fn, args, kwargs, self.deadline))

    def run_batched(self, fn: Callable[..., list], items: list, **params: Any) -> list:
        """`fn(items, **params)` (one result per item) on the model thread, in one call with the waiting jobs
        of other requests that have the same `fn` and `params`; StatusError(504) past the deadline (503 when
        the worker stops first)."""
        return self._wait(Job(fn, (list(items),), params, self.deadline, batched=True))

    def _wait(self, job: Job) -> Any:
        if self.time_left() <= 0:
            raise self.expired()
        future = self.queue.submit(job)
        self._done_preparing()
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

    def _done_preparing(self) -> None:
        if self._preparing:
            self._preparing = False
            self.queue._prepared(-1)

    def close(self) -> None:
        self._done_preparing()
        release = self.queue._admissions.release
        if self._running is not None:  # called at once if it has ended meanwhile
            self._running.add_done_callback(lambda _: release())
        else:
            release()
