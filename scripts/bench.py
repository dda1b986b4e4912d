"""Benchmark of the model call a request makes, against plain transformers one `generate` per question.

    python scripts/bench.py                        # tiny model, CPU (make bench)
    python scripts/bench.py --model DIR            # a Loom artifact folder
    python scripts/bench.py --vision-dominant      # also a tiny model whose vision tower costs what ViT-g does
    python scripts/bench.py --real-size --device cuda   # blip2-flan-t5-xl sizes, random bf16 weights (make bench-gpu)

The served call is the model call the server makes for each product: `Predictor.prepare` (preprocessing and
tokenisation) and `Predictor.answer_attributes_many` (one vision pass, one T5 encoder pass, one generation
for every question of every product in the call, applicability applied afterwards), on decoded PIL images in
one thread. Image decoding (the DecodePool), base64/JSON parsing, the queue hop and the HTTP response are not
in it. It is timed for products without a given product type (the type question is asked with the
attributes) and with one, and for N = 1, 4 and 16 products per call (what batching across requests gives).

Reference: plain transformers, one `model.generate` per question of the same product (the image re-encoded
every time). This is not any earlier Loom server: the previous server's two-pass path for a product without
a type (the type asked first, then the attributes, each pass encoding the image once) is not timed here, so
the gain over that server is not measured by this script.

Answer lengths are an estimate: no Flan-T5 tokenizer is available offline, so each attribute's answer
(`Label: Value`) is given a length from its words (`estimated_answer_tokens`). The reference decodes each
answer to its own estimated length; the served call decodes every row to the longest answer of the call,
as one batched generation does (it stops when its last row ends). `--answer-tokens N` forces every answer
of both ways to N tokens instead.

Each measurement is repeated `--repeats` times (default 3), the rounds interleaving the two kinds of
product and the two ways, and reported as the median with the range (lowest-highest) of the rounds. The
last line printed is `speedup <reference / served, one product a call, type asked, medians>`.

With `--real-size --device cuda` it also times compiled decoding (runtime/decoding.py) at each N, after
`Predictor.warm_up` has checked compiled answers against eager ones (it prints whether compiled decoding is
really used), prints the physical floor for each N from the running GPU's published figures (`GPU_SPECS`,
matched by device name) with the stand-in tokenizer's question lengths, a `torch.profiler` summary of one
served call (GPU-busy fraction, kernel launches and host syncs per product), and stops starting new
measurements past `--budget-s`.
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

QUESTION_TOKENS = 14  # a catalog question in the real Flan-T5 tokenizer, with </s>: an estimate, not counted
ANSWER_TOKENS = 8  # an estimated `Label: Value` answer (see estimated_answer_tokens): for the printed cost ratio
PRODUCTS_PER_CALL = (1, 4, 16)
GIVEN_TYPE = "Tshirts"

# Published GPU figures (dense bf16 tensor TFLOP/s, memory GB/s) for the floor estimate, matched in this order
# against the running GPU's name (`gpu_spec`). The A10G of ml.g5 is AWS's variant, not NVIDIA's A10: third
# parties list about 62.5-70 dense bf16 TFLOP/s (FACTS.md). "H100" is the SXM part; the PCIe and NVL parts are
# slower and listed before it so that their names match first.
GPU_SPECS = {"A10G": (70, 600), "L40S": (362, 864), "L4": (121, 300), "A100": (312, 2039),
             "H100 PCIE": (756, 2000), "H100 NVL": (835, 3900), "H100": (989, 3350), "H200": (989, 4800)}


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
    """Every generation in the block decodes exactly `tokens` tokens (whatever random or untrained weights
    would say): the lengths the bench gives the answers are the lengths decoded."""

    def __init__(self, predictor: Predictor, tokens: int):
        self.config, self.tokens = predictor.model.language_model.generation_config, tokens

    def __enter__(self):
        self.previous = self.config.min_new_tokens
        self.config.min_new_tokens = self.tokens

    def __exit__(self, *exc):
        self.config.min_new_tokens = self.previous


def estimated_answer_tokens(schema: AttributeSchema, name: str) -> int:
    """Estimated Flan-T5 length of an answer to `name` (`Label: Value`, with </s>), averaged over the values
    the schema knows (a one-word value when it knows none): about 1.5 pieces a word, one for the colon and
    one for </s>. An estimate: no Flan-T5 tokenizer is available offline to count real pieces."""
    values = list(schema.attributes[name].values) or ["Regular"]

    def tokens(text: str) -> int:
        return math.ceil(1.5 * len(text.replace(":", " ").split())) + 2

    return round(statistics.mean(tokens(schema.format_answer(name, v)) for v in values))


def product_images(count: int, size: tuple[int, int] = (96, 128)):
    from training import synthetic

    combos = [(c, p, s) for c in synthetic.COLOURS for p in synthetic.PATTERNS for s in synthetic.SLEEVES]
    return [synthetic.draw_shirt(*combos[(7 * n) % len(combos)], size) for n in range(count)]


def facts_for(type_given: bool) -> dict[str, str]:
    return {"product_type": GIVEN_TYPE} if type_given else {}


def served_call(predictor: Predictor, images, facts: dict, answer_tokens: int):
    """The model call the server makes for these products (request threads prepare, the model thread
    answers; here one thread does both, in that order)."""
    prepared = [predictor.prepare(image, None, facts) for image in images]
    return predictor.answer_attributes_many(prepared, max_new_tokens=answer_tokens)


def reference_call(predictor: Predictor, image, questions: list[str], answer_tokens: int | list[int]) -> None:
    """The reference way: one `model.generate` per question, the image encoded again for each, each answer
    decoded to its own length (`answer_tokens`: one per question, or one for all)."""
    lengths = answer_tokens if isinstance(answer_tokens, list) else [answer_tokens] * len(questions)
    for question, tokens in zip(questions, lengths):
        with forced_answer_length(predictor, tokens):
            predictor.generate_per_question(image, question, max_new_tokens=tokens)


def asked_questions(predictor: Predictor, image, facts: dict) -> list[str]:
    """The questions the served call asks for this product (the same set for the reference way)."""
    return [predictor.schema.question(n) for n in predictor.prepare(image, None, facts).asked]


def answer_lengths(predictor: Predictor, image, facts: dict, forced: int | None) -> list[int]:
    """Tokens decoded for each asked question: `forced` for all, else each answer's estimated length."""
    names = predictor.prepare(image, None, facts).asked
    return [forced or estimated_answer_tokens(predictor.schema, n) for n in names]


