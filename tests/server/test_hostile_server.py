"""Hostile input against the real `serve` on 127.0.0.1 (the untrained tiny BLIP-2; the tiny CLIP server of
the session for the CLIP routes): no request may stall, bloat or crash a worker, and none may reach a 500.

Each hostile input is generated here, small on the wire and built to be expensive: a progressive JPEG that
repeats one scan 1,000 times, a palette PNG of 40 MP, a 35-byte GIF that declares a 6324 x 6324 screen,
BMP and WebP headers that declare huge canvases, 5,000-digit integers, JSON nested 100,000 deep, fields of
the wrong type, JSON Lines with failing lines, images that take longer to decode than the deadline, and a
SIGTERM in the middle of a 400-line JSON Lines request. The rules they check are in
docs/endpoint-contract.md ("Image limits", "Hostile input"); every request loop here is bounded.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from hostile_images import bmp_header, gif_screen, palette_png, progressive_jpeg, small_png, webp_canvas
from inference.server.local_server import LocalServer
from loom.image_header import MAX_JPEG_SCANS, MAX_PIXELS

pytestmark = pytest.mark.slow

DRILL = ("tests/serve_drill.py",)
DEEP = 100_000
DEADLINE_S = 1.0
SLACK_S = 0.7  # past the deadline: writing the answer on 2 shared cores
BIG_INT = "9" * 5000  # past CPython's 4,300-digit limit for int(): json.loads raises ValueError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the servers -------------------------------------------------------------------------------------------

class Hostile(LocalServer):
    def post(self, body: bytes | str | dict, content_type: str = "application/json",
             timeout: float = 30) -> tuple[int, float, bytes]:
        data = json.dumps(body) if isinstance(body, dict) else body
        data = data.encode() if isinstance(data, str) else data
        started = time.monotonic()
        status, _, answer = self.request("POST", "/invocations", data, {"Content-Type": content_type}, timeout)
        return status, time.monotonic() - started, answer

    def worker(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])


def started(server: Hostile) -> Hostile:
    try:
        return server.wait_ready(120)
    except BaseException:
        server.stop(5)
        raise


@pytest.fixture(scope="module")
def servers(untrained_artifact, tmp_path_factory):
    """Two `serve`s started together, both with the serving defaults for images (no MAX_IMAGE_PIXELS
    override): `hostile` gives requests 30 s (the model's answers are slow on a loaded machine), `tight`
    gives them DEADLINE_S and decodes one image at a time (the deadline tests)."""
    logs = tmp_path_factory.mktemp("hostile")
    common = {"MAX_PENDING_REQUESTS": "6", "GUNICORN_THREADS": "10"}
    running = [Hostile(untrained_artifact, log_path=logs / "serve.log", env={**common, "REQUEST_TIMEOUT_S": "30"}),
               Hostile(untrained_artifact, log_path=logs / "tight.log",
                       env={**common, "REQUEST_TIMEOUT_S": str(DEADLINE_S), "IMAGE_DECODE_THREADS": "1"})]
    try:
        yield [started(server) for server in running]
    finally:
        for server in running:
            server.stop(timeout=10)


@pytest.fixture(scope="module")
def hostile(servers):
    return servers[0]


@pytest.fixture(scope="module")
def tight(servers):
    return servers[1]


def assert_json_error(status: int, body: bytes, expected: int | tuple[int, ...] = 400, *words: str) -> dict:
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert status in expected, (status, body[:300])
    answer = json.loads(body)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], answer
    assert len(body) < 4096, len(body)  # a reason, never an echo of the input
    for word in words:
        assert word in answer["error"], answer
    return answer


def peak_rss_added_mb(server: Hostile, send) -> tuple[float, object]:
    """The worker's peak resident memory added while `send()` runs, in MB (Linux: clear_refs 5 resets VmHWM)."""
    pid = server.worker()
    Path(f"/proc/{pid}/clear_refs").write_text("5")

    def kib(field: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    before = kib("VmRSS")
    result = send()
    return (kib("VmHWM") - before) / 1024, result


# -- images ------------------------------------------------------------------------------------------------

def test_a_progressive_scan_bomb_is_refused_before_decoding(hostile):
    # The bomb: 2048 x 2048, its last scan repeated 1,000 times, 53 KB; Pillow takes seconds on it.
    bomb = progressive_jpeg(2048, 1000)
    assert len(bomb) < 60_000
    for body, content_type in [(bomb, "image/jpeg"), ({"image": b64(bomb)}, "application/json")]:
        status, elapsed, answer = hostile.post(body, content_type)
        assert_json_error(status, answer, 400, "scans")
        assert elapsed < 1.0, elapsed
    # A standard progressive JPEG (10 scans) and one at the limit are answered.
    for scans in (1, MAX_JPEG_SCANS - 9):
        status, _, answer = hostile.post(progressive_jpeg(64, scans), "image/jpeg")
        assert status == 200, answer[:300]


@pytest.mark.parametrize("name, image", [
    ("palette PNG, 40 MP", lambda: palette_png(8000, 5000)),
    ("GIF screen, 35 bytes", lambda: gif_screen(6324, 6324)),
    ("GIF frame past a 1x1 screen", lambda: gif_screen(1, 1, frame=(6000, 6000))),
    ("BMP header", lambda: bmp_header(30000, 30000)),
    ("WebP canvas", lambda: webp_canvas(8000, 8000)),
])
def test_small_files_that_declare_huge_images_are_refused_without_memory(hostile, name, image):
    data = image()
    assert len(data) < 100_000, (name, len(data))
    added, (status, elapsed, answer) = peak_rss_added_mb(hostile, lambda: hostile.post({"image": b64(data)}))
    assert_json_error(status, answer, 400, "pixels")
    assert elapsed < 1.0 and added < 50, (name, elapsed, added)


def test_an_accepted_image_at_the_pixel_limit_adds_a_bounded_peak(hostile):
    # The largest palette PNG the server accepts (4096 x 4096): its peak is what docs/endpoint-contract.md
    # states per decode (measured there; bounded here with a margin).
    side = int(MAX_PIXELS ** 0.5)
    data = palette_png(side, side)
    added, (status, _, answer) = peak_rss_added_mb(hostile, lambda: hostile.post({"image": b64(data)},
                                                                                  timeout=60))
    assert status in (200, 504), answer[:300]  # 504: a slow machine; the decode still ran
    # Measured 144 MB (docs/endpoint-contract.md); before the bounds it was 356 MB. 200 MB leaves room for the
    # allocator's variation between runs and still fails on the unbounded decode.
    assert added < 200, added


def test_a_decode_past_the_deadline_is_504_and_ping_stays_fast(tight):
    # Images within every limit that still take long to decode: progressive 4096 x 4096 with the most scans allowed (32; about
    # a second each on a quiet machine). Six at once on one decode thread: each request ends by its deadline (200 or 504),
    # and /ping answers in under 100 ms meanwhile (SageMaker allows 2 s; the issue asks for 100 ms).
    heavy = progressive_jpeg(4096, MAX_JPEG_SCANS - 9)
    body = json.dumps({"image": b64(heavy)}).encode()
    results: list[tuple[int, float, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(tight.post(body))) for _ in range(6)]
    for thread in threads:
        thread.start()
    pings = []
    time.sleep(0.05)
    while any(thread.is_alive() for thread in threads) and len(pings) < 60:
        began = time.monotonic()
        assert tight.request("GET", "/ping", timeout=5)[0] == 200
        pings.append(time.monotonic() - began)
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert len(results) == 6 and pings
    for status, elapsed, answer in results:
        assert status in (200, 504), answer[:300]
        if status == 504:
            assert_json_error(status, answer, 504, "REQUEST_TIMEOUT_S")
        assert elapsed < DEADLINE_S + SLACK_S, elapsed
    assert any(status == 504 for status, _, _ in results), results  # the deadline did bite
    assert max(pings) < 0.1, pings


# -- JSON --------------------------------------------------------------------------------------------------

def test_huge_numbers_deep_nesting_and_wrong_types_are_400_with_a_reason(hostile):
    image = b64(small_png())
    bodies = [
        '{"image": ' + BIG_INT + "}",
        '{"image": "%s", "min_precision": %s}' % (image, BIG_INT),
        '{"image": "%s", "parameters": {"max_new_tokens": %s}}' % (image, BIG_INT),
        "[" * DEEP + "]" * DEEP,
        '{"image": ' + "[" * DEEP + "]" * DEEP + "}",
        '{"image": "%s", "known_attributes": %s}' % (image, '{"a": ' * 40 + "1" + "}" * 40),
        json.dumps({"image": ["x"]}),
        json.dumps({"image": image, "attributes": "Fit"}),
        json.dumps({"image": image, "attributes": [["Fit"]]}),
        json.dumps({"image": image, "parameters": [16]}),
        json.dumps({"image": image, "parameters": {"max_new_tokens": "16"}}),
        json.dumps({"image": image, "product_type": ["Shirts"]}),
        json.dumps({"image": image, "known_attributes": ["Fabric"]}),
        json.dumps({"image": image, "known_attributes": {"Fabric": ["Cotton"]}}),
        json.dumps({"image": image, "min_precision": "high"}),
        json.dumps({"image": image, "prompt": {"q": 1}}),
        json.dumps({"image": image, "x" * 100_000: 1}),
        json.dumps(["image"]),
        "1e999999",
        b"\xff\xfe{",
    ]
    for body in bodies:
        status, _, answer = hostile.post(body)
        assert_json_error(status, answer, 400)


def test_clip_routes_refuse_huge_numbers_nesting_and_wrong_types(tiny_clip_server):
    server = tiny_clip_server
    image = b64(small_png())
    bodies = [
        json.dumps({"task": ["search"], "text": "red shirt"}),
        json.dumps({"task": {"search": 1}, "text": "red shirt"}),
        json.dumps({"task": "search", "text": ["red"]}),
        json.dumps({"task": "search", "text": "red", "k": "3"}),
        json.dumps({"task": "search", "text": "red", "filters": [1]}),
        json.dumps({"task": "embed", "texts": "red"}),
        json.dumps({"task": "tags", "image": image, "attributes": {"a": 1}}),
        json.dumps({"task": "tags", "image": image, "labels": ["Red"]}),
        json.dumps({"task": "interrogate", "image": image, "max_terms": [3]}),
        json.dumps({"image": image, "prompt": "a red shirt"}),
        '{"task": "search", "text": "red", "k": ' + BIG_INT + "}",
        "[" * DEEP + "]" * DEEP,
        '{"task": "embed", "texts": ' + "[" * 50 + "]" * 50 + "}",
        json.dumps({"task": "embed", "image": b64(progressive_jpeg(2048, 1000))}),
        json.dumps({"task": "embed", "image": b64(gif_screen(6324, 6324))}),
    ]
    for body in bodies:
        status, _, answer = LocalServer.request(server, "POST", "/invocations", body.encode(),
                                                {"Content-Type": "application/json"})
        assert_json_error(status, answer, 400)
    lines = [json.dumps({"id": "a", "image": image}), '{"id": "b", "image": ' + BIG_INT + "}",
             json.dumps({"id": "c", "image": image, "task": ["tags"]}), "[" * DEEP + "]" * DEEP,
             json.dumps({"id": "d", "image": b64(progressive_jpeg(2048, 1000))}), json.dumps({"id": "e", "image": image})]
    status, _, answer = LocalServer.request(server, "POST", "/invocations", "\n".join(lines).encode(),
                                            {"Content-Type": "application/jsonlines"})
    results = [json.loads(line) for line in answer.decode().splitlines()]
    assert status == 200 and len(results) == 6, answer[:500]
    assert [("error" in r) for r in results] == [False, True, True, True, True, False], results
    assert [r["id"] for r in results] == ["a", None, "c", None, "d", "e"]  # b and the deep line: unparsable


def test_a_failing_line_never_costs_the_other_lines_their_answers(hostile):
    image = b64(small_png())
    lines = [
        json.dumps({"id": "good-1", "image": image}),
        '{"id": "big-int", "image": "%s", "min_precision": %s}' % (image, BIG_INT),
        "[" * DEEP + "]" * DEEP,
        json.dumps({"id": "bomb", "image": b64(progressive_jpeg(2048, 1000))}),
        json.dumps({"id": "gif", "image": b64(gif_screen(6324, 6324))}),
        json.dumps({"id": "types", "image": image, "known_attributes": ["x"]}),
        json.dumps({"id": "good-2", "image": image, "attributes": ["Fit"]}),
        json.dumps({"id": "prompt", "image": image, "prompt": "why?"}),
        json.dumps({"id": "good-3", "image": image}),
    ]
    status, elapsed, answer = hostile.post("\n".join(lines), "application/jsonlines")
    results = [json.loads(line) for line in answer.decode().splitlines()]
    assert status == 200 and len(results) == len(lines), answer[:500]
    assert [r["id"] for r in results if "error" not in r] == ["good-1", "good-2", "good-3"], results
    # The big-int and the deep line cannot be parsed: their id is unknown (null), their line number is given.
    assert [r["id"] for r in results if "error" in r] == [None, None, "bomb", "gif", "types", "prompt"], results
    errors = {r["id"]: r["error"] for r in results if "error" in r}
    assert "scans" in errors["bomb"] and "pixels" in errors["gif"] and results[1]["error"].startswith("line 2:")


def test_a_lines_facts_are_checked_before_its_image_is_decoded(hostile):
    # The case: 30 lines of 40 MP-class PNGs (here the largest accepted, 4096 x 4096) whose facts
    # are wrong (min_precision 5). No line reaches a decode: answered in well under a second.
    side = int(MAX_PIXELS ** 0.5)
    image = b64(palette_png(side, side))
    body = "\n".join(json.dumps({"id": n, "image": image, "min_precision": 5}) for n in range(30))
    added, (status, elapsed, answer) = peak_rss_added_mb(hostile, lambda: hostile.post(body, "application/jsonlines"))
    results = [json.loads(line) for line in answer.decode().splitlines()]
    assert status == 200 and [r["id"] for r in results] == list(range(30))
    assert all("min_precision" in r["error"] for r in results), results[:2]
    assert elapsed < 1.0 and added < 50, (elapsed, added)


def test_every_jsonlines_line_checks_the_deadline(tight):
    # 12 heavy-but-allowed lines (about a second of decode each): the request answers by its deadline, either
    # with the lines done and an error line for each line it could not reach, or, when it reached none, as a
    # whole 504. Never after the 12 decodes.
    heavy = b64(progressive_jpeg(4096, MAX_JPEG_SCANS - 9))
    body = "\n".join(json.dumps({"id": n, "image": heavy}) for n in range(12))
    status, elapsed, answer = tight.post(body, "application/jsonlines")
    assert elapsed < DEADLINE_S + SLACK_S, elapsed
    if status == 504:
        assert_json_error(status, answer, 504, "REQUEST_TIMEOUT_S")
        return
    results = [json.loads(line) for line in answer.decode().splitlines()]
    assert status == 200 and [r["id"] for r in results] == list(range(12)), answer[:300]
    assert sum("REQUEST_TIMEOUT_S" in r.get("error", "") for r in results) >= 6, results


# -- SIGTERM -----------------------------------------------------------------------------------------------

def test_sigterm_mid_batch_answers_every_line(untrained_artifact, tmp_path):
    # SageMaker sends SIGTERM, then SIGKILL 30 s later (BYOC guide, "How SageMaker runs your inference image");
    # gunicorn's gthread worker waits `graceful_timeout` for connections in flight, then exits and drops them
    # (gunicorn 27.0.1 gunicorn/workers/gthread.py, ThreadWorker.run). A 400-line request that cannot finish
    # in that window is answered before it: the lines done, and an error line for each other. (Here the
    # window is 8 s, so the answer comes 6 s after SIGTERM: time for some batches even on a loaded machine.)
    server = started(Hostile(untrained_artifact, log_path=tmp_path / "serve.log", program=DRILL,
                             env={"DRILL_SLOW_S": "0.1", "BATCH_PRODUCTS": "8", "GUNICORN_GRACEFUL_TIMEOUT": "8",
                                  "REQUEST_TIMEOUT_S": "60"}))
    try:
        image = b64(small_png())
        assert server.post({"image": image, "attributes": ["Fit"]})[0] == 200  # the first call warms the model
        body = "\n".join(json.dumps({"id": f"p{n}", "image": image, "attributes": ["Fit"]}) for n in range(400))
        done: list[tuple[int, float, bytes]] = []
        errors: list[BaseException] = []

        def send():
            try:
                done.append(server.post(body, "application/jsonlines", timeout=30))
            except BaseException as exc:  # a dropped connection (RemoteDisconnected) fails the test below
                errors.append(exc)

        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(1.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # the master, as SageMaker does
        thread.join(30)
        assert not errors and done, (errors, server.output()[-2000:])
        status, _, answer = done[0]
        results = [json.loads(line) for line in answer.decode().splitlines()]
        assert status == 200 and [r["id"] for r in results] == [f"p{n}" for n in range(400)]
        answered = [r for r in results if "error" not in r]
        stopped = [r for r in results if "error" in r]
        assert answered and stopped, (len(answered), len(stopped))  # partly done, the rest said so
        assert all("Fit" in r["confidence"] for r in answered)
        assert all("stopping" in r["error"] for r in stopped), stopped[:2]
        assert time.monotonic() - signalled < 8  # answered inside gunicorn's graceful window
        assert server.process.wait(timeout=10) == 0
    finally:
        server.stop(timeout=5)
