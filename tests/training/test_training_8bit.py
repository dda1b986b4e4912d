"""The documented 8-bit option (`load_in_8bit=true`): the base loads in 8 bits through bitsandbytes, LoRA
trains a step on it, and the adapter merges into a full-precision reload of the base.

bitsandbytes (pinned in the `train` extra) runs its 8-bit layers on CPU too, so this runs here; the GPU
path is the same code with a CUDA device map. Why the merge reloads the base: a LoRA delta cannot be
folded into int8 weights without requantising them (peft's merge of 8-bit layers dequantises and rounds).
"""

from __future__ import annotations

import pytest
import torch

from training.config import from_hyperparameters
from training.data import PixelCache
from training.finetune import add_lora, load_base, train_lora
from training.merge import merge_adapter

bitsandbytes = pytest.importorskip("bitsandbytes", reason="SKIP: bitsandbytes is not installed (pip install '.[train]')")
CPU = torch.device("cpu")


@pytest.mark.slow
def test_an_8bit_base_trains_a_step_and_merges_into_a_full_precision_reload(untrained_artifact, tmp_path):
    from loom.schema import AttributeSchema
    from training.data import VqaExample
    from training.synthetic import draw_shirt

    schema = AttributeSchema.from_names(["baseColour"])
    examples = []
    for i, colour in enumerate(["Red", "Blue", "Green", "Black"]):
        draw_shirt(colour, "Solid", "Short Sleeves").save(tmp_path / f"{i}.jpg")
        examples.append(VqaExample(str(i), schema.question("baseColour"),
                                   schema.format_answer("baseColour", colour), "baseColour", colour))
    config = from_hyperparameters({"load_in_8bit": "true", "max_steps": "1", "batch_size": "4",
                                   "learning_rate": "1e-2", "lora_dropout": "0"})
    model, processor = load_base(str(untrained_artifact), CPU, torch.float32, load_in_8bit=True)
    assert any(isinstance(m, bitsandbytes.nn.Linear8bitLt) for m in model.modules())
    model = add_lora(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = train_lora(model, processor, examples, PixelCache(tmp_path, processor.image_processor), config,
                        device=CPU, dtype=torch.float32, checkpoint_dir=tmp_path / "checkpoints", log=lambda _: None)
    assert result.steps == 1 and result.final_loss == result.final_loss  # a finite loss
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)  # the step moved LoRA
    model.save_pretrained(tmp_path / "adapter")

    merged = merge_adapter(untrained_artifact, tmp_path / "adapter")
    assert not any(isinstance(m, bitsandbytes.nn.Linear8bitLt) for m in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    base = type(merged).from_pretrained(untrained_artifact, dtype=torch.float32)
    name = next(n for n, _ in merged.named_parameters() if n.endswith("SelfAttention.q.weight"))
    assert not torch.equal(dict(merged.named_parameters())[name], dict(base.named_parameters())[name])
