"""The SageMaker `train` program: LoRA fine-tune a BLIP-2 base, evaluate it, merge it, write the artifact.

SageMaker runs it as `train` in the training image. Locally, a folder stands in for /opt/ml:

    loom train --sm-root DIR [--device cpu]

    DIR/input/config/hyperparameters.json   {"name": "value", ...} (all strings; see training/config.py)
    DIR/input/data/train/                   vqa_train.csv (or hyperparameter train_file / file-name) and
                                            attribute_schema.json (without it: inferred from the answers);
                                            input_file/ stands in when there is no train/ (the fashion post's name)
    DIR/input/data/validation/              vqa_val.csv (without it: val_fraction of the training file's products)
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
from loom.artifact import (CLIP_BASELINE_METRICS, EVALUATION_DIR, ArtifactPaths, calibration_metrics, is_artifact,
                           make_world_readable)
from loom.schema import SCHEMA_FILE, AttributeSchema, SchemaError
from training.config import ConfigError, from_hyperparameters, read_hyperparameters
from training.data import DataError, read_vqa_csv
from training.prepare import TRAIN_FILE, VAL_FILE
from training.job_folders import CHANNEL_ALIASES, CHANNELS, SM_ROOT, TRAIN_CHANNEL
from training.metrics_regex import SeedLossLines, metric_line, slug
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
    train_channel: str = "train"  # the channel the training CSV came from ("input_file": the post's name)

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
        names = {name: name for name in CHANNELS}
        for alias, name in CHANNEL_ALIASES.items():  # an alias stands in only for a channel that is not there
            aliased = pick(f"SM_CHANNEL_{alias.upper()}", data / alias)
            if not channel[name].exists() and aliased.exists():
                channel[name], names[name] = aliased, alias
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
            train_channel=names[TRAIN_CHANNEL],
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
        link = paths.root / "input" / "data" / name  # Loom's channel names (an alias is only read)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(Path(source).resolve(), target_is_directory=True)
    paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
    values = {k: str(v) for k, v in (hyperparameters or {}).items()}
    paths.hyperparameters.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return JobPaths.resolve(sm_root)


def run_job(paths: JobPaths, *, device: str | None = None, log: Callable[[str], None] | None = None,
            stop_after: int | None = None, clip_artifact: str | Path | None = None) -> dict[str, Any]:
    """Every stage of a training job, in order; returns metrics.json's dict. Raises on failure (main() reports it).

    `clip_artifact` (else the `clip` channel, when it holds an artifact): a CLIP model scored beside BLIP-2.
    Each stage is a function that returns what the next ones need. The metrics are built in memory and
    written once, with the final manifest, after calibration; the only earlier write is the manifest the
    server's loader reads before the saved model is evaluated."""
    log = log or (lambda line: print(line, flush=True))
    started = time.perf_counter()

    def stage(number: int, text: str) -> None:
        log(f"[stage {number}/8] {text} ({time.perf_counter() - started:.1f} s)")

    stage(1, f"settings from {paths.hyperparameters}")
    job = job_settings(paths, device, clip_artifact, log)
    stage(2, f"data from {paths.train}, {paths.validation}, {paths.images}")
    data = read_data(paths, job.config, log)
    stage(3, "loading the base model")
    model, processor, pixels = load_base(paths, job, data)
    stage(4, "baseline: the base model on the validation split")
    baseline = baseline_answers(model, processor, paths, job, data, log)
    stage(5, f"LoRA fine-tuning (r={job.config.lora_r}, alpha={job.config.lora_alpha}, "
             f"targets {','.join(job.config.lora_target_modules)})")
    model, result = fine_tune(model, processor, pixels, job, data, log, stop_after)
    stage(6, f"the adapter on the validation split; merging it into the full-precision base; saving to {paths.model}")
    adapter_answers, save_dtype = save_model(model, processor, paths, job, data)
    stage(7, "the saved artifact on the validation split, loaded and answered as serve does")
    answers, metrics = evaluate_saved(paths, job, data, baseline, adapter_answers, save_dtype, result, log)
    calibration = calibrate_answers(paths, job, data, answers, log)
    if calibration is not None:
        metrics["calibration"] = calibration_metrics(calibration)
    write_artifact(paths, job, data, processor, metrics, calibration)
    check_gate(paths, metrics, log)
    stage(8, "evaluation report" + (", with the CLIP zero-shot baseline" if job.clip_artifact else ""))
    metrics = report(paths, job, metrics, bool(answers), log)
    make_world_readable(paths.model)  # files written after the merge too: the serving user must read them all
    log(f"done in {time.perf_counter() - started:.1f} s: {paths.model}")
    return metrics


