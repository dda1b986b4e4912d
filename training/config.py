"""Training settings as one typed dataclass, and parsing of SageMaker's all-string hyperparameters.

SageMaker hands a bring-your-own-container job `/opt/ml/input/config/hyperparameters.json`, a flat
object whose values are all strings ("3", "true", "q,v"). `from_hyperparameters` turns it into a
`TrainingConfig`, refusing unknown names and values of the wrong type with a message that names the
key, the value and what was expected.

Defaults are for the production base (`Salesforce/blip2-flan-t5-xl` on one 24 GB+ GPU); the tiny demo
base keeps its own overrides beside it (`training.tiny_base.TINY_BASE_HYPERPARAMETERS`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_BASE_MODEL = "Salesforce/blip2-flan-t5-xl"
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
LORA_BIASES = ("none", "all", "lora_only")


class ConfigError(ValueError):
    """A hyperparameter that is unknown or whose value cannot be used."""


@dataclass
class TrainingConfig:
    """Every setting of a training run. Names are the hyperparameter names of the SageMaker job."""

    # The base model: a hub id or a folder; the `base_model` channel, when given, wins.
    base_model: str = DEFAULT_BASE_MODEL
    artifact_name: str = "loom-blip2-flan-t5"
    # The training CSV in the train channel ("" = vqa_train.csv); the fashion post's `file-name` sets it.
    train_file: str = ""
    # Without a validation channel, this share of the training file's products is held out for validation.
    val_fraction: float = 0.2

    # Optimisation. One step = one optimizer update = batch_size * gradient_accumulation examples.
    epochs: float = 3.0
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 8
    gradient_accumulation: int = 2
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "linear"
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0

    # LoRA (the reference settings).
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q", "v"])
    lora_bias: str = "none"

    # Hardware: device "auto" is cuda when available, else cpu; precision "auto" is bf16 where the GPU
    # has it, else fp32 (never fp16: Flan-T5 overflows in fp16).
    device: str = "auto"
    precision: str = "auto"
    load_in_8bit: bool = False
    # The saved, merged model: the merge itself is always done in fp32; "auto" saves it in the training
    # precision (bf16 on GPUs: half the artifact, 7.9 GB for flan-t5-xl, and what the endpoint loads anyway).
    save_dtype: str = "auto"

    # Evaluation.
    eval_batch_size: int = 32
    max_new_tokens: int = 16
    baseline: bool = True
    max_eval_examples: int = 0  # > 0 evaluates only the first N validation rows
    # The adapter's and the served (merged, saved, reloaded) exact match may differ by this much per
    # attribute before the run warns loudly (bf16 rounding of the merged weights can move small LoRA deltas).
    served_tolerance: float = 0.02

    # The quality gate: the job fails, and ships no model, unless the served overall exact match beats the
    # baseline's and reaches min_exact_match. quality_gate=false turns it off.
    quality_gate: bool = True
    min_exact_match: float = 0.0

    # Calibration (loom/calibration.py): per attribute, the lowest value confidence at which the validation
    # answers show precision >= target_precision with probability calibration_confidence (fixed-sequence
    # binomial tests); an attribute whose answers show it nowhere is never stated (`not_enough_evidence`).
    target_precision: float = 0.95
    calibration_confidence: float = 0.95

    # Logging and checkpoints (spot training: resume from the newest complete checkpoint).
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    checkpoint_dir: str = ""  # "" = <sm root>/checkpoints, i.e. /opt/ml/checkpoints in a job
    cache_pixels: bool = True
    decode_workers: int = 4  # threads decoding the next step's photos while a step trains (0: in the loop)
    # Each photo through the frozen vision tower and Q-Former once for the run (training/features.py).
    cache_image_features: bool = True

    def validate(self) -> "TrainingConfig":
        """Check ranges and choices; raise ConfigError naming the first bad setting."""
        positive = ("batch_size", "gradient_accumulation", "lora_r", "eval_batch_size", "max_new_tokens",
                    "log_every", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_eval_examples", "decode_workers", "weight_decay", "max_grad_norm", "lora_alpha",
                     "served_tolerance"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_steps == 0 and not self.epochs > 0:
            raise ConfigError(f"epochs must be positive when max_steps is 0, got {self.epochs}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if "/" in self.train_file or "\\" in self.train_file or self.train_file in (".", ".."):
            raise ConfigError(f"train_file names a file in the train channel, not a path; got {self.train_file!r}")
        if not 0.5 <= self.target_precision <= 1.0:
            raise ConfigError(f"target_precision must be in [0.5, 1], got {self.target_precision}")
        if not 0.5 <= self.calibration_confidence <= 0.999:
            raise ConfigError(f"calibration_confidence must be in [0.5, 0.999], got {self.calibration_confidence}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_exact_match <= 1.0:
            raise ConfigError(f"min_exact_match must be in [0, 1], got {self.min_exact_match}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules must name at least one module (e.g. q,v)")
        for name, choices in (("lr_schedule", SCHEDULES), ("precision", PRECISIONS), ("save_dtype", PRECISIONS),
                              ("lora_bias", LORA_BIASES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if not self.base_model:
            raise ConfigError("base_model must not be empty")
        return self

    def lora_settings(self) -> dict[str, Any]:
        """The LoRA settings as the manifest records them."""
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": list(self.lora_target_modules), "bias": self.lora_bias}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hyperparameters(self) -> dict[str, str]:
        """The settings as SageMaker hyperparameters (all strings), the inverse of from_hyperparameters."""
        return {name: _to_string(value) for name, value in self.to_dict().items()}


# Keys the SageMaker Python SDK adds to a job's hyperparameters; they are not ours and are ignored.
_IGNORED_PREFIXES = ("sagemaker_", "_tuning_objective_metric")
# Other names of settings: the fashion post's training job passes {"epochs": 10, "file-name": "vqa_train.csv"}.
ALIASES = {"file-name": "train_file"}


def from_hyperparameters(hyperparameters: Mapping[str, Any]) -> TrainingConfig:
    """A validated TrainingConfig from SageMaker-style hyperparameters (string values; JSON values accepted)."""
    known = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    hints = typing.get_type_hints(TrainingConfig)
    both = sorted(alias for alias, name in ALIASES.items() if alias in hyperparameters and name in hyperparameters)
    if both:
        raise ConfigError(f"hyperparameter(s) {', '.join(both)} and {', '.join(ALIASES[b] for b in both)} name "
                          "the same setting: give one")
    hyperparameters = {ALIASES.get(k, k): v for k, v in hyperparameters.items()}
    unknown = sorted(k for k in hyperparameters if k not in known and not k.startswith(_IGNORED_PREFIXES))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)} "
            f"(and {', '.join(f'{a} for {n}' for a, n in ALIASES.items())})"
        )
    values = {}
    for key, raw in hyperparameters.items():
        if key in known:
            values[key] = _parse(key, raw, hints[key])
    return TrainingConfig(**values).validate()


def read_hyperparameters(path) -> dict[str, Any]:
    """The JSON object in a hyperparameters.json file ({} when the file does not exist)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of name -> value, got {type(data).__name__}")
    return data


def _parse(key: str, raw: Any, kind: Any) -> Any:
    """One hyperparameter value as `kind` (str, int, float, bool or list[str])."""
    text = raw if isinstance(raw, str) else json.dumps(raw)
    text = text.strip()
    # The SageMaker Python SDK JSON-encodes string hyperparameters ('"abc"'); accept that form too.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            text = json.loads(text)
        except json.JSONDecodeError:
            pass
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(text)
        if _is_list_of_str(kind):
            if text.startswith("["):
                items = json.loads(text)
                if not isinstance(items, list):
                    raise ValueError
            else:
                items = text.split(",")
            return [str(item).strip() for item in items if str(item).strip()]
        return text
    except (ValueError, json.JSONDecodeError):
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(
            kind, "a comma-separated list or a JSON list of strings")
        raise ConfigError(f"hyperparameter {key!r}: expected {expected}, got {raw!r}") from None


def _is_list_of_str(kind: Any) -> bool:
    return typing.get_origin(kind) in (list, types.GenericAlias) and typing.get_args(kind) == (str,)


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
