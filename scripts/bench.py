"""Benchmark of the served call: what `/invocations` runs for a product, against the reference way.

    python scripts/bench.py                        # tiny model, CPU (make bench)
    python scripts/bench.py --model DIR            # a Loom artifact folder
    python scripts/bench.py --vision-dominant      # also a tiny model whose vision tower costs what ViT-g does
    python scripts/bench.py --real-size --device cuda   # blip2-flan-t5-xl sizes, random bf16 weights (make bench-gpu)

The served call is the server's path for each product: `Predictor.prepare` (preprocessing and tokenisation,
in the request thread) and `Predictor.answer_attributes_many` (one vision pass, one T5 encoder pass, one
generation for every question of every product in the call, applicability applied afterwards). It is
timed for products without a given product type (the type question is asked with the attributes) and
with one, and for N = 1, 4 and 16 products per call (what batching across requests gives).

Reference: one `model.generate` per question of the same product (the image re-encoded every time), as the
seed's inference code does. Both ways answer the same questions with answers forced to the same realistic
length (`--answer-tokens`, default 10: a `Label: Value` answer in Flan-T5's tokenizer is about 8-12
tokens). The last line printed is `speedup <reference / served, one product a call, type asked>`.

With `--real-size --device cuda` it also times compiled decoding (runtime/decoding.py) at each
N, prints the physical floor for each N and a `torch.profiler` summary of one served call (GPU-busy
fraction, kernel launches and host syncs per product), and stops starting new measurements past
`--budget-s`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import (  # noqa: E402
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    T5Config,
    T5Tokenizer,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil  # noqa: E402

from runtime.decoding import Decoder  # noqa: E402
from runtime.predictor import Predictor  # noqa: E402
from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, AttributeSchema  # noqa: E402
from training import tiny_base  # noqa: E402

QUESTION_TOKENS = 14  # a catalog question in the real Flan-T5 tokenizer, with </s>
ANSWER_TOKENS = 10  # a `Label: Value` answer in the real Flan-T5 tokenizer: about 8-12 tokens
PRODUCTS_PER_CALL = (1, 4, 16)
GIVEN_TYPE = "Tshirts"

# Published GPU figures (dense bf16 tensor TFLOP/s, memory GB/s) for the floor estimate. The A10G of ml.g5 is
# AWS's variant, not NVIDIA's A10: third parties list about 62.5-70 dense bf16 TFLOP/s (FACTS.md).
GPU_SPECS = {"A10G": (70, 600), "L4": (121, 300), "A100": (312, 2039), "H100": (989, 3350), "H200": (989, 4800),
             "L40S": (362, 864)}


def served_schema(base: AttributeSchema | None = None) -> AttributeSchema:
    """`base` (default: the demo attributes) with the product-type question first and applicability as the
    catalog gives it for shirts and T-shirts (Collar for shirts, Neck for T-shirts), so that the served call
    asks the type when it is not given, as a real artifact trained on several article types does."""
    base = base or tiny_base.demo_schema()
    schema = AttributeSchema.from_names([PRODUCT_TYPE_ATTRIBUTE, *base.names])
    for name in base.names:
        for value in base.attributes[name].values:
            schema.count(name, value)
    for kind in ("Shirts", GIVEN_TYPE):
        schema.count(PRODUCT_TYPE_ATTRIBUTE, kind)
    everywhere = [n for n in base.names if n not in ("Collar", "Neck")]
    schema.applies_to = {"Shirts": [*everywhere, "Collar"], GIVEN_TYPE: [*everywhere, "Neck"]}
    return schema


# -- models -------------------------------------------------------------------------------------------------

def build_tiny_artifact(out: Path, vision_layers: int | None = None, vision_width: int = 512,
                        seed: int = 3) -> Path:
    """Write an untrained tiny Loom artifact; with `vision_layers`, its vision tower is a wider, deeper ViT
    on 257 patches (224 px, patch 14, like ViT-g) in front of the same tiny Q-Former and T5."""
    model, processor = tiny_base.write_untrained_artifact(out, seed=seed, name=out.name)
    if vision_layers:
        config = model.config
        config.vision_config = Blip2VisionConfig(
            hidden_size=vision_width, intermediate_size=4 * vision_width, num_hidden_layers=vision_layers,
            num_attention_heads=max(1, vision_width // 64), image_size=224, patch_size=14,
            initializer_range=1 / math.sqrt(vision_width))
        config.qformer_config.encoder_hidden_size = vision_width
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config)
        processor.image_processor = BlipImageProcessorPil(size={"height": 224, "width": 224})
        model.save_pretrained(out)  # over the untrained tiny one: the manifest and tokenizer stay
        processor.save_pretrained(out)
    return out


def real_size_config(vocab_size: int = 32128, image_token_index: int = 32100) -> Blip2Config:
    """Blip2Config with the published Salesforce/blip2-flan-t5-xl sizes (no download)."""
    vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                               num_attention_heads=16, image_size=224, patch_size=14)
    qformer = Blip2QFormerConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, cross_attention_frequency=2, encoder_hidden_size=1408)
    text = T5Config(vocab_size=vocab_size, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24,
                    num_heads=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=32,
                         image_token_index=image_token_index)
    config.text_config.tie_word_embeddings = False
    return config


def component_params(model: Blip2ForConditionalGeneration) -> dict[str, int]:
    """Parameter counts of the parts whose cost differs (embeddings excluded: they are look-ups)."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    lm = model.language_model
    embed = lm.shared.weight.numel()
    return {
        "vision": count(model.vision_model),
        "qformer": count(model.qformer) + model.query_tokens.numel() + count(model.language_projection),
        "encoder": count(lm.encoder) - (embed if lm.encoder.embed_tokens is not None else 0),
        "decoder": count(lm.decoder) - (embed if lm.decoder.embed_tokens is not None else 0) + count(lm.lm_head),
        "total": count(model),
    }


