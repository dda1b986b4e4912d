"""Training sees what serving sees, and does no work twice:

- one image decode for training and serving (runtime.images.decode_image), on every awkward kind
  of product photo, large JPEGs drafted to the same side in both;
- the image-token set-up is checked at load in training and in serving;
- each photo goes through the frozen vision tower and Q-Former once, with the loss and gradients of the
  plain per-question forward pass.
"""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
import torch
from PIL import Image

from runtime.images import decode_image
from inference.server.request_parsing import image_draft_side, parse_product
from runtime.predictor import ImageTokenError, Predictor
from loom.schema import AttributeSchema
from training.config import from_hyperparameters
from training.data import PixelCache, VqaExample, training_batch
from training.features import ImageFeatures, loss_per_row_images, loss_with_features
from training.finetune import add_lora, load_base
from training.synthetic import draw_shirt

CPU = torch.device("cpu")


def _shirt(size=(72, 96)) -> Image.Image:
    return draw_shirt("Red", "Striped", "Long Sleeves", size)


def _awkward_images() -> dict[str, bytes]:
    """Bytes of the kinds of files a catalog holds; each saved under a `.jpg` name as the channel has them."""
    shirt = _shirt()
    out: dict[str, bytes] = {}

    def save(name, image, fmt, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        out[name] = buffer.getvalue()

    rgba = shirt.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(shirt.size))  # transparent at the top: white, not black
    save("rgba", rgba, "PNG")
    grey16 = Image.new("I;16", shirt.size)
    grey16.putdata([v * 200 for v in shirt.convert("L").tobytes()])  # 16-bit values up to 51000
    save("grey16", grey16, "PNG")
    save("palette", shirt.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    save("grey", shirt.convert("L"), "PNG")
    save("cmyk", shirt.convert("CMYK"), "JPEG", quality=95)
    save("progressive", shirt, "JPEG", quality=90, progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    save("exif_rotated", shirt.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)
    save("large", _shirt((600, 800)), "JPEG", quality=90)  # over twice the draft side: decoded DCT-scaled
    return out


def test_training_pixels_equal_serving_pixels_for_every_kind_of_image(untrained_artifact, tmp_path):
    from transformers import Blip2Processor

    processor = Blip2Processor.from_pretrained(untrained_artifact)
    predictor = Predictor.load(untrained_artifact, device="cpu")
    images = _awkward_images()
    for name, data in images.items():
        (tmp_path / f"{name}.jpg").write_bytes(data)
    pixels = PixelCache(tmp_path, processor.image_processor)
    for name, data in images.items():
        # What the server feeds the model: the request's image decoded (parse_product, with the predictor's
        # draft side), then the processor (predictor._inputs).
        item = {"image": base64.b64encode(data).decode("ascii")}
        image = parse_product(item, predictor.schema.names, 10**8, allow_prompt=False,
                              draft_side=image_draft_side(predictor))[0]
        served = predictor._inputs([image], ["q"])["pixel_values"][0]
        assert torch.equal(pixels[name], served), name
    assert predictor.image_draft_side == 128  # twice the tiny processor's 64: "large" is drafted, 1/4 scale
    assert decode_image(images["large"], draft_side=128).size == (150, 200)
    full = processor.image_processor(decode_image(images["large"]), return_tensors="pt").pixel_values[0]
    assert not torch.equal(pixels["large"], full)  # the draft is used, in training as in serving
    # The decoder's rules, seen in the training pixels: a plain convert("RGB") breaks each of these.
    white = processor.image_processor(Image.new("RGB", (64, 64), "white"), return_tensors="pt").pixel_values[0]
    assert torch.allclose(pixels["rgba"][:, 0, :], white[:, 0, :], atol=1e-5)  # transparent row -> white
    assert pixels["grey16"].mean() < white.mean() - 0.5  # 16-bit rescaled, not saturated to white
    upright = decode_image(images["exif_rotated"])
    assert upright.size == _shirt().size  # the EXIF rotation is applied


def _edited_copy(untrained_artifact, tmp_path, file, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(untrained_artifact, copy)
    data = json.loads((copy / file).read_text())
    data.update(changes)
    (copy / file).write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("file,changes,message", [
    ("config.json", {"image_token_id": 5, "image_token_index": 5}, "image_token_id"),
    ("processor_config.json", {"num_query_tokens": 4}, "inserts 4 image tokens"),
])
def test_an_image_token_mismatch_is_refused_at_load_in_training_and_serving(untrained_artifact, tmp_path, file,
                                                                           changes, message):
    broken = _edited_copy(untrained_artifact, tmp_path, file, **changes)
    with pytest.raises(ImageTokenError, match=message):
        load_base(str(broken), CPU, torch.float32)
    with pytest.raises(ImageTokenError, match=message):
        Predictor.load(broken, device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, (colour, pattern) in enumerate([("Red", "Striped"), ("Blue", "Solid"), ("Green", "Checked")]):
        draw_shirt(colour, pattern, "Short Sleeves").save(folder / f"{i}.jpg")
    return folder


def _examples(product_ids) -> list[VqaExample]:
    schema = AttributeSchema.from_names(["baseColour", "Pattern", "Sleeve Length"])
    return [VqaExample(pid, schema.question(name), schema.format_answer(name, "Red"), name, "Red")
            for pid in product_ids for name in schema.names]


@pytest.mark.parametrize("targets", ["q,v", "q,v,qkv"])  # qkv: the vision tower's attention, then not frozen
def test_features_once_per_image_give_the_loss_and_gradients_of_the_plain_forward(untrained_artifact, photos,
                                                                                  targets):
    config = from_hyperparameters({"lora_dropout": "0", "lora_target_modules": targets})
    torch.manual_seed(0)
    model, processor = load_base(str(untrained_artifact), CPU, torch.float32)
    model = add_lora(model, config)
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.train()
    pixels = PixelCache(photos, processor.image_processor)
    chunk = _examples(["0", "1", "0", "2", "1"])[::2] + _examples(["2"])  # repeats, out of order
    batch = training_batch(chunk, processor)
    trainable = [p for p in model.parameters() if p.requires_grad]

    plain = loss_per_row_images(model, batch, pixels.batch([e.id for e in chunk]))
    plain_grads = torch.autograd.grad(plain, trainable)
    features = ImageFeatures(model, pixels, device=CPU, dtype=torch.float32)
    once = loss_with_features(model, batch, features([e.id for e in chunk]))
    once_grads = torch.autograd.grad(once, trainable)

    assert torch.allclose(plain, once, atol=1e-6), (plain.item(), once.item())
    for a, b in zip(plain_grads, once_grads):
        assert torch.allclose(a, b, atol=1e-6)
    assert features.encoded == 3  # three distinct photos for the rows of the batch
    assert features.frozen == (targets == "q,v")
    features([e.id for e in chunk])
    assert features.encoded == (3 if features.frozen else 6)  # frozen: cached for the run; else once per step


@pytest.mark.slow
def test_bench_train_runs_both_ways_and_ends_with_a_speedup_line():
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "scripts/bench_train.py", "--quick"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup \d+\.\d\d", lines[-1])
    assert "24 image encodings" in run.stdout and "3 image encodings" in run.stdout  # 3 products x 8 questions
    difference = re.search(r"largest loss difference over the run: (\S+)", run.stdout).group(1)
    assert float(difference) < 1e-4


def test_photos_decode_ahead_on_a_thread_pool_into_the_same_pixels(untrained_artifact, photos):
    from transformers import Blip2Processor

    processor = Blip2Processor.from_pretrained(untrained_artifact)
    inline = PixelCache(photos, processor.image_processor)
    ahead = PixelCache(photos, processor.image_processor, workers=2)
    try:
        ahead.prefetch(["0", "1", "2", "0"])
        assert sorted(ahead._pending) == ["0", "1", "2"]  # started once each, before anyone asks
        assert torch.equal(ahead.batch(["2", "0"]), inline.batch(["2", "0"]))
        assert torch.equal(ahead["1"], inline["1"]) and not ahead._pending
    finally:
        ahead.close()
