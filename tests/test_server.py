"""The real `serve` program: gunicorn on 127.0.0.1 with the untrained tiny artifact. /ping goes 503 -> 200,
every content type is answered, every bad input is a 4xx that leaves the worker alive, and SIGTERM stops
the server cleanly."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference.server.local_server import LocalServer
from test_app import BAD_IMAGES, ODD_MODES, RGB_PNG, check_contract, image_bytes

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


class Server(LocalServer):
    def __init__(self, model_dir: Path, tmp: Path):
        super().__init__(model_dir, log_path=tmp / "serve.log",
                         env={"SERVE_LOAD_DELAY_S": "1.5", "MAX_BODY_MB": "1", "MAX_IMAGE_PIXELS": "1000000",
                              "GUNICORN_THREADS": "4"})

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


@pytest.fixture(scope="module")
def server(untrained_artifact, tmp_path_factory):
    server = Server(untrained_artifact, tmp_path_factory.mktemp("serve"))
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


def test_sigterm_stops_gracefully(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=40) == 0
    assert "Handling signal: term" in server.output()


def test_serve_settings_come_from_the_environment(tmp_path):
    from inference.server.serve import ServeSettings, gunicorn_options, resolve_model_dir, visible_gpus

    settings = ServeSettings.from_env({"SM_MODEL_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9000",
                                       "MAX_BODY_MB": "5", "MAX_IMAGE_PIXELS": "123", "GUNICORN_THREADS": "8",
                                       "MODEL_LOAD_TIMEOUT": "60", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert (settings.model_dir, settings.host, settings.port) == (tmp_path, "0.0.0.0", 9000)
    assert (settings.workers, settings.threads) == (2, 8)  # one worker per GPU
    assert (settings.max_body_bytes, settings.max_image_pixels, settings.load_timeout_s) == (5 << 20, 123, 60.0)
    options = gunicorn_options(settings)
    assert options["bind"] == ["0.0.0.0:9000"] and options["worker_class"] == "gthread"
    assert options["preload_app"] is False and options["timeout"] >= 60
    assert ServeSettings.from_env({"CUDA_VISIBLE_DEVICES": ""}).workers == 1  # no GPU: still one worker
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS"):
        ServeSettings.from_env({"GUNICORN_WORKERS": "many"})
    assert ServeSettings.from_env({"BATCH_PRODUCTS": "16"}).batch_products == 16
    with pytest.raises(SystemExit, match="BATCH_PRODUCTS"):
        ServeSettings.from_env({"BATCH_PRODUCTS": "0"})
    # Without SM_MODEL_DIR: /opt/ml/model when it holds an artifact, else the one baked into the image.
    (tmp_path / "loom_manifest.json").write_text("{}")
    assert resolve_model_dir({"LOOM_BAKED_MODEL_DIR": str(tmp_path)}) in (tmp_path, Path("/opt/ml/model"))
    if not Path("/opt/ml/model/loom_manifest.json").exists():
        assert resolve_model_dir({"LOOM_BAKED_MODEL_DIR": str(tmp_path)}) == tmp_path


def test_serve_refuses_a_folder_without_a_manifest(tmp_path):
    run = subprocess.run([sys.executable, "-m", "inference.server.serve", "--bind", "127.0.0.1:1", "--model-dir",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "loom_manifest.json" in run.stderr