def share_embeddings(model: Blip2ForConditionalGeneration) -> Blip2ForConditionalGeneration:
    """One token embedding for T5's encoder and decoder, as in the checkpoint (v5 leaves them separate when
    `tie_word_embeddings` is False, which Flan-T5 needs for its own lm_head)."""
    lm = model.language_model
    lm.set_input_embeddings(lm.shared)
    return model


def meta_model(config: Blip2Config) -> Blip2ForConditionalGeneration:
    """The model on the meta device: shapes and counts without allocating weights."""
    with torch.device("meta"):
        return share_embeddings(Blip2ForConditionalGeneration(config))


def flop_costs(config: Blip2Config, params: dict[str, int], answer_tokens: int,
               question_tokens: int = QUESTION_TOKENS) -> dict[str, float]:
    """~2 x params x tokens for each part: the image once, and the text side of one question."""
    v = config.vision_config
    patches = (v.image_size // v.patch_size) ** 2 + 1
    nq = config.num_query_tokens
    image = 2 * params["vision"] * patches + 2 * params["qformer"] * nq
    question = 2 * params["encoder"] * (nq + question_tokens) + 2 * params["decoder"] * answer_tokens
    return {"image": image, "question": question, "ratio": image / question}


def real_size_processor(image_size: int = 224, num_query_tokens: int = 32) -> Blip2Processor:
    """A word-level stand-in for the Flan-T5 tokenizer with 32100 pieces (the real vocabulary size)."""
    schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
    schema = served_schema(schema)
    words = {"\u2581" + w: None for n in schema.names for w in schema.question(n).split()}
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in words]
    vocab += [(f"\u2581filler{i}", -20.0) for i in range(32100 - len(vocab))]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    return Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
                          tokenizer=tokenizer, num_query_tokens=num_query_tokens)


def real_size_predictor(device: str, config: Blip2Config | None = None, decoding: str = "eager") -> Predictor:
    """Random bf16 weights in the real architecture (`config` lets tests shrink the layers, not the shapes),
    with the served schema (the product-type question and 8 attributes)."""
    processor = real_size_processor()
    config = config or real_size_config()
    config.image_token_index = processor.tokenizer.convert_tokens_to_ids("<image>")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = share_embeddings(Blip2ForConditionalGeneration(config))
    finally:
        torch.set_default_dtype(previous)
    model.to(device=device, dtype=torch.bfloat16)
    return Predictor(model, processor, served_schema(), info={"name": "real-size-random"}, decoding=decoding)


# -- timing the served call -----------------------------------------------------------------------------------

