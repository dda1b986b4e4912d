"""Training-step benchmark: every question row through the vision tower (the old way) against each photo
once (training/features.py), side by side in one process, on a model whose vision part is as dominant as
BLIP-2 Flan-T5-XL's ViT-g.

    python scripts/bench_train.py [--products 32] [--batch-size 8] [--epochs 1] [--quick]

The model is an untrained tiny BLIP-2 whose vision tower (224 px, patch 14: 257 tokens, as ViT-g) is widened,
then deepened, until the image side's measured share of an old-way LoRA training step is at least the
real model's share by FLOP count (`scripts/bench.py`'s counts: about 0.68). Both ways train the same LoRA start on the same shuffled batches over
`--epochs` passes of `--products` products x 8 questions; the new way includes encoding each photo the first
time it is seen. The last line is `speedup <old time / new time>`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench  # noqa: E402  (scripts/bench.py: the vision-dominant model and the FLOP counts)

from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema  # noqa: E402
from training.config import from_hyperparameters  # noqa: E402
from training.data import PixelCache, VqaExample, micro_batches, training_batch  # noqa: E402
from training.features import ImageFeatures, loss_per_row_images, loss_with_features  # noqa: E402
from training.finetune import add_lora, load_base  # noqa: E402
from training.synthetic import COLOURS, PATTERNS, SLEEVES, draw_shirt  # noqa: E402

CPU = torch.device("cpu")


def image_share(config, answer_tokens: int = 5) -> float:
    """The image side's share of the FLOPs of one LoRA training row, the old way: the image forward once,
    the text side forward and backward (activation gradients: about twice its forward)."""
    costs = bench.flop_costs(config, bench.component_params(bench.meta_model(config)), answer_tokens)
    return costs["image"] / (costs["image"] + 2 * costs["question"])


def measured_image_share(model, processor, examples, pixels, batch_size: int) -> float:
    """The image side's share of the time of one whole old-way training step (tokenising, forward, backward,
    optimizer), measured: the fastest of 5 runs each, the least disturbed on shared cores."""
    from training.features import blip2

    chunk = examples[:batch_size]
    pixel_values = pixels.batch([e.id for e in chunk])
    trial = Trainer(copy.deepcopy(model), processor, examples, pixels, once=False)
    image, step = [], []
    for _ in range(5):
        started = time.perf_counter()
        with torch.no_grad():
            blip2(model).get_image_features(pixel_values=pixel_values)
        image.append(time.perf_counter() - started)
        before = trial.seconds
        trial.step(list(range(len(chunk))))
        step.append(trial.seconds - before)
    return min(image) / min(step)


def build_model(out: Path, target_share: float, width: int, examples, images: Path, batch_size: int):
    """The smallest vision tower (224 px, patch 14; first wider up to `width`, then deeper) whose measured
    image share of an old-way step reaches `target_share`; (LoRA-wrapped model, processor, pixels, share)."""
    config = from_hyperparameters({"lora_dropout": "0"})
    sizes = [(1, w) for w in (32, 64, 96, 128, 192, 256, 384, 512) if w < width] + [(n, width) for n in range(1, 25)]
    for layers, wide in sizes:
        folder = bench.build_tiny_artifact(out / f"model-{layers}-{wide}", vision_layers=layers, vision_width=wide)
        base, processor = load_base(str(folder), CPU, torch.float32)
        torch.manual_seed(0)
        model = add_lora(base, config)
        pixels = PixelCache(images, processor.image_processor)  # decoded once for both ways: not timed
        pixels.batch(list(dict.fromkeys(e.id for e in examples)))
        share = measured_image_share(model, processor, examples, pixels, batch_size)
        if share >= target_share:
            break
    return model, processor, pixels, share


def examples_for(products: int, schema: AttributeSchema, images: Path) -> list[VqaExample]:
    rows = []
    colours = list(COLOURS)
    for i in range(products):
        colour, pattern, sleeve = colours[i % len(colours)], PATTERNS[i % len(PATTERNS)], SLEEVES[i % len(SLEEVES)]
        draw_shirt(colour, pattern, sleeve, (168, 224)).save(images / f"{i}.jpg")
        for name in schema.names:
            rows.append(VqaExample(str(i), schema.question(name), schema.format_answer(name, colour), name, colour))
    return rows


class Trainer:
    """One way of training the LoRA start: its own copy of the model and optimizer, its time and losses."""

    def __init__(self, model, processor, examples, pixels, *, once: bool):
        self.model, self.processor, self.examples, self.pixels, self.once = model, processor, examples, pixels, once
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.features = ImageFeatures(model, pixels, device=CPU, dtype=torch.float32)
        self.seconds, self.losses, self.per_row_encodings = 0.0, [], 0
        model.train()

    @property
    def encoded(self) -> int:
        return self.features.encoded if self.once else self.per_row_encodings

    def step(self, indices: list[int]) -> None:
        started = time.perf_counter()
        chunk = [self.examples[i] for i in indices]
        batch = training_batch(chunk, self.processor)
        if self.once:
            loss = loss_with_features(self.model, batch, self.features([e.id for e in chunk]))
        else:
            loss = loss_per_row_images(self.model, batch, self.pixels.batch([e.id for e in chunk]))
            self.per_row_encodings += len(chunk)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        self.seconds += time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--vision-width", type=int, default=256, help="widest vision tower before deepening it")
    parser.add_argument("--quick", action="store_true", help="3 products, 2 steps (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.products, args.epochs = 3, 1
    torch.manual_seed(0)
    real = image_share(bench.real_size_config())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
        examples = examples_for(args.products, schema, images)
        start, processor, pixels, share = build_model(tmp, real, args.vision_width, examples, images,
                                                      args.batch_size)
        per_epoch = -(-len(examples) // args.batch_size)
        stream = micro_batches(len(examples), args.batch_size, seed=0)
        batches = [next(stream) for _ in range(per_epoch * args.epochs)]
        # Two copies of the same LoRA start; their steps alternate, so that both see the same load on the cores.
        old = Trainer(start, processor, examples, pixels, once=False)
        new = Trainer(copy.deepcopy(start), processor, examples, pixels, once=True)
        for indices in batches:
            old.step(indices)
            new.step(indices)

    layers = start.config.vision_config.num_hidden_layers
    args.vision_width = start.config.vision_config.hidden_size
    print(f"model: vision {layers} layers x {args.vision_width} wide on 257 tokens; image share of a training "
          f"step {share:.2f}, measured (BLIP-2 Flan-T5-XL: {real:.2f} by FLOP count)")
    print(f"{len(batches)} steps of {args.batch_size} questions over {args.products} products x "
          f"{len(schema.names)} questions, {args.epochs} epoch(s), CPU {torch.get_num_threads()} thread(s)")
    print(f"old way (every row through the vision tower): {old.seconds:.2f} s, {old.encoded} image encodings")
    print(f"new way (each photo once, frozen features):   {new.seconds:.2f} s, {new.encoded} image encodings")
    print(f"largest loss difference over the run: {max(abs(a - b) for a, b in zip(old.losses, new.losses)):.2e}")
    print(f"speedup {old.seconds / new.seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