def spread(samples: list[float]) -> str:
    """`median (lowest-highest)` of the rounds."""
    median = statistics.median(samples)
    return f"{median:.1f} ({min(samples):.1f}-{max(samples):.1f})" if len(samples) > 1 else f"{median:.1f}"


@dataclass
class ServedTiming:
    """ms per product of each round: the reference way, and the served call at each number of products per
    call; `lengths` are the tokens the reference decodes per question, `answer_tokens` the served call's."""

    questions: int
    reference_samples: list[float] | None
    served_samples: dict[int, list[float]]
    lengths: list[int]
    answer_tokens: int

    @property
    def reference_ms(self) -> float | None:
        return statistics.median(self.reference_samples) if self.reference_samples else None

    @property
    def served_ms(self) -> dict[int, float]:
        return {n: statistics.median(v) for n, v in self.served_samples.items()}

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.served_ms[1]

    @property
    def speedups(self) -> list[float]:
        """reference / served (one product a call) of each round."""
        return [r / s for r, s in zip(self.reference_samples or [], self.served_samples[1])]


def time_rounds(predictor: Predictor, kinds: tuple[bool, ...], answer_tokens: int | None = None,
                per_call: tuple[int, ...] = PRODUCTS_PER_CALL, products: int = 3, repeats: int = 3,
                reference: bool = True) -> dict[bool, ServedTiming]:
    """ms per product of the reference way (the mean of `products` products) and of the served call with N
    products a call for each N in `per_call`, for each kind (product type given or not): every measurement
    warmed up once (compiled decoding compiles its padded shape there), then `repeats` rounds, each round
    timing every kind and way once, the order of the kinds alternating between rounds."""
    images = product_images(max(products, max(per_call)))
    setups = {}
    for type_given in kinds:
        facts = facts_for(type_given)
        lengths = answer_lengths(predictor, images[0], facts, answer_tokens)
        setups[type_given] = (facts, asked_questions(predictor, images[0], facts), lengths, max(lengths))

    def once(fn: Callable[[], Any]) -> float:
        _sync(predictor)
        start = time.perf_counter()
        fn()
        _sync(predictor)
        return (time.perf_counter() - start) * 1000

    def reference_fn(type_given: bool) -> Callable[[], Any]:
        _, questions, lengths, _ = setups[type_given]
        return lambda: [reference_call(predictor, image, questions, lengths) for image in images[:products]]

    def served_fn(type_given: bool, n: int) -> Callable[[], Any]:
        facts, _, _, longest = setups[type_given]

        def run():
            with forced_answer_length(predictor, longest):
                served_call(predictor, images[:n], facts, longest)
        return run

    for type_given in kinds:  # warm-ups
        if reference:
            reference_fn(type_given)()
        for n in per_call:
            served_fn(type_given, n)()
    samples = {k: ([] if reference else None, {n: [] for n in per_call}) for k in kinds}
    for round_ in range(repeats):
        for type_given in (kinds if round_ % 2 == 0 else tuple(reversed(kinds))):
            ref, served = samples[type_given]
            if reference:
                ref.append(once(reference_fn(type_given)) / products)
            for n in per_call:
                served[n].append(once(served_fn(type_given, n)) / n)
    return {k: ServedTiming(len(setups[k][1]), samples[k][0], samples[k][1], setups[k][2], setups[k][3])
            for k in kinds}


