"""Run the `serve` program on 127.0.0.1 as a child process: for `make demo`, the load test and the tests.

It is the same program the inference image runs (gunicorn + the Flask app), started with
`python -m inference.server.serve --bind 127.0.0.1:PORT` and `SM_MODEL_DIR` pointing at an artifact folder.
`program` replaces `-m inference.server.serve` (tests run `serve` with a test-only predictor wrapper).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Mapping


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """`serve` on 127.0.0.1 in its own process group; stopped (SIGTERM, then SIGKILL) on exit or `stop()`."""

    def __init__(self, model_dir: str | Path, *, port: int | None = None, env: Mapping[str, str] | None = None,
                 log_path: str | Path | None = None, program: tuple[str, ...] = ("-m", "inference.server.serve")):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self._log: IO[str] = open(self.log_path, "w+") if self.log_path else _temporary_log()
        full_env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, *program, "--bind", f"127.0.0.1:{self.port}"],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the server: (status, headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def ping(self) -> int | None:
        """The status of GET /ping, or None while nothing answers on the port."""
        try:
            return self.request("GET", "/ping", timeout=5)[0]
        except OSError:
            return None

    def wait_ready(self, timeout: float = 180.0) -> "LocalServer":
        """Wait until /ping answers 200; raise with the server's output if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with code {self.process.returncode}:\n{self.output()[-3000:]}")
            if self.ping() == 200:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve was not healthy within {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.2)

    def output(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the whole process group (gunicorn and its workers), SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # the group may be gone since poll()
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._log.close()


def _temporary_log() -> IO[str]:
    import tempfile

    return tempfile.TemporaryFile("w+")