@dataclass(frozen=True)
class JobSettings:
    """Stage 1: what the job runs with."""

    config: Any  # training.config.TrainingConfig
    base_model: str  # the folder of the base_model channel, or the hyperparameter's hub id
    clip_artifact: Path | None
    checkpoint_dir: Path
    device: Any  # torch.device
    dtype: Any  # torch.dtype


@dataclass(frozen=True)
class JobData:
    """Stage 2: the schema and the examples, and where they came from (recorded in metrics["data"])."""

    schema: AttributeSchema
    train: list
    validation: list
    inputs: dict[str, Any]


def job_settings(paths: JobPaths, device: str | None, clip_artifact: str | Path | None,
                 log: Callable[[str], None]) -> JobSettings:
    from transformers import set_seed

    from training import finetune

    config = from_hyperparameters(read_hyperparameters(paths.hyperparameters))
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
    return JobSettings(config, base_model, Path(clip_artifact) if clip_artifact is not None else None,
                       checkpoint_dir, device_, dtype)


def read_data(paths: JobPaths, config, log: Callable[[str], None]) -> JobData:
    """The training file (hyperparameter train_file, else vqa_train.csv) of the train channel (or its alias
    input_file); the schema from attribute_schema.json, else inferred from the answers; the validation
    channel's vqa_val.csv, else a split of the training file by product."""
    from training.data import count_known_values, examples_of, infer_schema, read_vqa_rows, split_by_product

    train_file = paths.train / (config.train_file or TRAIN_FILE)
    rows = read_vqa_rows(train_file)
    if not rows:
        raise DataError(f"{train_file} holds no examples")
    schema_file = paths.train / SCHEMA_FILE
    if schema_file.is_file():
        schema, schema_source = AttributeSchema.load(schema_file), str(schema_file)
    else:
        schema, schema_source = infer_schema(rows, str(train_file)), f"inferred from the answers of {train_file}"
    train_examples = examples_of(rows, schema, str(train_file))
    val_file = paths.validation / VAL_FILE
    if val_file.is_file():
        val_examples, validation_source = read_vqa_csv(val_file, schema), str(val_file)
    else:
        train_examples, val_examples = split_by_product(train_examples, config.val_fraction, config.seed)
        validation_source = (f"{config.val_fraction:g} of the products of {train_file} (seed {config.seed}); "
                             f"no {VAL_FILE} in the validation channel")
    schema = count_known_values(schema, train_examples)  # known values = what the model is trained on
    if config.max_eval_examples:
        val_examples = val_examples[:config.max_eval_examples]
    inputs = {"train_channel": paths.train_channel, "train_file": str(train_file), "schema": schema_source,
              "validation": validation_source, "train_products": len({e.id for e in train_examples}),
              "validation_products": len({e.id for e in val_examples})}
    log(f"{len(train_examples)} training and {len(val_examples)} validation examples, "
        f"attributes {', '.join(schema.names)}")
    log(f"training file {train_file} (channel {paths.train_channel}); schema: {schema_source}; "
        f"validation: {validation_source}")
    return JobData(schema, train_examples, val_examples, inputs)


def load_base(paths: JobPaths, job: JobSettings, data: JobData):
    """The base model and processor, and the pixel cache of every photo the job uses (checked now)."""
    from training import finetune
    from training.data import PixelCache

    config = job.config
    model, processor = finetune.load_base(job.base_model, job.device, job.dtype, config.load_in_8bit)
    pixels = PixelCache(paths.images, processor.image_processor,
                        enabled=config.cache_pixels and not config.cache_image_features,
                        workers=config.decode_workers)
    pixels.check([e.id for e in data.train + data.validation])
    return model, processor, pixels


def answers_of(model, processor, paths: JobPaths, job: JobSettings, data: JobData) -> list:
    """A model in memory answering the validation questions."""
    from training import evaluate

    return evaluate.predict(evaluate.in_memory_predictor(model, processor, data.schema), data.validation,
                            paths.images, batch_size=job.config.eval_batch_size,
                            max_new_tokens=job.config.max_new_tokens, progress=sys.stderr.isatty())


