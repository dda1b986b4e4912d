"""Real-size LoRA training steps: the BLIP-2 Flan-T5-XL architecture with random weights, bf16 and 8-bit.

    python scripts/bench_real_train.py --device cuda                  # both precisions, 12 steps each
    python scripts/bench_real_train.py --device cuda --modes 8bit --steps 30
    python scripts/bench_real_train.py --device cpu --shrink          # one layer per stack: the path, not the speed

No weights are downloaded: the published blip2-flan-t5-xl sizes (`scripts/bench.py`'s `real_size_config`,
3.94 B parameters) are built with random bf16 weights and saved once as a base-model folder, so each precision
loads through `training.finetune.load_base` exactly as a training job does (8-bit through bitsandbytes). Then
Loom's own `add_lora` (r=8, alpha=32, q,v) and `train_lora` run on a small synthetic catalog: the photos go
through the frozen image side once, as in a training job. Printed per precision: load seconds, trainable
parameters, seconds per step (after the first step), peak GPU memory, and whether every loss was finite.
Random weights make the losses meaningless; the times and memory are the real architecture's. The last line
is `8bit/bf16 step time <ratio>` when both ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

import bench  # noqa: E402  (scripts/bench.py: the real-size config and processor)
from training.config import from_hyperparameters  # noqa: E402
from training.data import PixelCache, VqaExample  # noqa: E402
from training.finetune import add_lora, load_base, train_lora  # noqa: E402
from training.synthetic import COLOURS, PATTERNS, SLEEVES, draw_shirt  # noqa: E402

ATTRIBUTES = ("baseColour", "pattern", "sleeveLength")


def write_random_base(out: Path, shrink: bool, device: torch.device) -> Path:
    """A base-model folder (config, bf16 safetensors, processor) in the real architecture, random weights
    (initialised on `device`: a GPU fills 3.94 B random numbers far faster than the CPU)."""
    config = bench.real_size_config()
    if shrink:  # same widths, one layer per stack: the CPU check of the path
        config.vision_config.num_hidden_layers = 1
        config.qformer_config.num_hidden_layers = 2
        config.text_config.num_layers = config.text_config.num_decoder_layers = 1
    predictor = bench.real_size_predictor(device.type, config)
    predictor.model.save_pretrained(out)
    predictor.processor.save_pretrained(out)
    del predictor
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def write_examples(images: Path, products: int) -> list[VqaExample]:
    """Questions about shirts drawn with known colour, pattern and sleeve length (one photo per product)."""
    from loom.schema import AttributeSchema

    schema = AttributeSchema.from_names(list(ATTRIBUTES))
    images.mkdir(parents=True, exist_ok=True)
    examples = []
    for i in range(products):
        values = dict(zip(ATTRIBUTES, (list(COLOURS)[i % len(COLOURS)], PATTERNS[i % len(PATTERNS)],
                                       SLEEVES[i % len(SLEEVES)])))
        draw_shirt(*values.values()).save(images / f"{i}.jpg")
        for name, value in values.items():
            examples.append(VqaExample(str(i), schema.question(name), schema.format_answer(name, value), name, value))
    return examples


def run_mode(mode: str, base: Path, examples: list[VqaExample], images: Path, device: torch.device,
             steps: int, batch_size: int, workdir: Path) -> dict:
    config = from_hyperparameters({"load_in_8bit": str(mode == "8bit").lower(), "max_steps": str(steps),
                                   "batch_size": str(batch_size), "log_every": str(steps),
                                   "checkpoint_every": str(10 * steps)})
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model, processor = load_base(str(base), device, dtype, load_in_8bit=mode == "8bit")
    load_s = time.perf_counter() - started
    model = add_lora(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pixels = PixelCache(images, processor.image_processor)
    losses: list[float] = []
    first = train_lora(model, processor, examples, pixels, config, device=device, dtype=dtype,
                       checkpoint_dir=workdir / f"{mode}-checkpoints", log=lambda _: None, stop_after=1)
    losses += [h["loss"] for h in first.loss_history]
    if device.type == "cuda":
        torch.cuda.synchronize()
    rest = train_lora(model, processor, examples, pixels, config, device=device, dtype=dtype,
                      checkpoint_dir=workdir / f"{mode}-checkpoints", log=lambda _: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    losses += [h["loss"] for h in rest.loss_history[1:]]
    result = {
        "mode": mode, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "load_s": round(load_s, 1), "trainable_params": trainable,
        "steps_timed": rest.steps - rest.resumed_from, "batch_size": batch_size,
        "s_per_step": round(rest.seconds / max(1, rest.steps - rest.resumed_from), 4),
        "first_step_s": first.seconds,
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "losses_finite": all(torch.isfinite(torch.tensor(x)).item() for x in losses),
        "int8_layers": sum(type(m).__name__ == "Linear8bitLt" for m in model.modules()),
    }
    pixels.close()
    del model
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default="bf16,8bit", help="comma-separated: bf16, 8bit")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per precision (first one untimed)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--products", type=int, default=16)
    parser.add_argument("--shrink", action="store_true", help="one layer per stack (a CPU check of the path)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - {"bf16", "8bit"}:
        parser.error(f"unknown mode(s) {sorted(unknown)}; use bf16 and/or 8bit")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="loom-real-train-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        base = write_random_base(work / "base", args.shrink, device)
        print(f"random base written in {time.perf_counter() - started:.1f} s "
              f"({sum(f.stat().st_size for f in base.glob('*.safetensors')) / 2**30:.2f} GiB of weights)", flush=True)
        examples = write_examples(work / "images", args.products)
        for mode in modes:
            result = run_mode(mode, base, examples, work / "images", device, args.steps, args.batch_size, work)
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    by_mode = {r["mode"]: r for r in results}
    if {"bf16", "8bit"} <= by_mode.keys():
        print(f"8bit/bf16 step time {by_mode['8bit']['s_per_step'] / by_mode['bf16']['s_per_step']:.2f}")
    return 0 if all(r["losses_finite"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
