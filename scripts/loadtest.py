"""Load test: `serve` (gunicorn) with a tiny model on 127.0.0.1, N concurrent clients, bounded requests/time.

    python scripts/loadtest.py [--model DIR] [--clients 8] [--requests 200] [--max-seconds 60]

Prints throughput, p50/p99 latency, the error count and the worker's RSS before and after. Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Loom artifact folder (default: build the untrained tiny one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="total requests (bound)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound for the load phase")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    args = parser.parse_args(argv)

    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="loom-load-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from bench import build_tiny_artifact

            model_dir = build_tiny_artifact(Path(tmp) / "tiny")
        from inference.server.local_server import LocalServer

        with LocalServer(model_dir, env={"GUNICORN_THREADS": str(args.threads)}) as server:
            try:
                server.wait_ready(timeout=180)
            except (RuntimeError, TimeoutError) as exc:
                print(f"serve did not start: {exc}", file=sys.stderr)
                return 1
            return run_load(server, args, Image)


def run_load(server, args, Image) -> int:
    def request(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        status, _, data = server.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        return status, data

    bodies = []
    for n in range(16):
        buffer = io.BytesIO()
        Image.new("RGB", (300, 400), (n * 15, 100, 200 - n * 10)).save(buffer, "JPEG")
        bodies.append(json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode())
    worker = worker_pids(server.process.pid)[0]
    request("POST", "/invocations", bodies[0])  # one warm request before measuring memory
    rss_before = rss_mb(worker)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = iter(range(args.requests))
    stop_at = time.monotonic() + args.max_seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                n = next(issued, None)
            if n is None:
                return
            start = time.perf_counter()
            try:
                status, data = request("POST", "/invocations", bodies[n % len(bodies)])
                ok = status == 200 and "confidence" in json.loads(data)
            except Exception as exc:  # counted, not raised: the load test reports errors
                status, ok = repr(exc), False
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(str(status))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    rss_after = rss_mb(worker)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    print(f"clients {args.clients}, requests {len(latencies)} in {wall:.1f} s, 8 attributes each")
    print(f"throughput {len(latencies) / wall:.2f} req/s")
    print(f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"errors {len(errors)}" + (f" ({sorted(set(errors))[:5]})" if errors else ""))
    print(f"worker RSS before {rss_before:.0f} MB, after {rss_after:.0f} MB (pid {worker}, "
          f"same worker: {worker in worker_pids(server.process.pid)})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
