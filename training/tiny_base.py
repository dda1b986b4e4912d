"""A tiny BLIP-2 (Flan-T5 style) base model that Loom builds offline, for tests and the demo.

It is a stand-in for `Salesforce/blip2-flan-t5-xl`, which cannot be downloaded here: the same
`Blip2ForConditionalGeneration` class and processor, about 400 k parameters instead of 3.9 B, a
word-level tokenizer built from the catalog's question/answer text, and a short caption pre-training
on separately drawn synthetic shirts so that the vision side carries spatial information the way
pretrained weights do. It knows nothing beyond that; use it only to exercise the real code paths.

    loom tiny-base --catalog DIR --out DIR [--steps 800] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    T5Config,
    T5Tokenizer,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from loom.errors import command_error
from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, AttributeSchema
from training import synthetic

TINY_BASE_ID = "loom/tiny-blip2-flan-t5"
IMAGE_TOKEN = "<image>"
CAPTION_PROMPT = "Describe the shirt in this picture."

# The `train` hyperparameters this stand-in needs instead of the production defaults: it is 10^4 times
# smaller, so it takes a far larger learning rate and batch; ~300 steps reach >= 0.9 exact match on colour,
# pattern and sleeve length of the synthetic catalog in well under a minute on 2 cores. `base_model` names
# it, so that the manifest records what was trained when the folder comes in the `base_model` channel.
TINY_BASE_HYPERPARAMETERS: dict[str, str] = {
    "base_model": TINY_BASE_ID,
    "max_steps": "300",
    "batch_size": "32",
    "gradient_accumulation": "1",
    "learning_rate": "3e-3",
    "warmup_ratio": "0.05",
    "lr_schedule": "linear",
    "lora_dropout": "0.0",
    "eval_batch_size": "128",
    "log_every": "25",
    "checkpoint_every": "100",
    "artifact_name": "loom-tiny-demo",
}


def caption(colour: str, pattern: str, sleeve: str) -> str:
    """The caption used to pre-train the tiny base on a drawn shirt."""
    return f"A {colour} {pattern} shirt with {sleeve}"


def build_tokenizer(texts: Iterable[str]) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer whose pieces are the whitespace-separated words of `texts`.

    Single characters are added with a low score so that unseen words still encode without <unk>.
    """
    words: dict[str, None] = {}
    chars: dict[str, None] = {}
    for text in texts:
        for word in text.split():
            words["\u2581" + word] = None
            chars.update(dict.fromkeys(word))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -1.0) for piece in words]
    chars.update(dict.fromkeys(string.ascii_letters + string.digits + string.punctuation))
    vocab += [("\u2581", -5.0)] + [(c, -10.0) for c in chars if "\u2581" + c not in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_processor(texts: Iterable[str], image_size: int = 64, num_query_tokens: int = 8) -> Blip2Processor:
    """A BLIP-2 processor with a tokenizer built from `texts` and `num_query_tokens` image tokens."""
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return Blip2Processor(image_processor=image_processor, tokenizer=build_tokenizer(texts),
                          num_query_tokens=num_query_tokens)


def build_model(processor: Blip2Processor, image_size: int = 64, width: int = 64, layers: int = 2,
                seed: int = 0) -> Blip2ForConditionalGeneration:
    """A freshly initialised tiny BLIP-2 that can learn.

    The stock configs do not: the vision initializer_range defaults to 1e-10, the query tokens start at
    zero and dropout stalls LoRA at this width. Here every part starts at std 1/sqrt(width), no dropout.
    """
    torch.manual_seed(seed)
    tokenizer = processor.tokenizer
    std = 1.0 / math.sqrt(width)
    heads = max(1, width // 32)
    vision = Blip2VisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                               num_attention_heads=heads, image_size=image_size, patch_size=8,
                               initializer_range=std, attention_dropout=0.0)
    qformer = Blip2QFormerConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                 num_attention_heads=heads, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, cross_attention_frequency=1,
                                 encoder_hidden_size=width, initializer_range=std)
    text = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=width // heads, d_ff=2 * width,
                    num_layers=layers, num_decoder_layers=layers, num_heads=heads,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                    decoder_start_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=processor.num_query_tokens,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         initializer_range=std)
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, std)
    return model