def time_served(predictor: Predictor, type_given: bool, answer_tokens: int | None = None,
                per_call: tuple[int, ...] = PRODUCTS_PER_CALL, products: int = 3, repeats: int = 3,
                reference: bool = True) -> ServedTiming:
    """`time_rounds` for one kind of product."""
    return time_rounds(predictor, (type_given,), answer_tokens, per_call, products, repeats, reference)[type_given]


def report(label: str, timing: ServedTiming, type_given: bool) -> None:
    kind = f"product type given ({GIVEN_TYPE})" if type_given else "product type asked"
    rounds = len(timing.served_samples[min(timing.served_samples)])
    line = f"{label}, {kind}, {timing.questions} questions a product:"
    if timing.reference_ms is not None:
        speedups = timing.speedups
        line += (f" reference {spread(timing.reference_samples)} ms/product, served "
                 f"{spread(timing.served_samples[1])} ms/product (one product a call), speedup "
                 f"{timing.speedup:.2f}x (rounds {min(speedups):.2f}-{max(speedups):.2f})")
    print(line, flush=True)
    print(f"  {rounds} rounds, median (lowest-highest); answer tokens (estimated): reference "
          f"{'/'.join(map(str, timing.lengths))} per question, served call {timing.answer_tokens} for every row",
          flush=True)
    per_call = ", ".join(f"N={n}: {spread(v)}" for n, v in timing.served_samples.items())
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


def gpu_spec(device_name: str) -> tuple[str, tuple[float, float]] | None:
    """The `GPU_SPECS` entry (key, (TFLOP/s, GB/s)) whose key the running GPU's name contains, first match."""
    return next(((key, v) for key, v in GPU_SPECS.items() if key in device_name.upper()), None)


def floor_parts(config: Blip2Config, params: dict[str, int], k: int, answer_tokens: int,
                device_name: str, products: int = 1,
                question_tokens: float = QUESTION_TOKENS) -> dict[str, float] | None:
    """Physical floor per product, by stage, with `products` products a call: the image and the T5 encoder
    compute-bound (the encoder's weights read once a call), each decoder step memory-bound (all decoder
    weights read once per step, shared by the call's products) unless its rows make it compute-bound."""
    spec = gpu_spec(device_name)
    if spec is None:
        return None
    tflops, gbps = spec[1]
    costs = flop_costs(config, params, answer_tokens)
    nq = config.num_query_tokens
    return {
        "image": costs["image"] / (tflops * 1e12) * 1e3,
        "encoder": max(2 * params["encoder"] * (nq + question_tokens) * k / (tflops * 1e12),
                       2 * params["encoder"] / (gbps * 1e9) / products) * 1e3,
        "step": max(2 * params["decoder"] / (gbps * 1e9) / products,
                    2 * params["decoder"] * k / (tflops * 1e12)) * 1e3,
    }


