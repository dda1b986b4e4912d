"""Benchmark: K attribute questions per product, the reference way vs Loom's encode-once way.

    python scripts/bench.py                        # tiny model + a vision-dominant variant, CPU
    python scripts/bench.py --model DIR            # a Loom artifact folder
    python scripts/bench.py --real-size --device cuda   # blip2-flan-t5-xl sizes, random bf16 weights, stages vs floor
    python scripts/bench.py --real-size --static-cache  # also Loom's way with a static (compiled) decoder cache

Reference: one `model.generate` per question (the image is re-encoded every time), as the notebook's
one-request-per-question endpoint does. Loom: `Predictor.generate` (image encoded once, K answers decoded
in one batch). Both run in this process on the same model with the same forced answer length; the last
line printed is `speedup <reference time / Loom time>` for the last model benchmarked.
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

from runtime.predictor import Predictor  # noqa: E402
from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema  # noqa: E402
from training import tiny_base  # noqa: E402

QUESTION_TOKENS = 14  # a catalog question in the real Flan-T5 tokenizer, with </s>

# Published GPU figures (dense bf16 tensor TFLOP/s, memory GB/s) for the floor estimate.
GPU_SPECS = {"A10G": (125, 600), "L4": (121, 300), "A100": (312, 2039), "H100": (989, 3350), "H200": (989, 4800),
             "L40S": (362, 864)}


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
    words = {"\u2581" + w: None for n in schema.names for w in schema.question(n).split()}
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in words]
    vocab += [(f"\u2581filler{i}", -20.0) for i in range(32100 - len(vocab))]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    return Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
                          tokenizer=tokenizer, num_query_tokens=num_query_tokens)


def real_size_predictor(device: str, config: Blip2Config | None = None) -> Predictor:
    """Random bf16 weights in the real architecture (`config` lets tests shrink the layers, not the shapes)."""
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
    return Predictor(model, processor, tiny_base.demo_schema(), info={"name": "real-size-random"})


# -- timing -------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    reference_ms: float
    loom_ms: float
    loom_static_ms: float | None = None  # Loom's way with a static cache (compiled on CUDA), when asked for

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.loom_ms


def _sync(predictor: Predictor) -> None:
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(predictor: Predictor, fn, repeats: int) -> float:
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


def _questions(predictor: Predictor, k: int) -> list[str]:
    questions = [predictor.schema.question(n) for n in predictor.schema.names][:k]
    return questions + [f"Describe the shirt in this picture {i}." for i in range(k - len(questions))]


def time_products(predictor: Predictor, k: int, answer_tokens: int, products: int, repeats: int = 1,
                  static_cache: bool = False) -> Timing:
    """Median ms per product, reference (K x generate) and Loom (one encode, one batched generate); with
    `static_cache`, Loom's way once more with a static decoder cache (transformers compiles the decoder step
    on CUDA; the warm-up run pays for the compilation)."""
    from training import synthetic

    # Fixed answer length so that both ways decode the same number of tokens whatever the weights say.
    config = predictor.model.language_model.generation_config
    config.min_new_tokens = answer_tokens
    questions = _questions(predictor, k)
    images = [synthetic.draw_shirt(c, p, s, (96, 128)) for c, p, s in
              zip(list(synthetic.COLOURS)[:products], synthetic.PATTERNS * 4, synthetic.SLEEVES * 4)]
    while len(images) < products:
        images.append(images[len(images) % max(1, len(images))])

    def reference(image):
        for question in questions:
            predictor.generate_per_question(image, question, max_new_tokens=answer_tokens)

    def loom(image):
        predictor.generate(image, questions, max_new_tokens=answer_tokens)

    def loom_static(image):
        previous, predictor.cache_implementation = predictor.cache_implementation, "static"
        try:
            loom(image)
        finally:
            predictor.cache_implementation = previous

    ways = [("reference", reference), ("loom", loom)] + ([("loom_static", loom_static)] if static_cache else [])
    results = {}
    for name, run in ways:
        try:
            run(images[0])  # warm-up (for the static cache: the compilation)
        except Exception as exc:  # noqa: BLE001 - an optional way that fails must not cost the main figures
            if name != "loom_static":
                raise
            print(f"static cache: failed ({type(exc).__name__}: {str(exc)[:300]}); not timed", flush=True)
            continue
        samples = []
        for _ in range(repeats):
            for image in images:
                _sync(predictor)
                start = time.perf_counter()
                run(image)
                _sync(predictor)
                samples.append((time.perf_counter() - start) * 1000)
        results[name] = statistics.median(samples)
    return Timing(results["reference"], results["loom"], results.get("loom_static"))


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
                device_name: str) -> dict[str, float] | None:
    """Physical floor per product, by stage: the image and the T5 encoder compute-bound, each decoder step
    memory-bound (all decoder weights read once per step) unless K rows make it compute-bound."""
    spec = next((v for key, v in GPU_SPECS.items() if key in device_name.upper()), None)
    if spec is None:
        return None
    tflops, gbps = spec
    costs = flop_costs(config, params, answer_tokens)
    nq = config.num_query_tokens
    return {
        "image": costs["image"] / (tflops * 1e12) * 1e3,
        "encoder": max(2 * params["encoder"] * (nq + QUESTION_TOKENS) * k / (tflops * 1e12),
                       2 * params["encoder"] / (gbps * 1e9)) * 1e3,
        "step": max(2 * params["decoder"] / (gbps * 1e9), 2 * params["decoder"] * k / (tflops * 1e12)) * 1e3,
    }


def floor_ms(config: Blip2Config, params: dict[str, int], k: int, answer_tokens: int, device_name: str) -> float | None:
    """Physical floor per product (see `floor_parts`): image + encoder + answer_tokens decoder steps."""
    parts = floor_parts(config, params, k, answer_tokens, device_name)
    return None if parts is None else parts["image"] + parts["encoder"] + answer_tokens * parts["step"]


def stage_times(predictor: Predictor, k: int, answer_tokens: int, repeats: int = 3) -> dict[str, float]:
    """Median ms of each stage of Loom's way for one product: the image encoded once (vision tower, Q-Former,
    projection), the T5 encoder over the K rows, and one decoder step (from generations of 1 and N tokens)."""
    from PIL import Image

    image = Image.new("RGB", (96, 128), (200, 40, 40))
    questions = _questions(predictor, k)
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


def report(label: str, predictor: Predictor, timing: Timing) -> None:
    print(f"{label}: reference {timing.reference_ms:.1f} ms/product, loom {timing.loom_ms:.1f} ms/product, "
          f"speedup {timing.speedup:.2f}x", flush=True)
    if timing.loom_static_ms is not None:
        print(f"{label}: loom with a static cache {timing.loom_static_ms:.1f} ms/product, speedup "
              f"{timing.reference_ms / timing.loom_static_ms:.2f}x", flush=True)


def calibrate_vision_layers(workdir: Path, target: float, answer_tokens: int) -> tuple[int, float]:
    """The number of vision layers for which the image costs `target` times one question, measured here."""
    probe = Predictor.load(build_tiny_artifact(workdir / "probe", vision_layers=2), device="cpu")
    per_layer = measured_ratio(probe, answer_tokens, repeats=5) / 2
    layers = min(48, max(1, round(target / per_layer)))
    return layers, per_layer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Loom artifact folder (default: build tiny models)")
    parser.add_argument("--real-size", action="store_true", help="blip2-flan-t5-xl sizes, random bf16 weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("-k", type=int, default=8, help="attribute questions per product (default 8)")
    parser.add_argument("--answer-tokens", type=int, default=5, help="tokens decoded per answer (default 5)")
    parser.add_argument("--products", type=int, default=3, help="products timed (default 3)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny model only, 2 products (for tests)")
    parser.add_argument("--static-cache", action="store_true",
                        help="also time Loom's way with a static decoder cache (compiled with CUDA graphs on GPUs)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    real_config = real_size_config()
    real_params = component_params(meta_model(real_config))
    real = flop_costs(real_config, real_params, args.answer_tokens)
    print(f"blip2-flan-t5-xl sizes: {real_params['total'] / 1e9:.2f} B parameters; image/question cost ratio "
          f"(FLOPs, {args.answer_tokens}-token answers) {real['ratio']:.2f}", flush=True)

    if args.real_size:
        predictor = real_size_predictor(device)
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        timing = time_products(predictor, args.k, args.answer_tokens, args.products, args.repeats,
                               args.static_cache)
        report(f"real-size on {name}", predictor, timing)
        parts = floor_parts(real_config, real_params, args.k, args.answer_tokens, name)
        print(f"stages of loom's way on {name}:", flush=True)
        print_stages(stage_times(predictor, args.k, args.answer_tokens), parts, args.answer_tokens)
        floor = floor_ms(real_config, real_params, args.k, args.answer_tokens, name)
        if floor:
            print(f"floor on {name}: {floor:.1f} ms/product; loom is {timing.loom_ms / floor:.1f}x the floor")
        print(f"speedup {timing.speedup:.2f}")
        return 0

    if args.model:
        predictor = Predictor.load(args.model, device=device)
        timing = time_products(predictor, args.k, args.answer_tokens, args.products, args.repeats,
                               args.static_cache)
        report(f"{args.model}", predictor, timing)
        print(f"speedup {timing.speedup:.2f}")
        return 0

    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        work = Path(tmp)
        products = 2 if args.quick else args.products
        tiny = Predictor.load(build_tiny_artifact(work / "tiny"), device=device)
        print(f"tiny: image/question cost ratio (measured) {measured_ratio(tiny, args.answer_tokens):.2f}")
        timing = time_products(tiny, args.k, args.answer_tokens, products, args.repeats)
        report("tiny", tiny, timing)
        if not args.quick:
            layers, per_layer = calibrate_vision_layers(work, real["ratio"], args.answer_tokens)
            dominant = Predictor.load(build_tiny_artifact(work / "vision-dominant", vision_layers=layers),
                                      device=device)
            ratio = measured_ratio(dominant, args.answer_tokens)
            print(f"vision-dominant: {layers} vision layers of width 512 on 257 patches; image/question cost ratio "
                  f"(measured) {ratio:.2f} vs {real['ratio']:.2f} for ViT-g + Flan-T5-XL", flush=True)
            timing = time_products(dominant, args.k, args.answer_tokens, products, args.repeats)
            report("vision-dominant", dominant, timing)
        print(f"speedup {timing.speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
