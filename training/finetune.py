"""LoRA fine-tuning of a BLIP-2 base: load, wrap with LoRA, the training loop, checkpoints, resume.

The loop is plain PyTorch so that it reads top to bottom; peft supplies LoRA, transformers the model,
the learning-rate schedule and (for 8-bit) bitsandbytes loading. Checkpoints are written to
`<checkpoint_dir>/step-XXXXXXXX/` (adapter, optimizer, scheduler, RNG, loss history) with a
`COMPLETE` marker written last, so that a checkpoint cut off by a spot interruption is never resumed.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from runtime.devices import pick_device, pick_dtype
from training.config import TrainingConfig
from training.data import PixelCache, VqaExample, micro_batches, training_batch
from training.features import ImageFeatures, loss_with_features
from training.metrics_regex import metric_line

CHECKPOINT_PREFIX = "step-"
COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.pt"
ADAPTER_DIR = "adapter"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: the run stops instead of saving a broken model."""


# --- device, precision and the base model -----------------------------------------------------------


def resolve_device(config: TrainingConfig) -> tuple[torch.device, torch.dtype]:
    """cuda when available (bf16 where supported), else cpu in fp32; config.device/precision override."""
    device = pick_device(config.device)
    if config.precision == "fp32" or device.type == "cpu":
        if config.precision == "bf16" and device.type == "cpu":
            print("note: precision bf16 is ignored on cpu; training in fp32", flush=True)
        return device, torch.float32
    # An explicit bf16 is honoured; "auto" follows the serving rule (bf16 where supported, never fp16).
    return device, torch.bfloat16 if config.precision == "bf16" else pick_dtype(device)


def load_base(path: str, device: torch.device, dtype: torch.dtype, load_in_8bit: bool = False):
    """(model, processor) of a BLIP-2 base from a hub id or a folder, on `device` in `dtype`."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from runtime.predictor import check_image_token_setup

    processor = Blip2Processor.from_pretrained(path)
    kwargs = {"dtype": dtype}
    if load_in_8bit:
        # bitsandbytes runs 8-bit layers on CUDA and (since 0.45) on CPU.
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                      device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
    model = Blip2ForConditionalGeneration.from_pretrained(path, **kwargs)
    if not load_in_8bit:
        model.to(device)
    check_image_token_setup(model, processor)  # the same check the server makes at load
    return model, processor


def add_lora(model, config: TrainingConfig):
    """The base wrapped with fresh LoRA adapters (only they are trainable)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.load_in_8bit:
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_target_modules), bias=config.lora_bias)
    return get_peft_model(model, lora)


# --- checkpoints ------------------------------------------------------------------------------------


def checkpoint_path(checkpoint_dir: str | Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}{step:08d}"


def complete_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The complete checkpoints in a folder, oldest first (incomplete ones are ignored)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / COMPLETE_MARKER).is_file():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def save_checkpoint(checkpoint_dir: str | Path, step: int, model, optimizer, scheduler,
                    loss_history: list[dict], keep: int) -> Path:
    """Write adapter + optimizer + scheduler + RNG + step, mark it complete, keep the newest `keep`."""
    path = checkpoint_path(checkpoint_dir, step)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    model.save_pretrained(path / ADAPTER_DIR)
    torch.save({
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "loss_history": loss_history,
    }, path / TRAINER_STATE)
    (path / COMPLETE_MARKER).write_text(json.dumps({"step": step, "time": time.time()}) + "\n")
    for old in complete_checkpoints(checkpoint_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_trainer_state(path: Path) -> dict:
    """The trainer state of a checkpoint (step, optimizer, scheduler, RNG, loss history), unpickled with
    `weights_only=True`: tensors and plain containers and numbers only. A checkpoint folder is read back from
    S3 (SageMaker's checkpoint sync), and a full unpickler runs whatever code a planted `trainer_state.pt`
    names (https://pytorch.org/docs/stable/generated/torch.load.html: "weights_only=False ... can result in
    arbitrary code execution"; True is the default since PyTorch 2.6)."""
    import pickle

    try:
        return torch.load(path / TRAINER_STATE, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"checkpoint {path} holds a trainer state that is not plain tensors and values: refusing "
                         f"to unpickle it ({str(exc).splitlines()[0]})") from None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore a checkpoint into model/optimizer/scheduler and the RNGs; (step, loss history)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / ADAPTER_DIR / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"checkpoint {path} does not fit this model: unexpected {result.unexpected_keys[:3]}")
    state = read_trainer_state(path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), list(state["loss_history"])