def _sync(predictor: Predictor) -> None:
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(predictor: Predictor, fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `fn` in ms after one warm-up, the GPU synchronised around each run (the median
    resists other jobs on a shared machine better than the minimum)."""
    fn()
    samples = []
    for _ in range(repeats):
        _sync(predictor)
        start = time.perf_counter()
        fn()
        _sync(predictor)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


class forced_answer_length:
    """Every generation in the block decodes exactly `tokens` tokens (both ways decode the same number of
    steps, whatever random or untrained weights would say)."""

    def __init__(self, predictor: Predictor, tokens: int):
        self.config, self.tokens = predictor.model.language_model.generation_config, tokens

    def __enter__(self):
        self.previous = self.config.min_new_tokens
        self.config.min_new_tokens = self.tokens

    def __exit__(self, *exc):
        self.config.min_new_tokens = self.previous


def product_images(count: int, size: tuple[int, int] = (96, 128)):
    from training import synthetic

    combos = [(c, p, s) for c in synthetic.COLOURS for p in synthetic.PATTERNS for s in synthetic.SLEEVES]
    return [synthetic.draw_shirt(*combos[(7 * n) % len(combos)], size) for n in range(count)]


def facts_for(type_given: bool) -> dict[str, str]:
    return {"product_type": GIVEN_TYPE} if type_given else {}


def served_call(predictor: Predictor, images, facts: dict, answer_tokens: int):
    """What the server runs for these products in one model call (request threads prepare, the model
    thread answers; here one thread does both, in that order)."""
    prepared = [predictor.prepare(image, None, facts) for image in images]
    return predictor.answer_attributes_many(prepared, max_new_tokens=answer_tokens)


def reference_call(predictor: Predictor, image, questions: list[str], answer_tokens: int) -> None:
    """The reference way: one `model.generate` per question, the image encoded again for each."""
    for question in questions:
        predictor.generate_per_question(image, question, max_new_tokens=answer_tokens)


def asked_questions(predictor: Predictor, image, facts: dict) -> list[str]:
    """The questions the served call asks for this product (the same set for the reference way)."""
    return [predictor.schema.question(n) for n in predictor.prepare(image, None, facts).asked]


@dataclass
class ServedTiming:
    """ms per product: the reference way, and the served call at each number of products per call."""

    questions: int
    reference_ms: float | None
    served_ms: dict[int, float]

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.served_ms[1]


def time_served(predictor: Predictor, type_given: bool, answer_tokens: int = ANSWER_TOKENS,
                per_call: tuple[int, ...] = PRODUCTS_PER_CALL, products: int = 3, repeats: int = 1,
                reference: bool = True) -> ServedTiming:
    """Median ms per product of the reference way (`products` products) and of the served call with N
    products a call for each N in `per_call` (each timed call warmed up once: compiled decoding compiles
    its padded shape there)."""
    facts = facts_for(type_given)
    images = product_images(max(products, max(per_call)))
    questions = asked_questions(predictor, images[0], facts)
    with forced_answer_length(predictor, answer_tokens):
        reference_ms = None
        if reference:
            reference_ms = statistics.median(
                median_ms(predictor, lambda image=image: reference_call(predictor, image, questions, answer_tokens),
                          repeats) for image in images[:products])
        served = {n: median_ms(predictor, lambda n=n: served_call(predictor, images[:n], facts, answer_tokens),
                               repeats) / n for n in per_call}
    return ServedTiming(len(questions), reference_ms, served)


def report(label: str, timing: ServedTiming, type_given: bool) -> None:
    kind = f"product type given ({GIVEN_TYPE})" if type_given else "product type asked"
    line = f"{label}, {kind}, {timing.questions} questions a product:"
    if timing.reference_ms is not None:
        line += (f" reference {timing.reference_ms:.1f} ms/product, served {timing.served_ms[1]:.1f} ms/product"
                 f" (one product a call), speedup {timing.speedup:.2f}x")
    print(line, flush=True)
    per_call = ", ".join(f"N={n}: {ms:.1f}" for n, ms in timing.served_ms.items())
    print(f"  served call, ms per product with N products a call: {per_call}", flush=True)


# -- floor and stages ---------------------------------------------------------------------------------------

def measured_ratio(predictor: Predictor, answer_tokens: int, repeats: int = 3) -> float:
    """Measured cost of encoding the image once / answering one question with the image already encoded."""
    from PIL import Image

    image = Image.new("RGB", (96, 128), (200, 40, 40))
    inputs = predictor.processor(images=image, return_tensors="pt").to(predictor.device)
    pv = inputs["pixel_values"].to(predictor.model.dtype)
    question = predictor.schema.question(predictor.schema.names[0])

    with torch.inference_mode():
        vision = median_ms(predictor, lambda: predictor.model.get_image_features(pixel_values=pv), repeats)
    whole = median_ms(predictor, lambda: predictor.generate(image, [question], max_new_tokens=answer_tokens), repeats)
    return vision / max(whole - vision, 0.05 * whole)  # noise can make the difference negative


def floor_parts(config: Blip2Config, params: dict[str, int], k: int, answer_tokens: int,
                device_name: str, products: int = 1) -> dict[str, float] | None:
    """Physical floor per product, by stage, with `products` products a call: the image and the T5 encoder
    compute-bound (the encoder's weights read once a call), each decoder step memory-bound (all decoder
    weights read once per step, shared by the call's products) unless its rows make it compute-bound."""
    spec = next((v for key, v in GPU_SPECS.items() if key in device_name.upper()), None)
    if spec is None:
        return None
    tflops, gbps = spec
    costs = flop_costs(config, params, answer_tokens)
    nq = config.num_query_tokens
    return {
        "image": costs["image"] / (tflops * 1e12) * 1e3,
        "encoder": max(2 * params["encoder"] * (nq + QUESTION_TOKENS) * k / (tflops * 1e12),
                       2 * params["encoder"] / (gbps * 1e9) / products) * 1e3,
        "step": max(2 * params["decoder"] / (gbps * 1e9) / products,
                    2 * params["decoder"] * k / (tflops * 1e12)) * 1e3,
    }


def floor_ms(config: Blip2Config, params: dict[str, int], k: int, answer_tokens: int, device_name: str,
             products: int = 1) -> float | None:
    """Physical floor per product (see `floor_parts`): image + encoder + answer_tokens decoder steps."""
    parts = floor_parts(config, params, k, answer_tokens, device_name, products)
    return None if parts is None else parts["image"] + parts["encoder"] + answer_tokens * parts["step"]


def stage_times(predictor: Predictor, k: int, answer_tokens: int, repeats: int = 3) -> dict[str, float]:
    """Median ms of each stage of Loom's way for one product: the image encoded once (vision tower, Q-Former,
    projection), the T5 encoder over the K rows, and one decoder step (from generations of 1 and N tokens)."""
    from PIL import Image

    image = Image.new("RGB", (96, 128), (200, 40, 40))
    questions = [predictor.schema.question(n) for n in predictor.schema.names][:k]
    model = predictor.model
    lm = model.language_model
    inputs = predictor._inputs([image], questions)
    mask = inputs["attention_mask"]
    pixel_values = inputs["pixel_values"].to(model.dtype)

    with torch.inference_mode():
        image_ms = median_ms(predictor, lambda: model.get_image_features(pixel_values=pixel_values), repeats)
        embeds = predictor.input_embeddings(inputs, torch.zeros(len(questions), dtype=torch.long,
                                                                device=predictor.device))
        encoder_ms = median_ms(predictor, lambda: lm.encoder(inputs_embeds=embeds, attention_mask=mask), repeats)
        steps = max(2, answer_tokens)

        def decode(tokens: int):
            return lambda: lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=tokens,
                                       min_new_tokens=tokens, do_sample=False)

        one, many = median_ms(predictor, decode(1), repeats), median_ms(predictor, decode(steps), repeats)
    return {"image": image_ms, "encoder": encoder_ms, "step": max(many - one, 0.0) / (steps - 1)}


def print_stages(stages: dict[str, float], floor: dict[str, float] | None, answer_tokens: int) -> None:
    """Each stage next to its floor: where the time above the floor goes."""
    for name, label in (("image", "image encoded once"), ("encoder", "T5 encoder, K rows"),
                        ("step", "one decoder step")):
        line = f"  {label:<20} {stages[name]:8.2f} ms"
        if floor:
            line += f"   floor {floor[name]:6.2f} ms   {stages[name] / floor[name]:5.1f}x"
        print(line, flush=True)
    print(f"  ({answer_tokens} decoder steps per product)", flush=True)


def calibrate_vision_layers(workdir: Path, target: float, answer_tokens: int) -> tuple[int, float]:
    """The number of vision layers for which the image costs `target` times one question, measured here."""
    probe = Predictor.load(build_tiny_artifact(workdir / "probe", vision_layers=2), device="cpu")
    per_layer = measured_ratio(probe, answer_tokens, repeats=5) / 2
    layers = min(48, max(1, round(target / per_layer)))
    return layers, per_layer


# -- profile ---------------------------------------------------------------------------------------------------

LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def profile_summary(predictor: Predictor, fn: Callable[[], Any], products: int) -> dict[str, float]:
    """One run of `fn` under torch.profiler: wall ms, GPU-busy fraction (kernel time / wall time), kernel
    launches (a replayed CUDA graph counts once) and host syncs, each also per product. On CPU the GPU
    figures are 0."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if predictor.device.type == "cuda" else [])
    fn()  # warm: no first-call costs in the profile
    _sync(predictor)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        _sync(predictor)
        wall_ms = (time.perf_counter() - start) * 1000
    averages = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0.0) for e in averages
                    if str(getattr(e, "device_type", "")).endswith("CUDA"))
    launches = sum(e.count for e in averages if e.key in LAUNCHES)
    syncs = sum(e.count for e in averages if e.key in SYNCS)
    return {"wall_ms": wall_ms, "gpu_busy": min(1.0, device_us / 1000 / wall_ms) if wall_ms else 0.0,
            "launches": launches, "launches_per_product": launches / products,
            "syncs": syncs, "syncs_per_product": syncs / products}


def print_profile(label: str, summary: dict[str, float], products: int) -> None:
    print(f"  profile, {label}, {products} products a call: {summary['wall_ms']:.1f} ms, GPU busy "
          f"{summary['gpu_busy'] * 100:.0f} %, kernel launches {summary['launches']:.0f} "
          f"({summary['launches_per_product']:.0f} a product), host syncs {summary['syncs']:.0f} "
          f"({summary['syncs_per_product']:.1f} a product)", flush=True)


# -- real size ----------------------------------------------------------------------------------------------

def run_real_size(predictor: Predictor, device_name: str, args) -> float:
    """Eager and compiled served calls at each N against the reference and the floor; returns the speedup
    of the served call (one product a call, type asked) over the reference way."""
    deadline = time.monotonic() + args.budget_s
    config, params = predictor.model.config, component_params(predictor.model)
    lm = predictor.model.language_model
    per_call = tuple(args.per_call)
    timings: dict[str, ServedTiming] = {}
    decoders: dict[str, Decoder] = {}  # kept: the profile reuses the compiled shapes and caches
    for mode in ("eager", "compiled") if args.compiled else ("eager",):
        if time.monotonic() > deadline:
            print(f"{mode}: not timed, past --budget-s {args.budget_s:g} s", flush=True)
            continue
        predictor.decoder = decoders[mode] = Decoder(lm, mode)
        started = time.monotonic()
        timing = time_served(predictor, type_given=False, answer_tokens=args.answer_tokens, per_call=per_call,
                             products=args.products, repeats=args.repeats, reference=mode == "eager")
        if mode == "compiled" and predictor.decoding != "compiled":
            print(f"compiled decoding failed and fell back to eager ({predictor.decoder.failure}); "
                  f"its figures below are eager", flush=True)
        timings[mode] = timing
        report(f"real-size on {device_name}, {mode} decoding", timing, type_given=False)
        print(f"  ({time.monotonic() - started:.0f} s including warm-ups and compilation)", flush=True)
    eager = timings["eager"]
    for n in per_call:
        floor = floor_ms(config, params, eager.questions, args.answer_tokens, device_name, products=n)
        line = f"N={n}: eager {eager.served_ms[n]:.1f} ms/product"
        if "compiled" in timings:
            compiled = timings["compiled"].served_ms[n]
            line += f", compiled {compiled:.1f} ms/product (eager/compiled {eager.served_ms[n] / compiled:.2f}x)"
        if floor:
            best = min(t.served_ms[n] for t in timings.values())
            line += f", floor {floor:.2f} ms/product, best is {best / floor:.1f}x the floor"
        print(line, flush=True)
    if args.profile and time.monotonic() < deadline:
        images = product_images(max(per_call))
        n = max(per_call)
        with forced_answer_length(predictor, args.answer_tokens):
            for mode in timings:
                predictor.decoder = decoders[mode]
                summary = profile_summary(predictor, lambda: served_call(predictor, images[:n], {},
                                                                         args.answer_tokens), n)
                print_profile(f"{mode} decoding", summary, n)
    predictor.decoder = Decoder(lm, "eager")
    if time.monotonic() < deadline:
        parts = floor_parts(config, params, eager.questions, args.answer_tokens, device_name)
        print(f"stages of the served call (eager, one product, {eager.questions} rows) on {device_name}:", flush=True)
        print_stages(stage_times(predictor, eager.questions, args.answer_tokens), parts, args.answer_tokens)
    return eager.speedup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Loom artifact folder (default: build the tiny model)")
    parser.add_argument("--real-size", action="store_true", help="blip2-flan-t5-xl sizes, random bf16 weights")
    parser.add_argument("--shrink", action="store_true", help="with --real-size: one layer per stack (tests)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS,
                        help=f"tokens decoded per answer (default {ANSWER_TOKENS})")
    parser.add_argument("--products", type=int, default=3, help="products timed the reference way (default 3)")
    parser.add_argument("--per-call", type=int, nargs="+", default=list(PRODUCTS_PER_CALL),
                        help="products per served call (default 1 4 16)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny model, fewer products (for tests)")
    parser.add_argument("--vision-dominant", action="store_true",
                        help="also a tiny model whose vision tower costs what ViT-g costs against Flan-T5-XL")
    parser.add_argument("--compiled", action="store_true", help="with --real-size: also compiled decoding")
    parser.add_argument("--profile", action="store_true", help="with --real-size: a torch.profiler summary")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads than free cores "
                             "make every timing swing; 0 keeps torch's default)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="with --real-size: start no new measurement after this many seconds")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    real_config = real_size_config()
    real_params = component_params(meta_model(real_config))
    real = flop_costs(real_config, real_params, args.answer_tokens)
    print(f"blip2-flan-t5-xl sizes: {real_params['total'] / 1e9:.2f} B parameters; image/question cost ratio "
          f"(FLOPs, {args.answer_tokens}-token answers) {real['ratio']:.2f}; torch CPU threads "
          f"{torch.get_num_threads()}", flush=True)

    if args.real_size:
        config = real_size_config()
        if args.shrink:
            config.vision_config.num_hidden_layers = 1
            config.qformer_config.num_hidden_layers = 2
            config.text_config.num_layers = config.text_config.num_decoder_layers = 1
        predictor = real_size_predictor(device, config)
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        speedup = run_real_size(predictor, name, args)
        print(f"speedup {speedup:.2f}")
        return 0

    if args.quick:
        args.products, args.per_call = 2, [1, 4]
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        work = Path(tmp)
        if args.vision_dominant:
            layers, _ = calibrate_vision_layers(work, real["ratio"], args.answer_tokens)
            dominant = Predictor.load(build_tiny_artifact(work / "vision-dominant", vision_layers=layers),
                                      device=device)
            dominant.schema = served_schema(dominant.schema)
            ratio = measured_ratio(dominant, args.answer_tokens)
            print(f"vision-dominant: {layers} vision layers of width 512 on 257 patches; image/question cost ratio "
                  f"(measured) {ratio:.2f} vs {real['ratio']:.2f} for ViT-g + Flan-T5-XL", flush=True)
            report("vision-dominant (CPU)", time_served(dominant, False, args.answer_tokens, tuple(args.per_call),
                                                        args.products, args.repeats), type_given=False)
        if args.model:
            predictor, label = Predictor.load(args.model, device=device), str(args.model)
        else:
            predictor, label = Predictor.load(build_tiny_artifact(work / "tiny"), device=device), "tiny"
            predictor.schema = served_schema(predictor.schema)
        label += f" ({device})"
        given = time_served(predictor, True, args.answer_tokens, tuple(args.per_call), args.products, args.repeats)
        report(label, given, type_given=True)
        asked = time_served(predictor, False, args.answer_tokens, tuple(args.per_call), args.products, args.repeats)
        report(label, asked, type_given=False)
        print(f"speedup {asked.speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
