"""The real `serve` program: gunicorn on 127.0.0.1 with the untrained tiny artifact. /ping goes 503 -> 200,
every content type is answered, every bad input is a 4xx that leaves the worker alive, /ping stays fast
under a saturating load that gets only 200 or 503, and SIGTERM lets in-flight requests finish.

The servers run `tests/serve_drill.py`: the real `serve` with a test-only predictor wrapper that can delay
the load, slow every generation, or fail on one image size. The contract clauses tested here are listed,
with their sources, in docs/endpoint-contract.md."""

from __future__ import annotations

import base64
import collections
import http.client
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from endpoint_contract import BAD_IMAGES, ODD_MODES, RGB_PNG, check_contract, image_bytes

from inference.server.local_server import LocalServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


DRILL = ("tests/serve_drill.py",)
POISON = (13, 13)  # the drill predictor fails on images of this size


class Server(LocalServer):
    def __init__(self, model_dir: Path, tmp: Path, **env: str):
        env = {"DRILL_LOAD_DELAY_S": "1.5", "MAX_BODY_MB": "1", "MAX_IMAGE_PIXELS": "1000000",
               "MAX_PENDING_REQUESTS": "2", "GUNICORN_THREADS": "6", "DRILL_POISON_SIZE": "13x13", **env}
        super().__init__(model_dir, log_path=tmp / "serve.log", env=env, program=DRILL)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        if not chunked:
            return super().request(method, path, body, headers)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request(method, path, body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                           headers={**headers, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, dict(response.getheaders()), data

    def post(self, body, content_type="application/json", **kwargs):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        status, headers, data = self.request("POST", "/invocations", data, content_type, **kwargs)
        return status, data

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return sorted(int(pid) for pid in children)


def start(server: Server) -> Server:
    # The first answer must be 503: the worker is up but its model is still loading.
    deadline = time.monotonic() + 30
    server.first_ping = None
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            server.first_ping = server.request("GET", "/ping")
            break
        except (ConnectionError, OSError):
            time.sleep(0.05)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.process.poll() is None:
        status = server.request("GET", "/ping")[0]
        if status == 200:
            break
        assert status == 503
        time.sleep(0.2)
    return server


@pytest.fixture(scope="module")
def server(untrained_artifact, tmp_path_factory):
    server = start(Server(untrained_artifact, tmp_path_factory.mktemp("serve")))
    yield server
    server.stop(timeout=5)


@pytest.fixture(scope="module")
def slow_server(untrained_artifact, tmp_path_factory):
    """Every generation takes 1.5 s; requests have 2 s; a model call past 1 s counts as stuck."""
    server = start(Server(untrained_artifact, tmp_path_factory.mktemp("slow"), DRILL_SLOW_S="1.5",
                          DRILL_LOAD_DELAY_S="0", REQUEST_TIMEOUT_S="2", MODEL_STUCK_AFTER_S="1",
                          MAX_BATCH_PRODUCTS="1", SAGEMAKER_MAX_PAYLOAD_IN_MB="2"))
    yield server
    server.stop(timeout=5)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ping_is_503_while_loading_then_200(server):
    assert server.first_ping is not None, server.output()
    status, _, body = server.first_ping
    assert (status, json.loads(body)) == (503, {"status": "loading"})
    status, _, body = server.request("GET", "/ping")
    assert (status, json.loads(body)) == (200, {"status": "ok"}), server.output()
    assert len(server.workers()) == 1  # one worker on a machine without GPUs, never one per CPU


def test_json_attribute_and_prompt_requests(server):
    status, data = server.post({"image": b64(RGB_PNG), "attributes": ["Pattern", "baseColour"],
                                "parameters": {"max_new_tokens": 4}})
    assert status == 200, data
    body = json.loads(data)
    check_contract(body, "AttributeResponse")
    assert list(body["confidence"]) == ["Pattern", "baseColour"]
    status, data = server.post({"image": b64(RGB_PNG), "prompt": "Describe the shirt in this picture."})
    assert status == 200
    check_contract(json.loads(data), "PromptResponse")


@pytest.mark.parametrize("content_type,data", [("image/png", RGB_PNG), ("image/jpeg", image_bytes(fmt="JPEG")),
                                               ("application/x-image", ODD_MODES["cmyk jpeg"])])
def test_raw_image_content_types(server, content_type, data):
    status, body = server.post(data, content_type)
    assert status == 200, body
    answer = json.loads(body)
    check_contract(answer, "AttributeResponse")
    assert len(answer["confidence"]) == 8


def test_jsonlines_batch_transform_keeps_order_and_ids(server):
    ids = ["p3", "p1", "bad", "p2"]
    lines = [json.dumps({"id": i, "image": b64(image_bytes(colour=(n * 60, 20, 20))), "attributes": ["Fit"]})
             for n, i in enumerate(ids)]
    lines[2] = json.dumps({"id": "bad", "image": b64(BAD_IMAGES["truncated png"])})
    status, data = server.post(("\n".join(lines) + "\n").encode(), "application/jsonlines")
    assert status == 200
    out = [json.loads(line) for line in data.decode().splitlines()]
    assert [o["id"] for o in out] == ids
    assert "error" in out[2] and all("confidence" in o for o in out[:2] + out[3:])
    for item in out:
        check_contract(item, "BatchResult")


BAD_INPUTS = {
    "malformed json": (b"{\"image\":", "application/json", 400),
    "missing image": (b"{}", "application/json", 400),
    "non-base64 image": (b'{"image": "@@@"}', "application/json", 400),
    "unknown attribute": (json.dumps({"image": b64(RGB_PNG), "attributes": ["Smell"]}).encode(), "application/json", 400),
    "unknown content type": (b"a,b", "text/csv", 415),
    **{f"json {name}": (json.dumps({"image": b64(data)}).encode(), "application/json", 400)
       for name, data in BAD_IMAGES.items()},
    **{f"raw {name}": (data, "image/png", 400) for name, data in BAD_IMAGES.items()},
}


def test_every_bad_input_is_a_4xx_and_the_worker_survives(server):
    workers = server.workers()
    for name, (data, content_type, expected) in BAD_INPUTS.items():
        status, body = server.post(data, content_type)
        assert status == expected, (name, body)
        check_contract(json.loads(body), "Error")
    for name, data in ODD_MODES.items():
        assert server.post({"image": b64(data), "attributes": ["Fit"]})[0] == 200, name
    assert server.workers() == workers, server.output()
    assert server.request("GET", "/ping")[0] == 200


def test_oversize_bodies_are_413_with_and_without_content_length(server):
    big = b"\0" * (1024 * 1024 + 10)
    for chunked in (False, True):
        status, body = server.post(big, "image/png", chunked=chunked)
        assert status == 413, body
        assert "MAX_BODY_MB" in json.loads(body)["error"]
    assert server.request("GET", "/ping")[0] == 200

def jsonlines_body(count: int, size=(40, 50), attributes=("Pattern", "Fit")) -> bytes:
    lines = [json.dumps({"id": f"p{n}", "image": b64(image_bytes(size=size, colour=(n * 20 % 256, 40, 90))),
                         "attributes": list(attributes)}) for n in range(count)]
    return ("\n".join(lines) + "\n").encode()


def test_ping_stays_fast_while_batch_requests_saturate_the_worker(server):
    # SageMaker fails a health check that takes over 2 s (BYOC guide, "How your container should respond to
    # health check (ping) requests"); the toolkits answer /ping outside the inference queue. Here 8 clients
    # keep 8-product JSON Lines batches coming at a worker that admits 2: it must refuse the rest with 503
    # at once (never queue them), and /ping must stay under 100 ms at the 99th percentile.
    body = jsonlines_body(8)
    answers: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, data = server.post(body, "application/jsonlines")
            answers.append((status, data))
            if status == 503:
                time.sleep(0.05)  # a client's back-off before it retries

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    latencies, pings = [], []
    try:
        time.sleep(0.5)
        end = time.monotonic() + 6
        while time.monotonic() < end:
            started = time.perf_counter()
            pings.append(server.request("GET", "/ping")[0])
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
    summary = (f"ping p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms max {max(latencies) * 1000:.1f} ms over "
               f"{len(latencies)} pings; answers {collections.Counter(s for s, _ in answers)}")
    print(summary)
    assert set(pings) == {200}, summary
    assert {status for status, _ in answers} == {200, 503}, summary  # saturated, and nothing but 200 or 503
    refusal = json.loads(next(data for status, data in answers if status == 503))
    check_contract(refusal, "Error")
    assert "MAX_PENDING_REQUESTS" in refusal["error"]
    assert all(len(data.splitlines()) == 8 for status, data in answers if status == 200)
    assert p99 < 0.100, summary


def test_a_failing_product_gets_its_own_error_line_with_its_id(server):
    lines = jsonlines_body(4).decode().splitlines()
    lines[1] = json.dumps({"id": "poison", "image": b64(image_bytes(size=POISON)), "attributes": ["Fit"]})
    status, data = server.post(("\n".join(lines) + "\n").encode(), "application/jsonlines")
    assert status == 200, data
    out = [json.loads(line) for line in data.decode().splitlines()]
    assert [o["id"] for o in out] == ["p0", "poison", "p2", "p3"]
    assert set(out[1]) == {"id", "error"} and "line 2" in out[1]["error"] and "RuntimeError" in out[1]["error"]
    assert all("confidence" in o for i, o in enumerate(out) if i != 1)
    for item in out:
        check_contract(item, "BatchResult")


def test_execution_parameters_for_batch_transform(server):
    # Batch Transform asks GET /execution-parameters when the job leaves these unset (CreateTransformJob:
    # MaxConcurrentTransforms "If ... left unset, SageMaker checks the optional execution-parameters").
    status, headers, body = server.request("GET", "/execution-parameters")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
    check_contract(json.loads(body), "ExecutionParameters")


def test_accept_is_honoured(server):
    request = json.dumps({"image": b64(RGB_PNG), "attributes": ["Fit"]}).encode()
    status, headers, body = LocalServer.request(server, "POST", "/invocations", request,
                                           {"Content-Type": "application/json", "Accept": "application/jsonlines"})
    assert status == 200 and headers["Content-Type"] == "application/jsonlines"
    assert len(body.splitlines()) == 1 and "confidence" in json.loads(body)
    for content_type, data, accept in [("application/json", request, "text/csv"),
                                       ("application/jsonlines", jsonlines_body(1), "application/json")]:
        status, _, body = LocalServer.request(server, "POST", "/invocations", data, {"Content-Type": content_type,
                                                                         "Accept": accept})
        assert status == 406, body
        check_contract(json.loads(body), "Error")
    status, headers, _ = LocalServer.request(server, "POST", "/invocations", request,
                                        {"Content-Type": "application/json", "Accept": "*/*"})
    assert status == 200 and headers["Content-Type"] == "application/json"


def test_a_request_past_its_deadline_is_504_and_the_worker_goes_on(slow_server):
    # A JSON Lines request: the deadline is checked before each line's decode and each generation; past it,
    # the lines answered so far keep their answers and each other line gets an error line that names
    # REQUEST_TIMEOUT_S (a single product gets the 504 itself: test_app.py).
    started = time.monotonic()
    status, data = slow_server.post(jsonlines_body(3, attributes=["Fit"]), "application/jsonlines")
    elapsed = time.monotonic() - started
    lines = [json.loads(line) for line in data.splitlines()]
    # One line per product, in order; a line never read before the deadline carries "id": null (its id is not
    # parsed after the deadline: a cheap error line; Batch Transform joins by position).
    ids = [line["id"] for line in lines]
    assert status == 200 and len(lines) == 3 and ids[0] == "p0", data
    assert all(got in (want, None) for got, want in zip(ids[1:], ["p1", "p2"])), ids
    assert "error" not in lines[0] and "Fit" in lines[0]["confidence"], lines[0]
    assert all("REQUEST_TIMEOUT_S" in line["error"] for line in lines[1:]), lines
    assert 1.9 < elapsed < 3.5  # answered at its 2 s deadline, not after the 4.5 s of work
    assert slow_server.request("GET", "/ping")[0] == 200  # answered while the model thread is still busy
    # The second product's generation (1.5 s to 3.0 s) was running at the deadline: it ends, the third
    # never starts. Once it has ended, the worker answers the next request in time.
    time.sleep(max(0.0, started + 3.3 - time.monotonic()))
    status, data = slow_server.post({"image": b64(RGB_PNG), "attributes": ["Fit"]})
    assert status == 200, data


def test_ping_is_500_while_a_model_call_is_stuck(slow_server):
    # MODEL_STUCK_AFTER_S=1 here and each generation takes 1.5 s: for that half second the model is "stuck".
    done = []
    thread = threading.Thread(target=lambda: done.append(slow_server.post({"image": b64(RGB_PNG)})))
    thread.start()
    # The call starts after the decode and preprocessing (request thread, decode pool): poll /ping until the
    # request ends rather than guess when the model call began; a stuck spell must show.
    pings = []
    while thread.is_alive() and len(pings) < 100:
        pings.append(slow_server.request("GET", "/ping"))
        time.sleep(0.05)
    thread.join(10)
    stuck = [(status, body) for status, _, body in pings if status != 200]
    assert stuck, [status for status, _, _ in pings]
    status, body = stuck[0]
    assert status == 500 and "MODEL_STUCK_AFTER_S" in json.loads(body)["error"], body
    check_contract(json.loads(body), "PingFailed")
    assert done[0][0] == 200 and slow_server.request("GET", "/ping")[0] == 200


def test_sagemaker_max_payload_in_mb_raises_the_body_limit(slow_server):
    # Batch Transform sets SAGEMAKER_MAX_PAYLOAD_IN_MB to the largest payload it sends (BYOC batch guide):
    # here MAX_BODY_MB=1 but SAGEMAKER_MAX_PAYLOAD_IN_MB=2, so 1.5 MB is read (and refused as an image).
    assert slow_server.post(b"\0" * (3 << 19), "image/png")[0] == 400
    assert slow_server.post(b"\0" * ((2 << 20) + 10), "image/png")[0] == 413
    assert json.loads(slow_server.request("GET", "/execution-parameters")[2])["MaxPayloadInMB"] == 2


def test_a_long_asynchronous_request_completes_past_gunicorns_timeout(untrained_artifact, tmp_path):
    # Asynchronous inference allows up to 1 hour per request (async-inference guide): the container's
    # deadline comes from REQUEST_TIMEOUT_S, and gunicorn's `timeout` (a worker heartbeat, not a request
    # limit in the gthread worker) must not kill a worker that is busy with a long JSON Lines request.
    server = start(Server(untrained_artifact, tmp_path, DRILL_SLOW_S="1.5", DRILL_LOAD_DELAY_S="0",
                          MAX_BATCH_PRODUCTS="1", REQUEST_TIMEOUT_S="30", GUNICORN_TIMEOUT="2"))
    try:
        workers = server.workers()
        started = time.monotonic()
        status, data = server.post(jsonlines_body(3, attributes=["Fit"]), "application/jsonlines")
        assert status == 200 and len(data.splitlines()) == 3, data
        assert time.monotonic() - started > 4.0  # 3 generations of 1.5 s: twice gunicorn's timeout
        assert server.workers() == workers, server.output()
    finally:
        server.stop(timeout=10)


def test_sigterm_lets_in_flight_requests_finish(slow_server):
    # SageMaker sends SIGTERM, then SIGKILL 30 s later (BYOC guide, "How SageMaker runs your inference
    # image"): a request in flight at SIGTERM is still answered, and serve exits 0 well before the SIGKILL.
    done = []
    thread = threading.Thread(target=lambda: done.append(slow_server.post({"image": b64(RGB_PNG)})))
    thread.start()
    time.sleep(0.3)
    slow_server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert done and done[0][0] == 200, done
    assert slow_server.process.wait(timeout=25) == 0


def test_sigterm_stops_gracefully(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=40) == 0
    assert "Handling signal: term" in server.output()


def test_serve_settings_come_from_the_environment(tmp_path):
    from inference.server.serve import ServeSettings, gunicorn_options, resolve_model_dir, visible_gpus

    settings = ServeSettings.from_env({"SM_MODEL_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9000",
                                       "MAX_BODY_MB": "5", "MAX_IMAGE_PIXELS": "123",
                                       "MODEL_LOAD_TIMEOUT": "60", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert (settings.model_dir, settings.host, settings.port) == (tmp_path, "0.0.0.0", 9000)
    assert (settings.workers, settings.threads) == (2, 104)  # one worker per GPU; 100 admitted + 4 spare
    limits = settings.limits
    assert (limits.max_body_bytes, limits.max_image_pixels, limits.load_timeout_s) == (5 << 20, 123, 60.0)
    # A queue of 100, as TorchServe's job_queue_size default (pytorch/serve docs/configuration.md), which the
    # SageMaker inference toolkit keeps: a burst of single products fills batches instead of 503s.
    assert (limits.max_pending, limits.request_timeout_s, limits.workers) == (100, 60.0, 2)
    assert (limits.batch_products, limits.batch_wait_ms, settings.decoding) == (16, 0.0, "auto")
    options = gunicorn_options(settings)
    assert options["bind"] == ["0.0.0.0:9000"] and options["worker_class"] == "gthread"
    assert options["preload_app"] is False and options["timeout"] >= 60
    assert ServeSettings.from_env({"CUDA_VISIBLE_DEVICES": ""}).workers == 1  # no GPU: still one worker
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS"):
        ServeSettings.from_env({"GUNICORN_WORKERS": "many"})
    assert ServeSettings.from_env({"BATCH_PRODUCTS": "8"}).limits.batch_products == 8  # the earlier name
    assert ServeSettings.from_env({"BATCH_PRODUCTS": "8", "MAX_BATCH_PRODUCTS": "32"}).limits.batch_products == 32
    with pytest.raises(SystemExit, match="MAX_BATCH_PRODUCTS"):
        ServeSettings.from_env({"MAX_BATCH_PRODUCTS": "0"})
    assert ServeSettings.from_env({"BATCH_WAIT_MS": "2.5"}).limits.batch_wait_ms == 2.5
    with pytest.raises(SystemExit, match="BATCH_WAIT_MS"):
        ServeSettings.from_env({"BATCH_WAIT_MS": "-1"})
    assert ServeSettings.from_env({"DECODING": "Eager"}).decoding == "eager"
    with pytest.raises(SystemExit, match="DECODING"):
        ServeSettings.from_env({"DECODING": "fast"})
    # /ping needs threads that are never admitted to the model; SIGKILL comes 30 s after SIGTERM.
    assert ServeSettings.from_env({"MAX_PENDING_REQUESTS": "6"}).threads == 10
    with pytest.raises(SystemExit, match="must exceed MAX_PENDING_REQUESTS"):
        ServeSettings.from_env({"MAX_PENDING_REQUESTS": "4", "GUNICORN_THREADS": "4"})
    assert gunicorn_options(ServeSettings.from_env({}))["graceful_timeout"] < 30
    with pytest.raises(SystemExit, match="SIGKILL"):
        ServeSettings.from_env({"GUNICORN_GRACEFUL_TIMEOUT": "30"})
    # Without SM_MODEL_DIR: /opt/ml/model when it holds an artifact, else the one baked into the image.
    (tmp_path / "loom_manifest.json").write_text("{}")
    assert resolve_model_dir({"LOOM_BAKED_MODEL_DIR": str(tmp_path)}) in (tmp_path, Path("/opt/ml/model"))
    if not Path("/opt/ml/model/loom_manifest.json").exists():
        assert resolve_model_dir({"LOOM_BAKED_MODEL_DIR": str(tmp_path)}) == tmp_path


def test_the_batch_launcher_never_asks_for_more_than_the_server_takes():
    # SageMaker sets SAGEMAKER_MAX_PAYLOAD_IN_MB to the job's MaxPayloadInMB (at most 100); the server takes
    # at least that, whatever MAX_BODY_MB says, for every value the launcher accepts.
    from inference.server.serve import ServeSettings
    from operations.batch_records import max_record_bytes

    for mb in (1, 6, 20, 100):
        limits = ServeSettings.from_env({"MAX_BODY_MB": "1", "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(mb)}).limits
        assert limits.max_body_bytes >= max_record_bytes(mb) >= mb * 1_000_000
    with pytest.raises(ValueError):
        max_record_bytes(101)


def test_serve_refuses_a_folder_without_a_manifest(tmp_path):
    run = subprocess.run([sys.executable, "-m", "inference.server.serve", "--bind", "127.0.0.1:1", "--model-dir",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "loom_manifest.json" in run.stderr
