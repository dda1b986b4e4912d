"""In-process checks of the two deadlines the hostile-input suite drives over HTTP: a stop (SIGTERM) brings an
admitted request's deadline forward, and an image decode is waited for only until the request's deadline."""

from __future__ import annotations

import threading
import time

import pytest

from hostile_images import progressive_jpeg
from inference.server.model_queue import ModelQueue
from inference.server.serve import STOP_MARGIN_S, ServeSettings, gunicorn_options, stop_window_s
from loom.errors import StatusError
from runtime.images import DecodePool


def test_settings_read_the_decode_threads_and_the_stop_window_fits_the_graceful_timeout():
    settings = ServeSettings.from_env({"IMAGE_DECODE_THREADS": "3"})
    assert settings.limits.decode_threads == 3
    assert ServeSettings.from_env({}).limits.decode_threads == 2
    with pytest.raises(SystemExit):
        ServeSettings.from_env({"IMAGE_DECODE_THREADS": "0"})
    # The default graceful timeout is 25 s (SageMaker's SIGKILL comes at 30 s): requests get 23 s of it.
    assert stop_window_s(25) == 25 - STOP_MARGIN_S and 0 < stop_window_s(1) < 1
    assert callable(gunicorn_options(ServeSettings.from_env({}))["post_worker_init"])


def test_a_stop_answers_an_admitted_request_with_503_before_its_own_deadline():
    queue = ModelQueue(max_pending=2, request_timeout_s=60, stuck_after_s=300)
    release = threading.Event()
    errors: list[StatusError] = []

    def request() -> None:
        with queue.admitted() as admission:
            try:
                admission.run(release.wait, 10)
            except StatusError as exc:
                errors.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.1)
    stopped = time.monotonic()
    queue.stop(0.3)
    thread.join(5)
    release.set()
    assert errors and errors[0].status == 503 and "stopping" in errors[0].message
    assert 0.25 < time.monotonic() - stopped < 1.0
    with pytest.raises(StatusError) as refused:  # nothing is admitted once the worker stops
        with queue.admitted():
            pass
    assert refused.value.status == 503


def test_a_decode_is_waited_for_only_until_the_deadline():
    queue = ModelQueue(max_pending=2, request_timeout_s=0.2, stuck_after_s=300)
    heavy = progressive_jpeg(4096, 23)  # within every limit, about a second of decoding
    pool = DecodePool(1)
    with queue.admitted() as admission:
        started = time.monotonic()
        with pytest.raises(StatusError) as late:
            pool.decode(heavy, 4096 * 4096, draft_side=None, admission=admission)
    assert late.value.status == 504 and "REQUEST_TIMEOUT_S" in late.value.message
    assert time.monotonic() - started < 0.5
    # The heavy decode still holds the pool's one thread (bounded concurrency): a small image waits for it,
    # then decodes, within a longer deadline.
    patient = ModelQueue(max_pending=2, request_timeout_s=30, stuck_after_s=300)
    with patient.admitted() as admission:
        assert pool.decode(progressive_jpeg(64), 4096 * 4096, draft_side=None, admission=admission).size == (64, 64)