# --- the loop ---------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    epochs: float
    seconds: float
    final_loss: float
    resumed_from: int = 0
    loss_history: list[dict] = field(default_factory=list)


def total_steps(config: TrainingConfig, examples: int) -> int:
    """Optimizer steps of the run: max_steps, or enough for `epochs` passes over the examples."""
    if config.max_steps:
        return config.max_steps
    per_epoch = math.ceil(examples / config.batch_size)
    return max(1, math.ceil(config.epochs * per_epoch / config.gradient_accumulation))


def train_lora(model, processor, examples: Sequence[VqaExample], pixels: PixelCache, config: TrainingConfig,
               *, device: torch.device, dtype: torch.dtype, checkpoint_dir: str | Path,
               log: Callable[[str], None] = print, stop_after: int | None = None) -> TrainResult:
    """Train the LoRA-wrapped `model` in place; resumes from the newest checkpoint in `checkpoint_dir`.

    `stop_after` ends the run after that many steps of this call (tests use it to simulate an interruption).
    """
    from transformers import get_scheduler

    if not examples:
        raise ValueError("no training examples")
    steps = total_steps(config, len(examples))
    accumulation = config.gradient_accumulation
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule if config.lr_schedule != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=int(config.warmup_ratio * steps), num_training_steps=steps)

    step, history = 0, []
    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        step, history = load_checkpoint(resume, model, optimizer, scheduler)
        log(f"resumed from {resume} at step {step}/{steps}")
    resumed_from = step

    micro = micro_batches(len(examples), config.batch_size, config.seed, start=step * accumulation)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc="training", unit="step")
    model.train()
    # Each product photo through the frozen image side once for the run (training/features.py).
    features = ImageFeatures(model, pixels, device=device, dtype=dtype, cache=config.cache_image_features)
    upcoming = [examples[i] for i in next(micro)]
    started = time.perf_counter()
    running: list[float] = []
    while step < steps and (stop_after is None or step - resumed_from < stop_after):
        step_loss = 0.0
        for _ in range(accumulation):
            chunk, upcoming = upcoming, [examples[i] for i in next(micro)]
            features.prefetch([e.id for e in upcoming])  # decoded on the pool while this batch trains
            batch = {k: v.to(device) for k, v in training_batch(chunk, processor).items()}
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = loss_with_features(model, batch, features([e.id for e in chunk])) / accumulation
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1}: stopping without saving a model "
                                       f"(try a lower learning_rate, or precision fp32)")
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        lr = scheduler.get_last_lr()[0]
        history.append({"step": step, "loss": round(step_loss, 6), "learning_rate": lr})
        running.append(step_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
        if step % config.log_every == 0 or step == steps:
            epoch = step * accumulation / per_epoch
            log(metric_line(train_loss=sum(running) / len(running), step=step, epoch=round(epoch, 3),
                            learning_rate=lr))
            running = []
        if step % config.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, step, model, optimizer, scheduler, history, config.keep_checkpoints)
    if bar is not None:
        bar.close()
    model.eval()
    # A checkpoint at the last step too: a job interrupted while evaluating or merging resumes there.
    latest = latest_checkpoint(checkpoint_dir)
    if latest is None or latest != checkpoint_path(checkpoint_dir, step):
        save_checkpoint(checkpoint_dir, step, model, optimizer, scheduler, history, config.keep_checkpoints)
    recent = [h["loss"] for h in history[-max(1, config.log_every):]]
    return TrainResult(steps=step, epochs=round(step * accumulation / per_epoch, 4),
                       seconds=round(time.perf_counter() - started, 2),
                       final_loss=round(sum(recent) / len(recent), 6) if recent else float("nan"),
                       resumed_from=resumed_from, loss_history=history)