def caption_batches(steps: int, batch_size: int, image_size: int, seed: int):
    """Yield `steps` batches of (images, captions) of freshly drawn shirts (not the catalog's photos)."""
    rng = random.Random(seed)
    side = max(image_size, 48)
    for _ in range(steps):
        images, texts = [], []
        for _ in range(batch_size):
            colour = rng.choice(list(synthetic.COLOURS))
            pattern = rng.choice(synthetic.PATTERNS)
            sleeve = rng.choice(synthetic.SLEEVES)
            images.append(synthetic.draw_shirt(colour, pattern, sleeve, (side * 3 // 4, side)))
            texts.append(caption(colour, pattern, sleeve))
        yield images, texts


def caption_pretrain(model: Blip2ForConditionalGeneration, processor: Blip2Processor, steps: int = 800,
                     batch_size: int = 32, lr: float = 2e-3, seed: int = 0, log_every: int = 100) -> list[float]:
    """Full fine-tune of the fresh model on captions of drawn shirts; returns the loss per step."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    losses = []
    image_size = processor.image_processor.size["height"]
    for step, (images, texts) in enumerate(caption_batches(steps, batch_size, image_size, seed), 1):
        inputs = processor(images=images, text=[CAPTION_PROMPT] * len(images), return_tensors="pt", padding=True)
        labels = processor.tokenizer(texts, return_tensors="pt", padding=True).input_ids
        labels[labels == processor.tokenizer.pad_token_id] = -100
        loss = model(**inputs, labels=labels).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"caption pre-training loss is {loss.item()} at step {step}")
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"tiny_base step={step} loss={sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    model.eval()
    return losses


def vocabulary_texts(schema: AttributeSchema, values: dict[str, Iterable[str]]) -> list[str]:
    """Every text the tiny base must encode: questions, answers for the given values, captions."""
    texts = [CAPTION_PROMPT]
    texts += [schema.question(name) for name in schema.names]
    for name, vals in values.items():
        texts += [schema.format_answer(name, v) for v in vals]
    texts += [caption(c, p, s) for c in synthetic.COLOURS for p in synthetic.PATTERNS for s in synthetic.SLEEVES]
    # The product type question (training.prepare asks it first) and the synthetic catalog's article types.
    types = AttributeSchema.from_names([PRODUCT_TYPE_ATTRIBUTE])
    texts.append(types.question(PRODUCT_TYPE_ATTRIBUTE))
    texts += [types.format_answer(PRODUCT_TYPE_ATTRIBUTE, t) for t in synthetic.ARTICLE_TYPES]
    return texts


def demo_schema() -> AttributeSchema:
    """The default attributes, with the synthetic catalog's visible values (colour, pattern, sleeve) as known."""
    schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
    for name, values in (("baseColour", synthetic.COLOURS), ("Pattern", synthetic.PATTERNS),
                         ("Sleeve Length", synthetic.SLEEVES)):
        for value in values:
            schema.count(name, value)
    return schema


def write_untrained_artifact(out: Path, seed: int = 3, name: str = "untrained-tiny"
                             ) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """A model folder in the artifact format (model + processor + manifest) holding an untrained tiny BLIP-2.

    Its answers are meaningless: it is for tests and benchmarks of loading, batching and the HTTP contract.
    Returns the model and processor it saved.
    """
    from loom.artifact import write_manifest

    schema = demo_schema()
    values = {name: list(schema.attributes[name].values) for name in schema.names}
    processor = build_processor(vocabulary_texts(schema, values))
    model = build_model(processor, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_manifest(out, schema, base_model=TINY_BASE_ID, extra={"name": name})
    return model, processor


def catalog_values(catalog_dir: Path, attributes: Iterable[str]) -> dict[str, list[str]]:
    """The values each attribute takes in a catalog, sorted (the tokenizer built from them is then the same
    on every run: set order changes with Python's string hashing)."""
    from training.catalog import read_catalog

    wanted = list(attributes)
    values: dict[str, set[str]] = {name: set() for name in wanted}
    reading = read_catalog(catalog_dir, article_types=None, attributes=wanted, require_attributes=False)
    for product in reading.products:
        for name in wanted:
            if name in product.attributes:
                values[name].add(product.attributes[name])
    return {name: sorted(found) for name, found in values.items()}


def build_tiny_base(out: Path, schema: AttributeSchema, values: dict[str, Iterable[str]], steps: int = 800,
                    seed: int = 0) -> dict:
    """Build, caption-pretrain and save the tiny base into `out` (save_pretrained format)."""
    start = time.perf_counter()
    processor = build_processor(vocabulary_texts(schema, values))
    model = build_model(processor, seed=seed)
    losses = caption_pretrain(model, processor, steps=steps, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    info = {
        "base_model": TINY_BASE_ID,
        "parameters": sum(p.numel() for p in model.parameters()),
        "caption_steps": steps,
        "final_caption_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "seconds": round(time.perf_counter() - start, 1),
        "note": "a stand-in for Salesforce/blip2-flan-t5-xl, for tests and the offline demo only",
    }
    (out / "tiny_base.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom tiny-base", description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, type=Path, help="catalog whose attribute values to cover")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the base model into")
    parser.add_argument("--attributes", nargs="+", default=list(DEFAULT_ATTRIBUTES))
    parser.add_argument("--steps", type=int, default=800, help="caption pre-training steps (default 800)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from training.catalog import CatalogError

    schema = AttributeSchema.from_names(args.attributes)
    try:
        values = catalog_values(args.catalog, args.attributes)
    except CatalogError as exc:
        return command_error(str(exc))
    info = build_tiny_base(args.out, schema, values, steps=args.steps, seed=args.seed)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
