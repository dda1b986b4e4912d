"""Load test: `serve` (gunicorn) with a tiny model on 127.0.0.1, N concurrent clients, bounded requests/time.

    python scripts/loadtest.py [--model DIR] [--clients 8] [--requests 200] [--max-seconds 60] [--max-pending 4]

Prints throughput, p50/p99 latency of the answered requests, how many were refused with 503 (back-pressure:
the client backs off 50 ms and sends the next), `/ping` latency while the load runs (one ping every 20 ms),
the error count (anything but 200 or 503) and the worker's RSS before and after. Loopback only.
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
    parser.add_argument("--max-pending", type=int, default=4, help="MAX_PENDING_REQUESTS of the worker")
    args = parser.parse_args(argv)

    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="loom-load-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from bench import build_tiny_artifact

            model_dir = build_tiny_artifact(Path(tmp) / "tiny")
        from inference.server.local_server import LocalServer

        with LocalServer(model_dir, env={"MAX_PENDING_REQUESTS": str(args.max_pending)}) as server:
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
    refused: list[float] = []
    errors: list[str] = []
    pings: list[float] = []
    ping_errors: list[str] = []
    done = threading.Event()
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
                if status == 503:
                    refused.append(elapsed)
                else:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(str(status))
            if status == 503:
                time.sleep(0.05)  # back off, as a client should

    def pinger() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                status = request("GET", "/ping")[0]
            except Exception as exc:  # counted, not raised
                status = repr(exc)
            pings.append(time.perf_counter() - start)
            if status != 200:
                ping_errors.append(str(status))
            time.sleep(0.02)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    ping_thread = threading.Thread(target=pinger)
    ping_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    done.set()
    ping_thread.join()
    rss_after = rss_mb(worker)
    answered = len(latencies) - len(errors)
    print(f"clients {args.clients}, requests {len(latencies) + len(refused)} in {wall:.1f} s, 8 attributes each, "
          f"MAX_PENDING_REQUESTS {args.max_pending}")
    print(f"throughput {answered / wall:.2f} answered req/s; refused with 503 (back-pressure): {len(refused)}")
    if latencies:
        print(f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms")
    print(f"ping under load: {len(pings)} pings, p50 {statistics.median(pings) * 1000:.1f} ms, "
          f"p99 {percentile(pings, 0.99) * 1000:.1f} ms, max {max(pings) * 1000:.1f} ms, not 200: {len(ping_errors)}")
    print(f"errors {len(errors)}" + (f" ({sorted(set(errors))[:5]})" if errors else ""))
    print(f"worker RSS before {rss_before:.0f} MB, after {rss_after:.0f} MB (pid {worker}, "
          f"same worker: {worker in worker_pids(server.process.pid)})")
    return 1 if errors or ping_errors else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


if __name__ == "__main__":
    sys.exit(main())