def floor_ms(config: Blip2Config, params: dict[str, int], k: int, answer_tokens: int, device_name: str,
             products: int = 1, question_tokens: float = QUESTION_TOKENS) -> float | None:
    """Physical floor per product (see `floor_parts`): image + encoder + answer_tokens decoder steps."""
    parts = floor_parts(config, params, k, answer_tokens, device_name, products, question_tokens)
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
    image = product_images(1)[0]
    questions = asked_questions(predictor, image, {})
    question_tokens = statistics.mean(len(predictor.processor.tokenizer(q).input_ids) for q in questions)
    spec = gpu_spec(device_name)
    if spec:
        print(f"floor: GPU_SPECS[{spec[0]!r}] = {spec[1][0]:g} dense bf16 TFLOP/s, {spec[1][1]:g} GB/s (published "
              f"figures, matched to {device_name!r}); question rows of {question_tokens:.1f} tokens on average, "
              f"as measured (the stand-in tokenizer's; real Flan-T5 questions are estimated at about "
              f"{QUESTION_TOKENS})", flush=True)
    else:
        print(f"floor: no GPU_SPECS entry matches {device_name!r}; no floor printed", flush=True)
    for mode in ("eager", "compiled") if args.compiled else ("eager",):
        if time.monotonic() > deadline:
            print(f"{mode}: not timed, past --budget-s {args.budget_s:g} s", flush=True)
            continue
        predictor.decoder = decoders[mode] = Decoder(lm, mode)
        started = time.monotonic()
        if mode == "compiled":
            # What the server does at start: compiled answers checked against eager ones (Decoder.verify),
            # then the one-product shapes compiled; a mismatch or a failure turns compiled decoding off.
            predictor.warm_up(max_products=1)
            verified = predictor.decoding == "compiled"
            print(f"compiled decoding after warm-up: {'verified against eager, in use' if verified else 'OFF'}"
                  f"{'' if verified else f' ({predictor.decoder.failure}); the compiled rows below are eager'}",
                  flush=True)
        timing = time_served(predictor, type_given=False, answer_tokens=args.answer_tokens, per_call=per_call,
                             products=args.products, repeats=args.repeats, reference=mode == "eager")
        if mode == "compiled":
            if predictor.decoding != "compiled":
                print(f"compiled decoding failed and fell back to eager ({predictor.decoder.failure}); "
                      f"its figures below are eager", flush=True)
            else:
                print("compiled decoding still in use after the timed calls", flush=True)
        timings[mode] = timing
        report(f"real-size on {device_name}, {mode} decoding", timing, type_given=False)
        print(f"  ({time.monotonic() - started:.0f} s including warm-ups and compilation)", flush=True)
    eager = timings["eager"]
    for n in per_call:
        floor = floor_ms(config, params, eager.questions, eager.answer_tokens, device_name, products=n,
                         question_tokens=question_tokens)
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
        with forced_answer_length(predictor, eager.answer_tokens):
            for mode in timings:
                predictor.decoder = decoders[mode]
                summary = profile_summary(predictor, lambda: served_call(predictor, images[:n], {},
                                                                         eager.answer_tokens), n)
                print_profile(f"{mode} decoding", summary, n)
    predictor.decoder = Decoder(lm, "eager")
    if time.monotonic() < deadline:
        parts = floor_parts(config, params, eager.questions, eager.answer_tokens, device_name,
                            question_tokens=question_tokens)
        print(f"stages of the served call (eager, one product, {eager.questions} rows) on {device_name}:", flush=True)
        print_stages(stage_times(predictor, eager.questions, eager.answer_tokens), parts, eager.answer_tokens)
    return eager.speedup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Loom artifact folder (default: build the tiny model)")
    parser.add_argument("--real-size", action="store_true", help="blip2-flan-t5-xl sizes, random bf16 weights")
    parser.add_argument("--shrink", action="store_true", help="with --real-size: one layer per stack (tests)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--answer-tokens", type=int, default=None,
                        help="tokens decoded for every answer, both ways (default: each answer's estimated "
                             "length for the reference, the longest of the call for the served call)")
    parser.add_argument("--products", type=int, default=3, help="products timed the reference way (default 3)")
    parser.add_argument("--per-call", type=int, nargs="+", default=list(PRODUCTS_PER_CALL),
                        help="products per served call (default 1 4 16)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of every measurement, interleaved (default 3): median and range reported")
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
    ratio_tokens = args.answer_tokens or ANSWER_TOKENS
    real = flop_costs(real_config, real_params, ratio_tokens)
    print(f"blip2-flan-t5-xl sizes: {real_params['total'] / 1e9:.2f} B parameters; image/question cost ratio "
          f"(FLOPs, {ratio_tokens}-token answers) {real['ratio']:.2f}; torch CPU threads "
          f"{torch.get_num_threads()}; {args.repeats} rounds a measurement", flush=True)

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
            layers, _ = calibrate_vision_layers(work, real["ratio"], ratio_tokens)
            dominant = Predictor.load(build_tiny_artifact(work / "vision-dominant", vision_layers=layers),
                                      device=device)
            dominant.schema = served_schema(dominant.schema)
            ratio = measured_ratio(dominant, ratio_tokens)
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
        # Both kinds in the same rounds, interleaved: a load swing hits both, not one of them.
        timings = time_rounds(predictor, (True, False), args.answer_tokens, tuple(args.per_call), args.products,
                              args.repeats)
        given, asked = timings[True], timings[False]
        report(label, given, type_given=True)
        report(label, asked, type_given=False)
        print(f"speedup {asked.speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
