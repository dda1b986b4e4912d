"""The benchmark: a quick run prints a well-formed last line, and the real-size configuration is
blip2-flan-t5-xl (3.94 B parameters, counted on the meta device without allocating weights)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402


@pytest.mark.slow
def test_quick_bench_ends_with_a_speedup_line():
    run = subprocess.run([sys.executable, "scripts/bench.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    match = re.fullmatch(r"speedup (\d+\.\d+)", lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) > 1.5  # encode-once must beat K generate calls even on a loaded machine
    assert any(line.startswith("tiny: reference") for line in lines)


def test_real_size_config_is_blip2_flan_t5_xl():
    config = bench.real_size_config()
    params = bench.component_params(bench.meta_model(config))
    assert params["total"] == pytest.approx(3.94e9, rel=0.01)
    assert params["vision"] == pytest.approx(0.99e9, rel=0.01)
    assert params["encoder"] == pytest.approx(1.16e9, rel=0.01)
    assert params["decoder"] == pytest.approx(1.56e9 + 32128 * 2048, rel=0.01)  # decoder blocks + untied lm_head
    costs = bench.flop_costs(config, params, answer_tokens=5)
    assert 3.5 < costs["ratio"] < 5  # ViT-g costs ~4x the text side of one question
    floor = bench.floor_ms(config, params, k=8, answer_tokens=5, device_name="NVIDIA A10G")
    assert 30 < floor < 45  # the ~36 ms per product worked out for the A10G
    assert bench.floor_ms(config, params, 8, 5, "some unknown accelerator") is None
    parts = bench.floor_parts(config, params, k=8, answer_tokens=5, device_name="NVIDIA A10G")
    assert parts["image"] + parts["encoder"] + 5 * parts["step"] == pytest.approx(floor)
    assert 4 < parts["step"] < 6  # every decoder weight read once per step at 600 GB/s


def shallow_real_size_predictor() -> bench.Predictor:
    """The real-size shapes with one layer per stack, so that the path runs on CPU in seconds."""
    config = bench.real_size_config()
    config.vision_config.num_hidden_layers = 1
    config.qformer_config.num_hidden_layers = 2
    config.text_config.num_layers = config.text_config.num_decoder_layers = 1
    return bench.real_size_predictor("cpu", config)


def test_real_size_path_runs_with_fewer_layers_on_cpu():
    predictor = shallow_real_size_predictor()
    assert predictor.model.dtype.is_floating_point and str(predictor.model.dtype) == "torch.bfloat16"
    timing = bench.time_products(predictor, k=2, answer_tokens=2, products=1)
    assert timing.reference_ms > 0 and timing.loom_ms > 0
    stages = bench.stage_times(predictor, k=2, answer_tokens=3, repeats=1)
    assert set(stages) == {"image", "encoder", "step"}
    assert stages["image"] > 0 and stages["encoder"] > 0 and stages["step"] >= 0


def test_stage_breakdown_prints_each_stage_against_its_floor(capsys):
    bench.print_stages({"image": 8.0, "encoder": 14.0, "step": 10.0}, {"image": 4.0, "encoder": 7.0, "step": 5.0}, 5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[:3]] == ["2.0x", "2.0x", "2.0x"]
    assert "one decoder step" in lines[2] and "floor   5.00 ms" in lines[2]
    bench.print_stages({"image": 8.0, "encoder": 14.0, "step": 10.0}, None, 5)  # no known floor: times only
    assert "floor" not in capsys.readouterr().out


def test_a_failing_static_cache_is_reported_without_losing_the_main_figures(monkeypatch, capsys):
    predictor = shallow_real_size_predictor()
    generate = predictor.model.language_model.generate

    def no_static(*args, **kwargs):
        if kwargs.get("cache_implementation") == "static":
            raise RuntimeError("compilation failed")
        return generate(*args, **kwargs)

    monkeypatch.setattr(predictor.model.language_model, "generate", no_static)
    timing = bench.time_products(predictor, k=2, answer_tokens=2, products=1, static_cache=True)
    assert timing.loom_static_ms is None and timing.loom_ms > 0 and timing.reference_ms > 0
    assert "static cache: failed (RuntimeError: compilation failed)" in capsys.readouterr().out


@pytest.mark.slow
def test_real_size_training_steps_run_through_the_training_code(tmp_path):
    """scripts/bench_real_train.py with one layer per stack (same widths): the random base is saved and loaded
    through `load_base` as a job loads it, LoRA (r=8 on q,v) trains, and the JSON result says so. The GPU
    figures in the README come from the same script on a GPU."""
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "scripts/bench_real_train.py", "--device", "cpu", "--shrink", "--modes",
                          "bf16", "--steps", "2", "--products", "3", "--batch-size", "3", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    import json

    [result] = json.loads(out.read_text())
    assert result["mode"] == "bf16" and result["losses_finite"] and result["steps_timed"] == 1
    # r=8 on T5's q and v (2048 -> 2048): the encoder layer's self-attention q,v and the decoder layer's self-
    # and cross-attention q,v are 6 linears of A (8 x 2048) + B (2048 x 8); at full size 144 linears: 4,718,592
    assert result["trainable_params"] == 6 * (8 * 2048 + 2048 * 8)
    assert result["int8_layers"] == 0 and result["s_per_step"] > 0
