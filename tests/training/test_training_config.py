"""Hyperparameters: SageMaker's all-string hyperparameters.json into a typed, validated TrainingConfig."""

from __future__ import annotations

import json
import re

import pytest

from training.config import (
    ConfigError,
    TrainingConfig,
    from_hyperparameters,
    read_hyperparameters,
)
from training.metrics_regex import METRIC_DEFINITIONS, attribute_metric_definitions, metric_line


def test_defaults_are_the_reference_lora_settings():
    config = from_hyperparameters({})
    assert config.lora_settings() == {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": ["q", "v"],
                                      "bias": "none"}
    assert config.base_model == "Salesforce/blip2-flan-t5-xl"
    assert config.precision == "auto" and config.load_in_8bit is False


def test_string_values_become_typed_values():
    config = from_hyperparameters({
        "epochs": "2.5", "batch_size": "16", "learning_rate": "2e-4", "load_in_8bit": "True",
        "lora_target_modules": "q, v ,k", "baseline": "false", "max_steps": "100", "device": "cpu",
    })
    assert config.epochs == 2.5 and config.batch_size == 16 and config.learning_rate == pytest.approx(2e-4)
    assert config.load_in_8bit is True and config.baseline is False
    assert config.lora_target_modules == ["q", "v", "k"]
    assert config.max_steps == 100 and config.device == "cpu"


def test_json_forms_from_the_sagemaker_sdk_are_accepted():
    # The SageMaker Python SDK JSON-encodes values and adds sagemaker_* keys of its own.
    config = from_hyperparameters({"base_model": '"Salesforce/blip2-flan-t5-xxl"', "batch_size": "4",
                                   "lora_target_modules": '["q", "v"]', "sagemaker_program": '"train"',
                                   "sagemaker_region": '"us-east-1"'})
    assert config.base_model == "Salesforce/blip2-flan-t5-xxl"
    assert config.lora_target_modules == ["q", "v"]


def test_unknown_key_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) 'learning_rte'.*learning_rate"):
        from_hyperparameters({"learning_rte": "1e-4"})


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", "eight", "an integer"),
    ("batch_size", "2.5", "an integer"),
    ("learning_rate", "fast", "a number"),
    ("load_in_8bit", "maybe", "true or false"),
    ("lora_target_modules", "[1", "list"),
])
def test_bad_values_name_the_key_and_what_was_expected(key, value, expected):
    with pytest.raises(ConfigError) as info:
        from_hyperparameters({key: value})
    assert repr(key) in str(info.value) and expected in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "0", "batch_size must be at least 1"),
    ("learning_rate", "0", "learning_rate must be positive"),
    ("lr_schedule", "exponential", "lr_schedule must be one of linear, cosine, constant"),
    ("precision", "fp16", "precision must be one of auto, bf16, fp32"),
    ("lora_dropout", "1.5", "lora_dropout must be in"),
    ("device", "tpu", "device must be"),
    ("lora_target_modules", "", "lora_target_modules must name"),
])
def test_out_of_range_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_hyperparameters({key: value})


def test_round_trip_through_strings():
    from training.tiny_base import TINY_BASE_HYPERPARAMETERS

    config = from_hyperparameters(TINY_BASE_HYPERPARAMETERS)
    strings = config.to_hyperparameters()
    assert all(isinstance(v, str) for v in strings.values())
    assert from_hyperparameters(strings) == config
    assert config.max_steps == 300 and config.batch_size == 32


def test_read_hyperparameters_file(tmp_path):
    assert read_hyperparameters(tmp_path / "missing.json") == {}
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"epochs": "1"}))
    assert read_hyperparameters(path) == {"epochs": "1"}
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        read_hyperparameters(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_hyperparameters(path)


def test_dataclass_defaults_validate():
    assert TrainingConfig().validate() == TrainingConfig()


# --- the SageMaker metric definitions parse the lines the program prints ------------------------------


def _parse(line: str) -> dict[str, float]:
    found = {}
    for definition in METRIC_DEFINITIONS + attribute_metric_definitions(["Sleeve Length", "baseColour"]):
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    return found


def test_metric_regexes_parse_training_lines():
    line = metric_line(train_loss=0.123456789, step=50, epoch=1.25, learning_rate=9.8e-05)
    assert _parse(line) == {"train:loss": pytest.approx(0.123457), "train:epoch": 1.25,
                            "train:learning_rate": pytest.approx(9.8e-05)}


def test_metric_regexes_do_not_confuse_exact_match_and_baseline():
    line = metric_line(val_exact_match=0.93, val_baseline_exact_match=0.21, val_unknown_value_rate=0.0)
    assert _parse(line) == {"validation:exact_match": 0.93, "validation:baseline_exact_match": 0.21,
                            "validation:unknown_value_rate": 0.0}
    only_baseline = metric_line(val_baseline_exact_match=0.2)
    assert _parse(only_baseline) == {"validation:baseline_exact_match": 0.2}
    per_attribute = metric_line(**{"val_exact_match.sleeve_length": 0.92, "val_baseline_exact_match.sleeve_length": 0.3})
    assert _parse(per_attribute) == {"validation:exact_match:sleeve_length": 0.92,
                                     "validation:baseline_exact_match:sleeve_length": 0.3}
    assert _parse("some other line train_loss=5") == {}