def baseline_answers(model, processor, paths: JobPaths, job: JobSettings, data: JobData,
                     log: Callable[[str], None]) -> list | None:
    """The base model's answers (kept in the checkpoint folder, so a resumed job does not recompute them)."""
    from training import evaluate, quality

    config = job.config
    if not (config.baseline and data.validation):
        return None
    key = quality.baseline_key(config.base_model, data.validation, config.max_new_tokens)
    baseline = quality.load_baseline(job.checkpoint_dir, key)
    if baseline is not None:
        log(f"baseline read from {job.checkpoint_dir / quality.BASELINE_FILE} (computed before an interruption)")
    else:
        baseline = answers_of(model, processor, paths, job, data)
        quality.save_baseline(job.checkpoint_dir, key, baseline)
    base_metrics = evaluate.score(data.validation, baseline, data.schema, baseline)["overall"]
    log(metric_line(val_baseline_exact_match=float(base_metrics["baseline_exact_match"] or 0.0)))
    return baseline


def fine_tune(model, processor, pixels, job: JobSettings, data: JobData, log: Callable[[str], None],
              stop_after: int | None):
    """The LoRA-wrapped model, trained; and the run's TrainResult. The log also carries the fashion post's
    `Loss:` / `Epoch Loss:` lines (training/metrics_regex.py)."""
    from training import finetune

    model = finetune.add_lora(model, job.config)
    seed_lines = SeedLossLines(log)
    result = finetune.train_lora(model, processor, data.train, pixels, job.config, device=job.device,
                                 dtype=job.dtype, checkpoint_dir=job.checkpoint_dir, log=seed_lines,
                                 stop_after=stop_after)
    seed_lines.finish()
    pixels.close()
    if result.steps < finetune.total_steps(job.config, len(data.train)):
        raise InterruptedError(f"stopped after step {result.steps} as asked; a checkpoint is in {job.checkpoint_dir}")
    return model, result


def save_model(model, processor, paths: JobPaths, job: JobSettings, data: JobData):
    """The adapter's validation answers; the adapter saved, merged into the full-precision base and the merged
    model saved with the manifest the loader reads (no metrics yet). Returns (adapter answers, saved dtype)."""
    import torch

    from training import merge

    adapter_answers = answers_of(model, processor, paths, job, data) if data.validation else []
    adapter_dir = paths.output_data / "adapter"
    model.save_pretrained(adapter_dir)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    merged = merge.merge_adapter(job.base_model, adapter_dir)
    save_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "auto": job.dtype}[job.config.save_dtype]
    merge.save_merged(merged, processor, paths.model, dtype=save_dtype)
    del merged
    merge.write_artifact_files(paths.model, data.schema, metrics=None, **manifest_fields(job, processor))
    return adapter_answers, save_dtype


def manifest_fields(job: JobSettings, processor) -> dict[str, Any]:
    config = job.config
    return {"base_model": config.base_model, "lora": config.lora_settings(), "name": config.artifact_name,
            "hyperparameters": config.to_hyperparameters(), "num_query_tokens": processor.num_query_tokens}


