"""Peak memory a served request adds to the worker, per kind of image at the serving limits.

    python scripts/bench_image_memory.py [--model-dir DIR] [--decode-threads 2]

Starts the real `serve` on 127.0.0.1 (the untrained tiny artifact unless `--model-dir`), then for each
request resets the worker's peak resident memory (Linux: `echo 5 > /proc/PID/clear_refs`), reads VmRSS,
sends the request, and reads VmHWM: "added" is VmHWM minus that VmRSS, the worker's peak during the request
above what it held before. One request at a time. Each image is one colour, so that the body is small and
the decoder still allocates every pixel: what a hostile caller sends. Images come from tests/hostile_images.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile_images import flat_image, gif_screen, palette_png, progressive_jpeg  # noqa: E402
from inference.server.local_server import LocalServer  # noqa: E402
from loom.image_header import MAX_PIXELS  # noqa: E402

SIDE = int(MAX_PIXELS ** 0.5)


def cases() -> list[tuple[str, str, bytes]]:
    """(name, content type, body)."""
    def product(data: bytes) -> bytes:
        return json.dumps({"image": base64.b64encode(data).decode(), "attributes": ["Fit"]}).encode()

    palette = palette_png(SIDE, SIDE)
    return [
        ("small PNG 40x50 (baseline)", "application/json", product(flat_image("PNG", 40, 50))),
        (f"palette PNG {SIDE}x{SIDE}", "application/json", product(palette)),
        (f"RGB PNG {SIDE}x{SIDE}", "application/json", product(flat_image("PNG", SIDE, SIDE))),
        (f"RGBA PNG {SIDE}x{SIDE}", "application/json", product(flat_image("PNG", SIDE, SIDE, "RGBA"))),
        (f"16-bit grey PNG {SIDE}x{SIDE}", "application/json", product(flat_image("PNG", SIDE, SIDE, "I;16"))),
        (f"GIF {SIDE}x{SIDE}", "application/json", product(flat_image("GIF", SIDE, SIDE, "P"))),
        (f"WebP lossless {SIDE}x{SIDE}", "application/json",
         product(flat_image("WEBP", SIDE, SIDE, lossless=True))),
        (f"baseline JPEG {SIDE}x{SIDE}", "application/json", product(flat_image("JPEG", SIDE, SIDE))),
        (f"progressive JPEG {SIDE}x{SIDE}, 32 scans", "application/json", product(progressive_jpeg(SIDE, 23))),
        (f"JSON Lines: 10 palette PNGs {SIDE}x{SIDE}", "application/jsonlines",
         b"\n".join(product(palette) for _ in range(10))),
        ("refused: palette PNG 8000x5000 (40 MP)", "application/json", product(palette_png(8000, 5000))),
        ("refused: 35-byte GIF, 6324x6324 screen", "application/json", product(gif_screen(6324, 6324))),
    ]


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="artifact (default: the untrained tiny BLIP-2)")
    parser.add_argument("--decode-threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from training import tiny_base

            model_dir = Path(tmp) / "model"
            tiny_base.write_untrained_artifact(model_dir, seed=3)
        env = {"REQUEST_TIMEOUT_S": "300", "IMAGE_DECODE_THREADS": str(args.decode_threads)}
        with LocalServer(model_dir, env=env) as server:
            server.wait_ready(300)
            master = server.process.pid
            (worker,) = (int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split())
            print(f"worker {worker}: {kib(worker, 'VmRSS') / 1024:.0f} MB resident after loading")
            print(f"{'request':48} {'status':>6} {'body KB':>8} {'s':>6} {'added MB':>9}")
            for name, content_type, body in cases():
                Path(f"/proc/{worker}/clear_refs").write_text("5")
                before = kib(worker, "VmRSS")
                started = time.monotonic()
                status = server.request("POST", "/invocations", body, {"Content-Type": content_type}, 600)[0]
                elapsed = time.monotonic() - started
                added = (kib(worker, "VmHWM") - before) / 1024
                print(f"{name:48} {status:>6} {len(body) / 1024:>8.0f} {elapsed:>6.2f} {added:>9.0f}", flush=True)
            print(f"worker {worker}: {kib(worker, 'VmRSS') / 1024:.0f} MB resident at the end")


if __name__ == "__main__":
    main()
