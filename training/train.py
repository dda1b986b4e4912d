"""The SageMaker `train` program: LoRA fine-tune a BLIP-2 base, evaluate it, merge it, write the artifact.

SageMaker runs it as `train` in the training image. Locally, a folder stands in for /opt/ml:

    loom train --sm-root DIR [--device cpu]

    DIR/input/config/hyperparameters.json   {"name": "value", ...} (all strings; see training/config.py)
    DIR/input/data/train/                   vqa_train.csv + attribute_schema.json
    DIR/input/data/validation/              vqa_val.csv
    DIR/input/data/images/                  <id>.jpg
    DIR/input/data/base_model/              optional: a base model folder (else hyperparameter base_model)
    DIR/input/data/clip/                    optional: a CLIP artifact, scored beside BLIP-2 (or --clip-artifact DIR)
    DIR/model/                              the artifact (merged model, processor, manifest, metrics)
    DIR/output/data/adapter/                the LoRA adapter (SageMaker uploads it as output.tar.gz)
    DIR/output/data/evaluation/             metrics and predictions of a model that failed the quality gate
    DIR/output/failure                      why the job failed (only on failure)
    DIR/checkpoints/                        checkpoints (hyperparameter checkpoint_dir overrides)

The manifest's `base_model` is the hyperparameter `base_model` (name there what the channel holds). The
reported metrics are those of the saved artifact, reloaded and answered as `serve` does; a model that does
not beat the baseline fails the job (exit 3) and is not shipped (docs/training.md, "The quality gate").

Without --sm-root the root is /opt/ml, and the SM_* variables (SM_MODEL_DIR, SM_CHANNEL_<NAME>,
SM_OUTPUT_DATA_DIR, SM_OUTPUT_DIR, SM_INPUT_CONFIG_DIR) win where set. Stages are logged in order;
metrics are printed as `loom_metric` lines (training/metrics_regex.py has the SageMaker regexes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from loom.errors import command_error
from loom.artifact import (CLIP_BASELINE_METRICS, EVALUATION_DIR, ArtifactPaths, is_artifact, make_world_readable,
                           read_metrics)
from loom.schema import SCHEMA_FILE, AttributeSchema, SchemaError
from training.config import ConfigError, from_hyperparameters, read_hyperparameters
from training.data import DataError
from training.prepare import TRAIN_FILE, VAL_FILE
from training.job_folders import CHANNELS, SM_ROOT
from training.metrics_regex import metric_line, slug
from training.quality import QualityGateFailed

DEFAULT_SM_ROOT = Path(SM_ROOT)
USER_ERRORS = (ConfigError, DataError, SchemaError)


@dataclass(frozen=True)
class JobPaths:
    """Where a job reads its inputs and writes its outputs (the SageMaker folder contract)."""

    root: Path
    hyperparameters: Path
    train: Path
    validation: Path
    images: Path
    base_model: Path
    clip: Path
    model: Path
    output_data: Path
    failure: Path
    checkpoints: Path

    @classmethod
    def resolve(cls, sm_root: str | Path | None = None, env: Mapping[str, str] | None = None) -> "JobPaths":
        """Paths under sm_root; with no sm_root, /opt/ml with the SM_* variables of `env` applied."""
        env = os.environ if env is None else env
        use_env = sm_root is None
        root = Path(sm_root) if sm_root is not None else DEFAULT_SM_ROOT

        def pick(variable: str, default: Path) -> Path:
            value = env.get(variable) if use_env else None
            return Path(value) if value else default

        data = root / "input" / "data"
        channel = {name: pick(f"SM_CHANNEL_{name.upper()}", data / name) for name in CHANNELS}
        output = pick("SM_OUTPUT_DIR", root / "output")
        return cls(
            root=root,
            hyperparameters=pick("SM_INPUT_CONFIG_DIR", root / "input" / "config") / "hyperparameters.json",
            train=channel["train"], validation=channel["validation"], images=channel["images"],
            base_model=channel["base_model"], clip=channel["clip"],
            model=pick("SM_MODEL_DIR", root / "model"),
            output_data=pick("SM_OUTPUT_DATA_DIR", output / "data"),
            failure=output / "failure",
            checkpoints=root / "checkpoints",
        )


def layout_job(sm_root: str | Path, *, train: str | Path, validation: str | Path, images: str | Path,
               base_model: str | Path | None = None, clip: str | Path | None = None,
               hyperparameters: Mapping[str, str] | None = None) -> JobPaths:
    """Lay out a local stand-in for /opt/ml: channel folders as symlinks, hyperparameters.json as strings."""
    paths = JobPaths.resolve(sm_root)
    sources = {"train": train, "validation": validation, "images": images, "base_model": base_model, "clip": clip}
    for name, source in sources.items():
        if source is None:
            continue
        link = getattr(paths, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(Path(source).resolve(), target_is_directory=True)
    paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
    values = {k: str(v) for k, v in (hyperparameters or {}).items()}
    paths.hyperparameters.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return paths


def run_job(paths: JobPaths, *, device: str | None = None, log: Callable[[str], None] | None = None,
            stop_after: int | None = None, clip_artifact: str | Path | None = None) -> dict[str, Any]:
    """Every stage of a training job; returns metrics.json's dict. Raises on failure (main() reports it).

    `clip_artifact` (else the `clip` channel, when it holds an artifact): a CLIP model scored beside BLIP-2."""
    import torch
    from transformers import set_seed

    from training import evaluate, finetune, merge, quality
    from training.data import PixelCache, count_known_values, read_vqa_csv

    log = log or (lambda line: print(line, flush=True))
    started = time.perf_counter()

    def stage(number: int, text: str) -> None:
        log(f"[stage {number}/8] {text} ({time.perf_counter() - started:.1f} s)")

    stage(1, f"settings from {paths.hyperparameters}")
    hyperparameters = read_hyperparameters(paths.hyperparameters)
    config = from_hyperparameters(hyperparameters)
    if device:
        config.device = device
        config.validate()
    base_model = str(paths.base_model) if (paths.base_model / "config.json").is_file() else config.base_model
    if clip_artifact is None and is_artifact(paths.clip):
        clip_artifact = paths.clip
    if clip_artifact is not None:  # a wrong folder fails now, not after training
        from training.search.clip_baseline import check_clip_artifact

        log(f"CLIP zero-shot baseline from {clip_artifact} ({check_clip_artifact(clip_artifact)['base_model']})")
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else paths.checkpoints
    device_, dtype = finetune.resolve_device(config)
    set_seed(config.seed)
    log(f"base model {base_model}; device {device_} {str(dtype).replace('torch.', '')}; "
        f"checkpoints {checkpoint_dir}")

    stage(2, f"data from {paths.train}, {paths.validation}, {paths.images}")
    schema = AttributeSchema.load(paths.train / SCHEMA_FILE)
    train_examples = read_vqa_csv(paths.train / TRAIN_FILE, schema)
    val_examples = read_vqa_csv(paths.validation / VAL_FILE, schema)
    if not train_examples:
        raise DataError(f"{paths.train / TRAIN_FILE} holds no examples")
    schema = count_known_values(schema, train_examples)  # known values = what the model is trained on
    if config.max_eval_examples:
        val_examples = val_examples[:config.max_eval_examples]
    log(f"{len(train_examples)} training and {len(val_examples)} validation examples, "
        f"attributes {', '.join(schema.names)}")

    stage(3, "loading the base model")
    model, processor = finetune.load_base(base_model, device_, dtype, config.load_in_8bit)
    pixels = PixelCache(paths.images, processor.image_processor,
                        enabled=config.cache_pixels and not config.cache_image_features,
                        workers=config.decode_workers)
    pixels.check([e.id for e in train_examples + val_examples])

    def answers_of(m) -> list[evaluate.Prediction]:
        return evaluate.predict(evaluate.in_memory_predictor(m, processor, schema), val_examples, paths.images,
                                batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens,
                                progress=sys.stderr.isatty())

    stage(4, "baseline: the base model on the validation split")
    baseline = None
    if config.baseline and val_examples:
        key = quality.baseline_key(config.base_model, val_examples, config.max_new_tokens)
        baseline = quality.load_baseline(checkpoint_dir, key)
        if baseline is not None:
            log(f"baseline read from {checkpoint_dir / quality.BASELINE_FILE} (computed before an interruption)")
        else:
            baseline = answers_of(model)
            quality.save_baseline(checkpoint_dir, key, baseline)
        base_metrics = evaluate.score(val_examples, baseline, schema, baseline)["overall"]
        log(metric_line(val_baseline_exact_match=float(base_metrics["baseline_exact_match"] or 0.0)))

    stage(5, f"LoRA fine-tuning (r={config.lora_r}, alpha={config.lora_alpha}, "
             f"targets {','.join(config.lora_target_modules)})")
    model = finetune.add_lora(model, config)
    result = finetune.train_lora(model, processor, train_examples, pixels, config, device=device_, dtype=dtype,
                                 checkpoint_dir=checkpoint_dir, log=log, stop_after=stop_after)
    pixels.close()
    if result.steps < finetune.total_steps(config, len(train_examples)):
        raise InterruptedError(f"stopped after step {result.steps} as asked; a checkpoint is in {checkpoint_dir}")

    stage(6, f"the adapter on the validation split; merging it into the full-precision base; saving to {paths.model}")
    adapter_answers = answers_of(model) if val_examples else []
    adapter_dir = paths.output_data / "adapter"
    model.save_pretrained(adapter_dir)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    merged = merge.merge_adapter(base_model, adapter_dir)
    save_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "auto": dtype}[config.save_dtype]
    merge.save_merged(merged, processor, paths.model, dtype=save_dtype)
    del merged

    stage(7, "the saved artifact on the validation split, loaded and answered as serve does")
    artifact = ArtifactPaths.of(paths.model)
    merge.write_artifact_files(  # the manifest first: the server's loader reads it
        paths.model, schema, base_model=config.base_model, lora=config.lora_settings(), metrics={},
        name=config.artifact_name, hyperparameters=config.to_hyperparameters(),
        num_query_tokens=processor.num_query_tokens)
    answers, measured = evaluate.served_predictions(
        paths.model, val_examples, paths.images, device=device_, batch_size=config.eval_batch_size,
        max_new_tokens=config.max_new_tokens, progress=sys.stderr.isatty())
    metrics = evaluate.score(val_examples, answers, schema, baseline, adapter_answers or None)
    differences = quality.disagreements(metrics, config.served_tolerance)
    for line in differences:
        log(f"WARNING: the saved model does not answer like the adapter it was merged from: {line}")
    metrics["evaluation"] = {
        **measured, "saved_dtype": str(save_dtype).replace("torch.", ""),
        "adapter_dtype": str(dtype).replace("torch.", ""), "tolerance": config.served_tolerance,
        "agrees_with_adapter": not differences,
        "baseline": "the base model's raw answer names the expected value (case-insensitive, whole words)",
    }
    metrics["quality_gate"] = quality.gate(metrics, config)
    metrics["training"] = {
        "steps": result.steps, "epochs": result.epochs, "seconds": result.seconds,
        "final_loss": result.final_loss, "device": str(device_), "dtype": str(dtype).replace("torch.", ""),
        "train_examples": len(train_examples), "validation_examples": len(val_examples),
    }
    overall = metrics["overall"]
    log(metric_line(**{f"val_{k}": float(overall[k]) for k in
                       ("exact_match", "baseline_exact_match", "unknown_value_rate") if overall[k] is not None}))
    for name, m in metrics["attributes"].items():
        log(metric_line(**{f"val_{k}.{slug(name)}": float(m[k]) for k in ("exact_match", "baseline_exact_match")
                           if m[k] is not None}))
    log(evaluate.format_metrics(metrics))
    evaluate.write_predictions(artifact.predictions, answers, baseline)
    merge.write_loss_history(artifact.loss_history, result.loss_history)
    merge.write_artifact_files(
        paths.model, schema, base_model=config.base_model, lora=config.lora_settings(), metrics=metrics,
        name=config.artifact_name, hyperparameters=config.to_hyperparameters(),
        num_query_tokens=processor.num_query_tokens)
    if answers:
        from training import calibrate

        # Thresholds from the served answers just measured (one generation path): each value confidence
        # against whether the value was right; unparsed or unknown values are never stated.
        records = calibrate.records_from_predictions(answers, schema)
        calibration = calibrate.calibrate_artifact(paths.model, records, config.target_precision,
                                                 config.calibration_confidence)
        metrics = read_metrics(paths.model)
        log(calibrate.format_calibration(calibration))
    verdict = metrics["quality_gate"]
    if not verdict["passed"]:
        kept = reject_artifact(paths)
        raise QualityGateFailed(
            f"the fine-tuned model is not shipped: {verdict['reason']} (served exact match "
            f"{verdict['exact_match']:.4f}, baseline {verdict['baseline_exact_match']}); its evaluation is in "
            f"{kept}; set hyperparameter min_exact_match, or quality_gate=false to ship anyway")
    if not verdict["enabled"] and verdict["reason"]:
        log(f"WARNING: quality gate off; shipping a model that fails it: {verdict['reason']}")

    stage(8, "evaluation report" + (", with the CLIP zero-shot baseline" if clip_artifact else ""))
    if clip_artifact is not None and answers:
        from training.search.clip_baseline import evaluate_clip

        try:  # the model is saved and gated; a baseline that cannot be measured must not lose it
            metrics = {**metrics, CLIP_BASELINE_METRICS: evaluate_clip(paths.model, clip_artifact, paths.images,
                                                                  device=str(device_), log=log)}
        except Exception as exc:  # noqa: BLE001
            log(f"WARNING: the CLIP zero-shot baseline could not be measured ({type(exc).__name__}: {exc}); "
                f"the model in {paths.model} is complete")
    try:
        from training.report import write_report

        log(f"report: {write_report(paths.model, paths.images)}")
    except Exception as exc:  # noqa: BLE001 - the model is saved; a broken report must not lose it
        log(f"WARNING: the evaluation report could not be written ({type(exc).__name__}: {exc}); "
            f"the model in {paths.model} is complete")
    # Files written after the merge (evaluation, report) too: the serving container's user must read them all.
    make_world_readable(paths.model)
    log(f"done in {time.perf_counter() - started:.1f} s: {paths.model}")
    return metrics


def reject_artifact(paths: JobPaths) -> Path:
    """A model that failed the gate: its metrics and predictions move to output/data/evaluation (uploaded
    with the adapter), and the model folder is emptied so that nothing deployable is uploaded."""
    kept = paths.output_data / EVALUATION_DIR
    if kept.exists():
        shutil.rmtree(kept)
    artifact = ArtifactPaths.of(paths.model)
    shutil.copytree(artifact.evaluation, kept)
    shutil.copy2(artifact.metrics, kept / artifact.metrics.name)
    for item in paths.model.iterdir():
        shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    return kept


def write_failure(paths: JobPaths, error: BaseException) -> None:
    """The reason of a failure into output/failure (SageMaker shows it as the job's FailureReason)."""
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(f"{type(error).__name__}: {error}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    # prog: `train` inside the image (the console script), `loom train` from the front door.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # SageMaker starts the image as `docker run IMAGE train`; tolerate that word as an argument.
    parser.add_argument("program", nargs="?", choices=["train"], help=argparse.SUPPRESS)
    parser.add_argument("--sm-root", type=Path, help="folder standing in for /opt/ml (local runs, tests)")
    parser.add_argument("--device", help="override the device: cpu, cuda or cuda:N")
    parser.add_argument("--clip-artifact", type=Path, metavar="DIR",
                        help="a CLIP artifact whose zero-shot tags are scored on the same validation questions and "
                             "shown beside BLIP-2 in the report (SageMaker: the optional `clip` channel)")
    args = parser.parse_args(argv)
    if args.sm_root is not None and not (args.sm_root / "input").is_dir():
        # Refused before any folder is made: a local run needs a job laid out under it first.
        return command_error(f"--sm-root {args.sm_root} holds no SageMaker job (no input/ folder): lay one out "
                             "with training.train.layout_job (as `loom demo` does), or run inside the image")
    paths = JobPaths.resolve(args.sm_root)
    if paths.failure.exists():
        paths.failure.unlink()
    try:
        run_job(paths, device=args.device, clip_artifact=args.clip_artifact)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach output/failure
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        write_failure(paths, exc)
        if not isinstance(exc, USER_ERRORS + (QualityGateFailed,)):
            traceback.print_exc()
        sys.stdout.flush()
        return command_error(f"{type(exc).__name__}: {exc}",
                             2 if isinstance(exc, USER_ERRORS) else 3 if isinstance(exc, QualityGateFailed) else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