def evaluate_saved(paths: JobPaths, job: JobSettings, data: JobData, baseline, adapter_answers, save_dtype,
                   result, log: Callable[[str], None]) -> tuple[list, dict[str, Any]]:
    """The saved artifact reloaded as `serve` loads it and its validation answers; the metrics, in memory:
    exact match against the baseline and the adapter, how it was measured, the quality gate's verdict, the
    training run and where the data came from."""
    from training import evaluate, quality

    config = job.config
    answers, measured = evaluate.served_predictions(
        paths.model, data.validation, paths.images, device=job.device, batch_size=config.eval_batch_size,
        max_new_tokens=config.max_new_tokens, progress=sys.stderr.isatty())
    metrics = evaluate.score(data.validation, answers, data.schema, baseline, adapter_answers or None)
    differences = quality.disagreements(metrics, config.served_tolerance)
    for line in differences:
        log(f"WARNING: the saved model does not answer like the adapter it was merged from: {line}")
    metrics["evaluation"] = {
        **measured, "saved_dtype": str(save_dtype).replace("torch.", ""),
        "adapter_dtype": str(job.dtype).replace("torch.", ""), "tolerance": config.served_tolerance,
        "agrees_with_adapter": not differences,
        "baseline": "the base model's raw answer names the expected value (case-insensitive, whole words)",
    }
    metrics["quality_gate"] = quality.gate(metrics, config)
    metrics["training"] = {
        "steps": result.steps, "epochs": result.epochs, "seconds": result.seconds,
        "final_loss": result.final_loss, "device": str(job.device), "dtype": str(job.dtype).replace("torch.", ""),
        "train_examples": len(data.train), "validation_examples": len(data.validation),
    }
    metrics["data"] = dict(data.inputs)
    overall = metrics["overall"]
    log(metric_line(**{f"val_{k}": float(overall[k]) for k in
                       ("exact_match", "baseline_exact_match", "unknown_value_rate") if overall[k] is not None}))
    for name, m in metrics["attributes"].items():
        log(metric_line(**{f"val_{k}.{slug(name)}": float(m[k]) for k in ("exact_match", "baseline_exact_match")
                           if m[k] is not None}))
    log(evaluate.format_metrics(metrics))
    artifact = ArtifactPaths.of(paths.model)
    evaluate.write_predictions(artifact.predictions, answers, baseline)
    from training import merge

    merge.write_loss_history(artifact.loss_history, result.loss_history)
    return answers, metrics


def calibrate_answers(paths: JobPaths, job: JobSettings, data: JobData, answers, log: Callable[[str], None]
                      ) -> dict[str, Any] | None:
    """Thresholds from the served answers just measured (one generation path): each value confidence against
    whether the value was right; unparsed or unknown values are never stated. None without validation answers."""
    if not answers:
        return None
    from training import calibrate

    records = calibrate.records_from_predictions(answers, data.schema)
    calibration = calibrate.calibrate_artifact(paths.model, records, job.config.target_precision,
                                             job.config.calibration_confidence)
    log(calibrate.format_calibration(calibration))
    return calibration.to_dict()


def write_artifact(paths: JobPaths, job: JobSettings, data: JobData, processor, metrics: Mapping[str, Any],
                   calibration: Mapping[str, Any] | None) -> None:
    """metrics.json and the final manifest (metrics and thresholds embedded), once."""
    from training import merge

    merge.write_artifact_files(paths.model, data.schema, metrics=metrics, calibration=calibration,
                               **manifest_fields(job, processor))


def check_gate(paths: JobPaths, metrics: Mapping[str, Any], log: Callable[[str], None]) -> None:
    verdict = metrics["quality_gate"]
    if not verdict["passed"]:
        kept = reject_artifact(paths)
        raise QualityGateFailed(
            f"the fine-tuned model is not shipped: {verdict['reason']} (served exact match "
            f"{verdict['exact_match']:.4f}, baseline {verdict['baseline_exact_match']}); its evaluation is in "
            f"{kept}; set hyperparameter min_exact_match, or quality_gate=false to ship anyway")
    if not verdict["enabled"] and verdict["reason"]:
        log(f"WARNING: quality gate off; shipping a model that fails it: {verdict['reason']}")


def report(paths: JobPaths, job: JobSettings, metrics: dict[str, Any], answered: bool,
           log: Callable[[str], None]) -> dict[str, Any]:
    """The CLIP zero-shot baseline (when asked for; it adds its section to the artifact's metrics) and the
    HTML report. The model is saved and gated: neither may lose it, so their failures are warnings."""
    if job.clip_artifact is not None and answered:
        from training.search.clip_baseline import evaluate_clip

        try:
            metrics = {**metrics, CLIP_BASELINE_METRICS: evaluate_clip(paths.model, job.clip_artifact, paths.images,
                                                                  device=str(job.device), log=log)}
        except Exception as exc:  # noqa: BLE001
            log(f"WARNING: the CLIP zero-shot baseline could not be measured ({type(exc).__name__}: {exc}); "
                f"the model in {paths.model} is complete")
    try:
        from training.report import write_report

        log(f"report: {write_report(paths.model, paths.images)}")
    except Exception as exc:  # noqa: BLE001 - the model is saved; a broken report must not lose it
        log(f"WARNING: the evaluation report could not be written ({type(exc).__name__}: {exc}); "
            f"the model in {paths.model} is complete")
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
