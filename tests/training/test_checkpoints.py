"""Checkpoints: an interrupted run resumes from the newest complete checkpoint and ends where an
uninterrupted run ends; incomplete checkpoints are ignored; only the newest K are kept; NaN stops."""

from __future__ import annotations

import shutil

import pytest
import torch

from loom.schema import AttributeSchema
from training.config import from_hyperparameters
from training.data import PixelCache, VqaExample, micro_batches
from training.finetune import (
    COMPLETE_MARKER,
    TrainingDiverged,
    add_lora,
    checkpoint_path,
    complete_checkpoints,
    latest_checkpoint,
    load_base,
    train_lora,
)
from training.synthetic import COLOURS, PATTERNS, SLEEVES, draw_shirt

CPU = torch.device("cpu")


def test_micro_batches_resume_where_they_left_off():
    full = micro_batches(10, 4, seed=3)
    first = [next(full) for _ in range(9)]  # 3 per epoch: 4 + 4 + 2
    assert [len(b) for b in first] == [4, 4, 2] * 3
    assert sorted(i for b in first[:3] for i in b) == list(range(10))
    assert first[:3] != first[3:6]  # reshuffled each epoch
    resumed = micro_batches(10, 4, seed=3, start=5)
    assert [next(resumed) for _ in range(4)] == first[5:9]
    assert [next(micro_batches(10, 4, seed=4)) for _ in range(1)] != first[:1]


@pytest.fixture(scope="module")
def small_task(untrained_artifact, tmp_path_factory):
    """24 examples on 8 drawn shirts, answered in the untrained artifact's schema."""
    images = tmp_path_factory.mktemp("ckpt_images")
    schema = AttributeSchema.from_names(["baseColour", "Pattern"])
    examples = []
    for i in range(8):
        colour, pattern, sleeve = list(COLOURS)[i], PATTERNS[i % 3], SLEEVES[i % 3]
        draw_shirt(colour, pattern, sleeve).save(images / f"{i}.jpg")
        examples.append(VqaExample(str(i), schema.question("baseColour"),
                                   schema.format_answer("baseColour", colour), "baseColour", colour))
        examples.append(VqaExample(str(i), schema.question("Pattern"),
                                   schema.format_answer("Pattern", pattern), "Pattern", pattern))
    return untrained_artifact, images, examples


def _run(task, checkpoint_dir, stop_after=None, poison=False, **overrides):
    base, images, examples = task
    hyperparameters = {"max_steps": "4", "batch_size": "4", "gradient_accumulation": "2", "learning_rate": "1e-2",
                       "checkpoint_every": "2", "keep_checkpoints": "2", "log_every": "1", "lora_dropout": "0"}
    config = from_hyperparameters({**hyperparameters, **overrides})
    torch.manual_seed(0)
    model, processor = load_base(str(base), CPU, torch.float32)
    model = add_lora(model, config)
    if poison:  # a diverged adapter: the forward pass turns NaN
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))
    logs: list[str] = []
    result = train_lora(model, processor, examples, PixelCache(images, processor.image_processor), config,
                        device=CPU, dtype=torch.float32, checkpoint_dir=checkpoint_dir, log=logs.append,
                        stop_after=stop_after)
    lora = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    return result, lora, logs


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(small_task, tmp_path):
    straight, straight_weights, _ = _run(small_task, tmp_path / "straight")

    first, _, _ = _run(small_task, tmp_path / "spot", stop_after=2)  # a spot interruption after step 2
    assert first.steps == 2
    assert latest_checkpoint(tmp_path / "spot") == checkpoint_path(tmp_path / "spot", 2)
    second, resumed_weights, logs = _run(small_task, tmp_path / "spot")
    assert second.resumed_from == 2 and second.steps == 4
    assert any("resumed from" in line and "step-00000002" in line for line in logs)

    assert [h["step"] for h in second.loss_history] == list(range(1, 5))
    for a, b in zip(straight.loss_history, second.loss_history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["learning_rate"] == pytest.approx(b["learning_rate"])
    assert straight_weights.keys() == resumed_weights.keys() and straight_weights
    for key in straight_weights:
        torch.testing.assert_close(straight_weights[key], resumed_weights[key], rtol=1e-4, atol=1e-6)


def test_incomplete_checkpoints_are_ignored_and_only_k_kept(small_task, tmp_path):
    result, _, _ = _run(small_task, tmp_path, checkpoint_every="1")
    kept = complete_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["step-00000003", "step-00000004"]  # keep_checkpoints=2
    assert not checkpoint_path(tmp_path, 1).exists() and result.steps == 4
    # A checkpoint cut off before its marker (spot interruption while writing) is never resumed.
    partial = checkpoint_path(tmp_path, 8)
    shutil.copytree(kept[-1], partial)
    (partial / COMPLETE_MARKER).unlink()
    assert latest_checkpoint(tmp_path) == kept[-1]
    # Resuming a finished run trains no further step.
    again, _, logs = _run(small_task, tmp_path)
    assert again.resumed_from == 4 and again.steps == 4 and any("resumed from" in line for line in logs)


def test_nan_loss_stops_the_run(small_task, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 1: stopping without saving"):
        _run(small_task, tmp_path, poison=True)
    assert latest_checkpoint(tmp_path) is None


class _Planted:
    """A pickle payload: unpickling it with a full unpickler runs code (here: it writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_trainer_state_with_a_pickle_payload_is_refused_and_never_run(tmp_path):
    # torch.load(weights_only=False) runs whatever a planted trainer_state.pt names (torch.load's warning;
    # weights_only=True is PyTorch's default since 2.6). Checkpoints come back from S3, so Loom never unpickles
    # more than tensors and plain values.
    from training.finetune import TRAINER_STATE, read_trainer_state

    plain = {"step": 3, "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999)}]},
             "scheduler": {"last_epoch": 3, "_last_lr": [0.1]}, "loss_history": [{"step": 1, "loss": 0.5, "learning_rate": 0.1}],
             "rng": {"torch": torch.get_rng_state(), "python": __import__("random").getstate(), "cuda": None}}
    good = tmp_path / "good"
    good.mkdir()
    torch.save(plain, good / TRAINER_STATE)
    state = read_trainer_state(good)
    assert state["step"] == 3 and torch.equal(state["rng"]["torch"], plain["rng"]["torch"])

    bad = tmp_path / "bad"
    bad.mkdir()
    marker = tmp_path / "ran.txt"
    torch.save({"step": 3, "loss_history": [_Planted(marker)]}, bad / TRAINER_STATE)
    with pytest.raises(ValueError, match="refusing to unpickle it"):
        read_trainer_state(bad)
    assert not marker.exists()
    # The same file through a full unpickler does run the payload: the test's payload is real.
    torch.load(bad / TRAINER_STATE, weights_only=False)
    assert marker.read_text() == "ran"
