"""Load test: `serve` (gunicorn) with a tiny model on 127.0.0.1, batching across requests off and on.

    python scripts/loadtest.py [--model DIR] [--clients 1 4 16] [--seconds 8] [--requests 400]

For each setting, one server: batching off (`MAX_BATCH_PRODUCTS=1`: one product a model call) and on
(`MAX_BATCH_PRODUCTS=16`, `BATCH_WAIT_MS=0`), the rest at the serving defaults (`MAX_PENDING_REQUESTS`
100), torch on one thread (`OMP_NUM_THREADS=1`). For each number of concurrent clients, each sending one
single-product request (every attribute) after the other for `--seconds` (at most `--requests`):
throughput, p50/p99 latency of the answered requests, 503 refusals (the client backs off 50 ms), errors
(anything else) and `/ping` latency under that load (one ping every 20 ms). The last line is
`batching <throughput on / off at the largest client count>`. Loopback only.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SETTINGS = {"off": {"MAX_BATCH_PRODUCTS": "1"}, "on": {"MAX_BATCH_PRODUCTS": "16", "BATCH_WAIT_MS": "0"}}
# torch in the server on one thread: on a shared machine more threads than free cores make every figure swing.
SERVER_ENV = {"OMP_NUM_THREADS": "1"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Phase:
    """What one run of N clients measured."""

    clients: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    ping_errors: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return (len(self.latencies) - len(self.errors)) / self.wall_s if self.wall_s else 0.0

    def line(self, batching: str) -> str:
        lat = (f"p50 {statistics.median(self.latencies) * 1000:.0f} ms, p99 {percentile(self.latencies, 0.99) * 1000:.0f} ms"
               if self.latencies else "no answers")
        ping = (f"ping p50 {statistics.median(self.pings) * 1000:.1f} ms, p99 {percentile(self.pings, 0.99) * 1000:.1f} ms"
                if self.pings else "no pings")
        return (f"batching {batching:<3} clients {self.clients:>2}: {self.throughput:6.2f} answered req/s "
                f"({len(self.latencies) - len(self.errors)} in {self.wall_s:.1f} s), {lat}; {ping}; "
                f"503: {self.refused}, errors: {len(self.errors)}, ping not 200: {len(self.ping_errors)}")


def request_bodies(count: int = 16) -> list[bytes]:
    from PIL import Image

    bodies = []
    for n in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (300, 400), (n * 15, 100, 200 - n * 10)).save(buffer, "JPEG")
        bodies.append(json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode())
    return bodies


def run_phase(server, clients: int, seconds: float, max_requests: int, bodies: list[bytes]) -> Phase:
    phase = Phase(clients)
    lock, done = threading.Lock(), threading.Event()
    issued = iter(range(max_requests))
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                n = next(issued, None)
            if n is None:
                return
            start = time.perf_counter()
            try:
                status, _, data = server.request("POST", "/invocations", bodies[n % len(bodies)],
                                                 {"Content-Type": "application/json"})
                ok = status == 200 and "confidence" in json.loads(data)
            except Exception as exc:  # counted, not raised: the load test reports errors
                status, ok = repr(exc), False
            elapsed = time.perf_counter() - start
            with lock:
                if status == 503:
                    phase.refused += 1
                else:
                    phase.latencies.append(elapsed)
                    if not ok:
                        phase.errors.append(str(status))
            if status == 503:
                time.sleep(0.05)  # back off, as a client should

    def pinger() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                status = server.request("GET", "/ping", timeout=10)[0]
            except Exception as exc:  # counted, not raised
                status = repr(exc)
            phase.pings.append(time.perf_counter() - start)
            if status != 200:
                phase.ping_errors.append(str(status))
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    ping_thread = threading.Thread(target=pinger)
    ping_thread.start()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.wall_s = time.perf_counter() - start
    done.set()
    ping_thread.join()
    return phase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Loom artifact folder (default: build the untrained tiny one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--requests", type=int, default=400, help="most requests in one phase")
    args = parser.parse_args(argv)

    from inference.server.local_server import LocalServer

    bodies = request_bodies()
    results: dict[str, list[Phase]] = {}
    with tempfile.TemporaryDirectory(prefix="loom-load-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from bench import build_tiny_artifact

            model_dir = build_tiny_artifact(Path(tmp) / "tiny")
        for batching, env in SETTINGS.items():
            with LocalServer(model_dir, env={**SERVER_ENV, **env}) as server:
                try:
                    server.wait_ready(timeout=180)
                except (RuntimeError, TimeoutError) as exc:
                    print(f"serve did not start: {exc}", file=sys.stderr)
                    return 1
                server.request("POST", "/invocations", bodies[0], {"Content-Type": "application/json"})  # warm
                worker = worker_pids(server.process.pid)[0]
                rss_before = rss_mb(worker)
                results[batching] = []
                for clients in args.clients:
                    phase = run_phase(server, clients, args.seconds, args.requests, bodies)
                    results[batching].append(phase)
                    print(phase.line(batching), flush=True)
                print(f"batching {batching}: {', '.join(f'{k}={v}' for k, v in env.items())}; worker RSS "
                      f"{rss_before:.0f} -> {rss_mb(worker):.0f} MB", flush=True)
    off, on = results["off"][-1], results["on"][-1]
    clients = args.clients[-1]
    print(f"at {clients} clients: p99 off {percentile(off.latencies, 0.99) * 1000:.0f} ms, on "
          f"{percentile(on.latencies, 0.99) * 1000:.0f} ms; ping p99 off {percentile(off.pings, 0.99) * 1000:.1f} ms, "
          f"on {percentile(on.pings, 0.99) * 1000:.1f} ms")
    failed = any(p.errors or p.ping_errors for phases in results.values() for p in phases)
    print(f"batching {on.throughput / off.throughput:.2f}" if off.throughput else "batching n/a")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
