"""Numeric settings of `serve` are finite and bounded (docs/inference.md), and the model thread outlives
any error: BATCH_WAIT_MS=inf used to raise OverflowError (threading.TIMEOUT_MAX) in ModelQueue._next_batch,
outside the model thread's try, killing it for good: every later request was a 504 while /ping said 200."""

from __future__ import annotations

import threading
import time

import pytest

from endpoint_contract import RGB_PNG, RecordingPredictor, b64
from inference.server.app import create_app
from inference.server.model_queue import ModelQueue
from inference.server.serve import NUMBER_BOUNDS, ServeSettings


@pytest.mark.parametrize("name", sorted(set(NUMBER_BOUNDS) - {"GUNICORN_GRACEFUL_TIMEOUT"}))
@pytest.mark.parametrize("raw", ["inf", "nan", "-inf", "1e400"])
def test_non_finite_settings_stop_serve_with_one_line(name, raw):
    env = {name: raw}
    with pytest.raises(SystemExit) as caught:
        ServeSettings.from_env(env)
    message = str(caught.value)
    assert message.startswith(f"serve: {name}=") and "\n" not in message


@pytest.mark.parametrize("name, too_big", [("BATCH_WAIT_MS", "1001"), ("MAX_BATCH_PRODUCTS", "257"),
                                           ("MAX_PENDING_REQUESTS", "10001"), ("IMAGE_DECODE_THREADS", "65"),
                                           ("REQUEST_TIMEOUT_S", "3601"), ("MAX_BODY_MB", "1025"),
                                           ("SAGEMAKER_BIND_TO_PORT", "65536")])
def test_settings_past_their_upper_bound_are_refused(name, too_big):
    with pytest.raises(SystemExit, match=f"serve: {name}=.* must be at most"):
        ServeSettings.from_env({name: too_big})


def test_settings_at_their_bounds_are_taken():
    limits = ServeSettings.from_env({"BATCH_WAIT_MS": "1000", "MAX_BATCH_PRODUCTS": "256",
                                     "REQUEST_TIMEOUT_S": "3600", "MAX_BODY_MB": "1024"}).limits
    assert (limits.batch_wait_ms, limits.batch_products, limits.request_timeout_s) == (1000.0, 256, 3600.0)


def test_the_queue_refuses_an_unbounded_wait():
    for wait in (float("inf"), float("nan"), 10 ** 9):
        with pytest.raises(ValueError):
            ModelQueue(4, 5.0, 30.0, max_batch_products=4, batch_wait_ms=wait)


def post(client):
    return client.post("/invocations", json={"image": b64(RGB_PNG), "attributes": ["baseColour"]})


def test_an_error_while_taking_a_batch_fails_that_request_not_the_model_thread(monkeypatch):
    app = create_app(RecordingPredictor(), request_timeout_s=5.0)
    queue = app.extensions["loom"].queue
    client = app.test_client()
    real = queue._next_batch
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        batch = real()
        if calls["n"] == 1:
            raise OverflowError("timeout value is too large")  # what threading.Condition.wait(inf) raised
        return batch

    monkeypatch.setattr(queue, "_next_batch", flaky)
    started = time.monotonic()
    first = post(client)
    assert first.status_code == 500 and "model queue" in first.get_json()["error"]
    assert time.monotonic() - started < 4.0  # failed at once, not at the 5 s deadline
    assert post(client).status_code == 200  # the model thread lives on
    assert client.get("/ping").status_code == 200


def test_a_dead_model_thread_makes_ping_unhealthy_and_requests_fail_fast(monkeypatch):
    app = create_app(RecordingPredictor(), request_timeout_s=5.0)
    queue = app.extensions["loom"].queue
    client = app.test_client()
    assert post(client).status_code == 200
    done = threading.Event()

    def die(batch):
        done.set()
        raise SystemExit("the thread ends")  # not an Exception: nothing in the loop keeps it

    monkeypatch.setattr(queue, "_run", die)
    started = time.monotonic()
    response = post(client)
    assert done.is_set() and response.status_code == 500
    assert time.monotonic() - started < 4.0
    ping = client.get("/ping")
    assert ping.status_code == 500 and "model thread has stopped" in ping.get_json()["error"]
    assert post(client).status_code == 500
