"""Merging the LoRA adapter into the base and writing the model artifact.

An adapter cannot be merged cleanly into an 8-bit (or bf16-rounded) base, so the base is reloaded in
full precision on the CPU, the adapter applied, `merge_and_unload()` called, and the result saved with
`save_pretrained` (safetensors) next to the processor, the manifest and the evaluation files:

    MODEL_DIR/config.json, model.safetensors, processor + tokenizer files
    MODEL_DIR/loom_manifest.json                 loom.artifact (the owner of these names)
    MODEL_DIR/metrics.json                       the same dict as the manifest's "metrics"
    MODEL_DIR/evaluation/predictions.csv         id,attribute,expected,predicted,baseline,correct,baseline_correct
    MODEL_DIR/evaluation/loss_history.csv        step,loss,learning_rate
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from loom.artifact import make_world_readable, write_manifest, write_metrics
from loom.schema import AttributeSchema


def merge_adapter(base_model: str | Path, adapter_dir: str | Path):
    """The base (reloaded in fp32 on the CPU) with the adapter merged in: a plain Blip2ForConditionalGeneration."""
    from peft import PeftModel
    from transformers import Blip2ForConditionalGeneration

    base = Blip2ForConditionalGeneration.from_pretrained(str(base_model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.eval()
    return merged


def save_merged(model, processor, model_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """save_pretrained of the merged model (safetensors, in `dtype`; converted in place) and its processor."""
    model_dir = Path(model_dir)
    if dtype != torch.float32:
        model = model.to(dtype)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    processor.save_pretrained(model_dir)
    return make_world_readable(model_dir)


def write_loss_history(path: str | Path, history: list[Mapping[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("step", "loss", "learning_rate"))
        for row in history:
            writer.writerow((row["step"], row["loss"], row["learning_rate"]))
    return path


def write_artifact_files(model_dir: str | Path, schema: AttributeSchema, *, base_model: str,
                         lora: Mapping[str, Any], metrics: Mapping[str, Any] | None, name: str,
                         hyperparameters: Mapping[str, Any], num_query_tokens: int,
                         calibration: Mapping[str, Any] | None = None) -> Path:
    """loom_manifest.json (metrics and calibration embedded) and metrics.json into a model folder; the
    manifest path. `metrics` None: the manifest alone, with no metrics yet (what the loader reads)."""
    if metrics is not None:
        write_metrics(model_dir, metrics)
    return write_manifest(
        model_dir, schema, base_model=base_model, lora=dict(lora), metrics=dict(metrics or {}),
        extra={
            "name": name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hyperparameters": dict(hyperparameters),
            "num_query_tokens": int(num_query_tokens),
            **({"calibration": dict(calibration)} if calibration is not None else {}),
        },
    )
