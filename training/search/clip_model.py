"""A tiny CLIP that Loom builds offline, for tests and the demo: a STAND-IN for a real checkpoint.

Production search uses a real CLIP (e.g. `openai/clip-vit-base-patch32`, 512-d) turned into an artifact by
`loom clip-artifact`. That cannot be downloaded here, so `loom tiny-clip` builds the same `CLIPModel` class
from a small config (width 64, 2+2 layers, 64 px images, ~0.2 M parameters), with a word-level tokenizer
made from the catalog's words, and trains it contrastively on the catalog's (photo, caption) pairs for a
minute or two on one CPU core. It knows the catalog's colours, patterns and sleeve lengths and nothing else.

What makes such a model learn (../shared/FACTS.md, "CLIP, built small"), all applied below:
- `text_config.eos_token_id` is the tokenizer's real end id (the default 49407 makes every text embed alike;
  2 switches on the legacy argmax pooling);
- the image processor gets an explicit height/width and no centre crop;
- one torch thread (two threads on shared cores made steps 10x slower);
- captions drop each attribute with probability 0.5 and use several templates, and the contrastive targets
  are soft: spread over every label-compatible pair in the batch, image->text weighted by the square of how
  many attributes a caption names (with the plain count, `best` interrogation stopped after one or two
  attributes in 14% of photos; squared, 1%);
- some captions are written as interrogated prompts ("striped, red, long sleeves"), some end in a neutral
  phrase (a style, or a value the photo cannot show) and a few are a neutral phrase alone: without them the
  comma and the style tables were unknown tokens that outranked the colour in `fast` interrogation;
- a quarter of the training photos are seen whole: with crops only, uncropped catalog photos were tagged
  worse (pattern 0.77) than shoppers' crops (1.00) and photo search fell to R-precision 0.80.

It is trained on the training products of the catalog's split (the one `loom prepare` makes); its tag
thresholds are calibrated on the validation products (training/search/clip_zero_shot.py).

    loom tiny-clip --catalog DIR --out DIR [--steps 900] [--seed 0] [--phrases DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from loom.artifact import write_clip_manifest
from loom.schema import AttributeSchema

TINY_CLIP_ID = "loom/tiny-clip"
# Bumped when what `build_tiny_clip` writes changes, so that caches keyed on it (loom search-demo) rebuild.
TINY_CLIP_VERSION = 2
# Query templates the index and the server wrap a bare query in (the manifest carries them).
PROMPT_TEMPLATES = ["a photo of a {}"]
# Caption templates used in training; the attribute words fill the {}.
CAPTION_TEMPLATES = ("a photo of a {} shirt", "{} shirt", "{}", "a photo of a {}")
# Shares of training captions written as an interrogated prompt is ("striped, red, long sleeves": the words in
# any order, comma-separated), followed by a neutral phrase (", studio photo": a style, or a value the photo
# cannot show), and made of a neutral phrase alone (it names nothing, so it fits every photo, less than any
# caption naming what the photo shows).
LIST_SHARE = 0.3
# Image->text targets weight a fitting caption by (attributes it names) ** RICHNESS_POWER: fuller captions score
# higher, which is what lets the `best` interrogation mode add the second and third attribute to a prompt.
RICHNESS_POWER = 2
FULL_VIEW_SHARE = 0.25
NEUTRAL_SHARE = 0.3
NEUTRAL_ONLY_SHARE = 0.1
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # eos id 3: neither 2 (legacy pooling) nor 49407
LABEL_FIELDS = ("baseColour", "Pattern", "Sleeve Length")
MAX_TEXT_TOKENS = 32


def attribute_words(attributes: dict[str, str]) -> list[str | None]:
    """The searchable words of a product's colour, pattern and sleeve length (None where absent)."""
    return [attributes[name].lower() if attributes.get(name) else None for name in LABEL_FIELDS]


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the words of `texts`, wrapping each text in <bos> ... <eos>."""
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    bos, eos = core.token_to_id("<bos>"), core.token_to_id("<eos>")
    core.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                        special_tokens=[("<bos>", bos), ("<eos>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=MAX_TEXT_TOKENS)


def build_image_processor(image_size: int = 64) -> CLIPImageProcessorPil:
    # An explicit square size and no centre crop: the default (shortest edge 224 + crop) cuts small photos.
    return CLIPImageProcessorPil(size={"height": image_size, "width": image_size}, do_center_crop=False)


def build_model(tokenizer: PreTrainedTokenizerFast, image_size: int = 64, width: int = 64, layers: int = 2,
                projection: int = 64, seed: int = 0) -> CLIPModel:
    """A freshly initialised small CLIPModel whose text side matches `tokenizer`."""
    torch.manual_seed(seed)
    text = {"vocab_size": len(tokenizer), "hidden_size": width, "intermediate_size": width * 4,
            "num_hidden_layers": layers, "num_attention_heads": 4, "max_position_embeddings": MAX_TEXT_TOKENS,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": width, "intermediate_size": width * 4, "num_hidden_layers": layers,
              "num_attention_heads": 4, "image_size": image_size, "patch_size": 8}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    assert config.text_config.eos_token_id == tokenizer.eos_token_id != 2, "text pooling would pick the wrong token"
    return CLIPModel(config)


# ---------------------------------------------------------------------------------------------------
# training data


def caption(words: Sequence[str | None], rng: random.Random, drop: float = 0.5,
            neutral: Sequence[str] = ()) -> tuple[str, tuple]:
    """A caption naming a random subset (at least one) of a product's attribute words, and that subset.

    Most captions are templated sentences; some are written as the interrogator writes prompts (terms in any
    order, comma-separated), some end in a neutral phrase and a few are a neutral phrase alone (naming
    nothing), so that the prompts it composes and the phrase tables it ranks are text the model has read,
    ranked below the words that describe the photo.
    """
    if neutral and rng.random() < NEUTRAL_ONLY_SHARE:
        return rng.choice(neutral), (None,) * len(words)
    present = [i for i, w in enumerate(words) if w]
    kept = [i for i in present if rng.random() >= drop] or [rng.choice(present)]
    named = tuple(words[i] if i in kept else None for i in range(len(words)))
    terms = [words[i] for i in kept]
    if rng.random() < LIST_SHARE:
        rng.shuffle(terms)
        text = ", ".join(terms)
    else:
        text = rng.choice(CAPTION_TEMPLATES).format(" ".join(terms))
    if neutral and rng.random() < NEUTRAL_SHARE:
        text = f"{text}, {rng.choice(neutral)}"
    return text, named


def soft_targets(labels: Sequence[Sequence[str | None]], named: Sequence[Sequence[str | None]]):
    """(image->text, text->image) target distributions over the batch: a caption fits every image whose
    labels agree with what it names; image->text weights fitting captions by how much they name."""
    fits = torch.tensor([[all(n is None or n == l for n, l in zip(caption_named, image_labels))
                          for caption_named in named] for image_labels in labels], dtype=torch.float32)
    richness = torch.tensor([sum(n is not None for n in caption_named) for caption_named in named],
                            dtype=torch.float32)
    image_to_text = fits * richness ** RICHNESS_POWER
    image_to_text = image_to_text / image_to_text.sum(1, keepdim=True)
    text_to_image = fits.T / fits.T.sum(1, keepdim=True)
    return image_to_text, text_to_image


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Photo augmentation on processed pixels: a random crop (70-100% a side) resized back, except for a
    FULL_VIEW_SHARE of whole pictures (catalog photos are tagged and indexed uncropped), and noise."""
    n, _, h, w = pixels.shape
    out = torch.empty_like(pixels)
    scales = 0.7 + 0.3 * torch.rand(n, 2, generator=generator)
    scales[torch.rand(n, generator=generator) < FULL_VIEW_SHARE] = 1.0
    for i in range(n):
        ch, cw = int(h * scales[i, 0]), int(w * scales[i, 1])
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = pixels[i:i + 1, :, top:top + ch, left:left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    return out + 0.05 * torch.randn(out.shape, generator=generator)


def train(model: CLIPModel, tokenizer: PreTrainedTokenizerFast, pixels: torch.Tensor,
          labels: list[list[str | None]], steps: int, batch_size: int = 96, lr: float = 2e-3, seed: int = 0,
          log_every: int = 100, neutral: Sequence[str] = ()) -> list[float]:
    """Contrastive training with attribute-dropout captions and soft targets; returns the loss per step."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    model.train()
    started = time.monotonic()
    for step in range(steps):
        rows = [rng.randrange(len(labels)) for _ in range(batch_size)]
        texts, named = zip(*(caption(labels[r], rng, neutral=neutral) for r in rows))
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=augment(pixels[rows], generator))
        image_to_text, text_to_image = soft_targets([labels[r] for r in rows], named)
        loss = (F.cross_entropy(out.logits_per_image, image_to_text)
                + F.cross_entropy(out.logits_per_text, text_to_image)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP caps the temperature at 100
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"tiny-clip step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.3f} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    model.eval()
    return losses


def vocabulary_texts(labels: Iterable[Sequence[str | None]], neutral: Sequence[str] = ()) -> list[str]:
    """Every word a caption, a neutral phrase or a query template can use (and the comma of listed terms)."""
    words = {w for words in labels for w in words if w}
    return [*(t.replace("{}", "") for t in (*CAPTION_TEMPLATES, *PROMPT_TEMPLATES)), "t-shirt shirt", ",",
            *neutral, *words]


def neutral_phrases(schema: AttributeSchema, styles: Iterable[str]) -> list[str]:
    """Phrases that name nothing the synthetic photos show: style phrases, article types, and the values of
    the attributes the drawer does not draw (fabric, fit, collar...)."""
    values = [v.lower() for name in schema.names if name not in LABEL_FIELDS for v in schema.attributes[name].values]
    types = [t.lower() for t in schema.product_types]
    return list(dict.fromkeys([*styles, *types, *values]))


def build_tiny_clip(catalog_dir: Path, out: Path, steps: int = 900, seed: int = 0, image_size: int = 64,
                    batch_size: int = 96, phrases: Path | None = None) -> dict:
    """Read a catalog, split it by product as `loom prepare` does, train a tiny CLIP on the training products,
    write a CLIP artifact into `out` and its zero-shot part (schema, tag thresholds calibrated on the validation
    products, phrase tables; training/search/clip_zero_shot.py); returns a summary."""
    from PIL import Image

    from training.search.clip_zero_shot import build_zero_shot
    from training.search.phrase_tables import BUILTIN_DIR, read_tables
    from training.prepare import prepare_products

    torch.set_num_threads(1)  # two threads on shared cores made each step ~10x slower (FACTS.md)
    custom = read_tables(phrases) if phrases is not None else None  # a bad table fails before training
    prepared = prepare_products(catalog_dir, progress=False)
    products = [p for p in prepared.train if any(attribute_words(p.attributes))]
    if not products:
        raise SystemExit(f"tiny-clip: {catalog_dir} holds no usable products ({prepared.reading.skipped})")
    labels = [attribute_words(p.attributes) for p in products]
    neutral = neutral_phrases(prepared.schema, (p for table in read_tables(BUILTIN_DIR).values() for p in table))
    tokenizer = build_tokenizer(vocabulary_texts(labels, neutral))
    image_processor = build_image_processor(image_size)
    model = build_model(tokenizer, image_size=image_size, seed=seed)
    images = []
    for product in products:
        with Image.open(product.image_path) as image:
            images.append(image.convert("RGB"))
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
    started = time.monotonic()
    losses = train(model, tokenizer, pixels, labels, steps, batch_size=batch_size, seed=seed, neutral=neutral)
    seconds = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    summary = {"products": len(products), "validation_products": len(prepared.val), "steps": steps,
               "train_seconds": round(seconds, 1), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4)}
    write_clip_manifest(out, base_model=TINY_CLIP_ID, dimension=model.config.projection_dim,
                        prompt_templates=PROMPT_TEMPLATES, normalized=True,
                        extra={"stand_in": True, "training": summary})
    summary["zero_shot"] = build_zero_shot(out, prepared.schema, validation=prepared.val, custom_tables=custom,
                                           device="cpu")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom tiny-clip", description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, type=Path, help="catalog folder (Kaggle layout)")
    parser.add_argument("--out", required=True, type=Path, help="artifact folder to write")
    parser.add_argument("--steps", type=int, default=900, help="training steps (default 900, ~1-2 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phrases", type=Path, help="folder of <name>.txt phrase tables to add or replace")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    summary = build_tiny_clip(args.catalog, args.out, steps=args.steps, seed=args.seed, phrases=args.phrases)
    print(f"tiny CLIP (a stand-in) written to {args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
