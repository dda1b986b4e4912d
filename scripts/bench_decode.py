"""Decode benchmark: a large product JPEG decoded in full against decoded with the JPEG draft
(`runtime.images.decode_image(..., draft_side=...)`), each followed by BLIP-2's image processor,
side by side in one process, alternating, on one thread.

    python scripts/bench_decode.py [--size 1800x2400] [--input-side 224] [--repeats 20] [--grain]

The photo is the project's drawn shirt (training/synthetic.py) saved as JPEG quality 90; with `--grain`,
with camera-like noise and a 1-pixel blur first (a larger, more photo-like file). The draft side is
`draft_side_for` of a `BlipImageProcessorPil` of `--input-side` (twice that side), as the server and training
use it. Also printed: the largest and mean difference of the two pixel tensors (normalised units).
The last line is `speedup <full time / draft time>` (medians).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil  # noqa: E402

from runtime.images import decode_image, draft_side_for  # noqa: E402
from training.synthetic import draw_shirt  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1800x2400", help="photo width x height in pixels")
    parser.add_argument("--input-side", type=int, default=224, help="the model's input side (BLIP-2: 224)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--grain", action="store_true", help="add camera-like noise and blur to the drawing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    buffer = io.BytesIO()
    photo = draw_shirt("Red", "Striped", "Long Sleeves", (width, height))
    if args.grain:
        noise = Image.effect_noise((width, height), 24).convert("RGB")
        photo = Image.blend(photo, noise, 0.15).filter(ImageFilter.GaussianBlur(1))
    photo.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    processor = BlipImageProcessorPil(size={"height": args.input_side, "width": args.input_side})
    side = draft_side_for(processor)

    def pixels(draft: int | None) -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        image = decode_image(data, draft_side=draft)
        tensor = processor(image, return_tensors="pt").pixel_values[0]
        return tensor, time.perf_counter() - started

    pixels(None), pixels(side)  # warm-up
    full_times, draft_times = [], []
    for _ in range(args.repeats):
        full, seconds = pixels(None)
        full_times.append(seconds)
        drafted, seconds = pixels(side)
        draft_times.append(seconds)
    full_ms, draft_ms = statistics.median(full_times) * 1000, statistics.median(draft_times) * 1000
    difference = (full - drafted).abs()
    grain = " with grain" if args.grain else ""
    print(f"photo {width}x{height}{grain} JPEG q90, {len(data) // 1024} KiB; input side {args.input_side}, "
          f"draft side {side} -> decoded {decode_image(data, draft_side=side).size}")
    print(f"full decode + preprocess   {full_ms:7.1f} ms (median of {args.repeats})")
    print(f"draft decode + preprocess  {draft_ms:7.1f} ms (median of {args.repeats})")
    print(f"pixel difference: max {difference.max():.4f}, mean {difference.mean():.4f} (normalised units)")
    print(f"speedup {full_ms / draft_ms:.1f}")


if __name__ == "__main__":
    main()
