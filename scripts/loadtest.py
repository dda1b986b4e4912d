"""Load test: `serve` (gunicorn) with a tiny model on 127.0.0.1, batching across requests off and on.

    python scripts/loadtest.py [--model DIR] [--clients 1 4 16] [--seconds 8] [--requests 400] [--rounds 3]

Two servers run side by side for the whole test: batching off (`MAX_BATCH_PRODUCTS=1`: one product a model
call) and on (`MAX_BATCH_PRODUCTS=16`, `BATCH_WAIT_MS=0`), the rest at the serving defaults
(`MAX_PENDING_REQUESTS` 100), torch on one thread (`OMP_NUM_THREADS=1`). Only one of them is loaded at a
time: for each round and each number of concurrent clients, off and on are loaded one after the other (the
order alternating between rounds), so that a swing of the machine's load hits both and shows as a spread.
In each phase every client sends one single-product request (every attribute) after the other for
`--seconds` (at most `--requests`): throughput, p50/p99 latency of the answered requests, 503 refusals (the
client backs off 50 ms), errors (anything else) and `/ping` latency under that load (one ping every 20 ms).
After the rounds, each setting and client count is summarised as the median with the range of the rounds.
The last line is `batching <median throughput on / median off at the largest client count>`. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off/on phases (default 3)")
    args = parser.parse_args(argv)

    from inference.server.local_server import LocalServer

    bodies = request_bodies()
    results: dict[tuple[str, int], list[Phase]] = {(b, c): [] for b in SETTINGS for c in args.clients}
    with tempfile.TemporaryDirectory(prefix="loom-load-") as tmp, contextlib.ExitStack() as stack:
        model_dir = args.model
        if model_dir is None:
            from bench import build_tiny_artifact

            model_dir = build_tiny_artifact(Path(tmp) / "tiny")
        servers, workers, rss_before = {}, {}, {}
        for batching, env in SETTINGS.items():
            servers[batching] = stack.enter_context(LocalServer(model_dir, env={**SERVER_ENV, **env}))
        for batching, server in servers.items():
            try:
                server.wait_ready(timeout=180)
            except (RuntimeError, TimeoutError) as exc:
                print(f"serve did not start: {exc}", file=sys.stderr)
                return 1
            server.request("POST", "/invocations", bodies[0], {"Content-Type": "application/json"})  # warm
            workers[batching] = worker_pids(server.process.pid)[0]
            rss_before[batching] = rss_mb(workers[batching])
        for round_ in range(args.rounds):
            for clients in args.clients:
                for batching in phase_order(round_):
                    phase = run_phase(servers[batching], clients, args.seconds, args.requests, bodies)
                    results[batching, clients].append(phase)
                    print(f"round {round_ + 1}: {phase.line(batching)}", flush=True)
        for batching, env in SETTINGS.items():
            print(f"batching {batching}: {', '.join(f'{k}={v}' for k, v in env.items())}; worker RSS "
                  f"{rss_before[batching]:.0f} -> {rss_mb(workers[batching]):.0f} MB", flush=True)
    print(f"summary of {args.rounds} rounds, median (lowest-highest):")
    for clients in args.clients:
        for batching in SETTINGS:
            phases = results[batching, clients]
            print(f"batching {batching:<3} clients {clients:>2}: "
                  f"{spread([p.throughput for p in phases], '.2f')} answered req/s, "
                  f"p99 {spread([percentile(p.latencies, 0.99) * 1000 for p in phases if p.latencies], '.0f')} ms, "
                  f"ping p99 {spread([percentile(p.pings, 0.99) * 1000 for p in phases if p.pings], '.1f')} ms, "
                  f"503: {sum(p.refused for p in phases)}, errors: {sum(len(p.errors) for p in phases)}", flush=True)
    clients = args.clients[-1]
    off, on = results["off", clients], results["on", clients]
    ratios = [b.throughput / a.throughput for a, b in zip(off, on) if a.throughput]
    off_tp, on_tp = statistics.median(p.throughput for p in off), statistics.median(p.throughput for p in on)
    print(f"at {clients} clients: on / off throughput of each round {', '.join(f'{r:.2f}' for r in ratios)}")
    failed = any(p.errors or p.ping_errors for phases in results.values() for p in phases)
    print(f"batching {on_tp / off_tp:.2f}" if off_tp else "batching n/a")
    return 1 if failed else 0


def phase_order(round_: int) -> list[str]:
    """The settings in the order they are loaded in round `round_` (from 0): reversed every other round, so
    that neither server always runs right after the other's heaviest phase."""
    order = list(SETTINGS)
    return order if round_ % 2 == 0 else order[::-1]


def spread(values: list[float], fmt: str) -> str:
    """`median (lowest-highest)`."""
    if not values:
        return "n/a"
    median = statistics.median(values)
    return (f"{median:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})" if len(values) > 1
            else f"{median:{fmt}}")


if __name__ == "__main__":
    sys.exit(main())
