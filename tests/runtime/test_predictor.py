"""The predictor: encode-once batched answers equal the plain per-question `generate()`, token for token;
confidences are the mean probability of the generated tokens; the image-token check catches a processor
that would silently drop the image."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from runtime.decoding import LENGTH_STEP, Decoder, row_bucket
from runtime.predictor import ImageTokenError, Predictor
from training import synthetic


@pytest.fixture(scope="module")
def predictor(untrained_artifact) -> Predictor:
    """The untrained tiny artifact with large random weights, so that answers differ by image and question
    (an untrained model repeats one token whatever it sees, which would make equivalence trivially true)."""
    predictor = Predictor.load(untrained_artifact)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in predictor.model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                parameter.copy_(noise * 0.5)
            else:
                parameter.copy_(noise * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return predictor


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    # Noise images differ more than drawn shirts to a random model, so its answers depend on the image.
    generator = torch.Generator().manual_seed(1)
    noise = [Image.fromarray(torch.randint(0, 256, (64, 48, 3), generator=generator, dtype=torch.uint8).numpy())
             for _ in range(2)]
    return noise + [synthetic.draw_shirt("Red", synthetic.PATTERNS[0], synthetic.SLEEVES[0], (48, 64))]


def questions(predictor: Predictor) -> list[str]:
    # The 8 attribute questions plus one of a different length, so that the batch really is padded.
    return [predictor.schema.question(n) for n in predictor.schema.names] + ["Describe the shirt in this picture."]


def reference_ids(predictor: Predictor, image, question: str, **kwargs) -> list[int]:
    """The plain transformers path: model.generate(**processor(images=..., text=question))."""
    inputs = predictor.processor(images=image, text=question, return_tensors="pt")
    sequence = predictor.model.generate(**inputs, do_sample=False, **kwargs)[0, 1:]
    return [t for t in sequence.tolist() if t != predictor.model.config.text_config.pad_token_id]


def test_batched_answers_equal_per_question_generate(predictor, images):
    qs = questions(predictor)
    per_image = []
    for image in images:
        batched = predictor.generate(image, qs, max_new_tokens=8)
        assert len(batched) == len(qs)
        for question, answer in zip(qs, batched):
            assert answer.token_ids == reference_ids(predictor, image, question, max_new_tokens=8), question
        per_image.append([tuple(a.token_ids) for a in batched])
    for question, answer in zip(qs, batched):  # the predictor's own reference path agrees too
        single = predictor.generate_per_question(images[-1], question, max_new_tokens=8)
        assert single.token_ids == answer.token_ids
        assert single.confidence == pytest.approx(answer.confidence, abs=1e-5)
    # The comparison means something only if the answers depend on the image and on the question.
    assert len({ids for answers in per_image for ids in answers}) >= 3 * len(qs) // 2
    assert all(len(set(answers)) >= len(qs) // 2 for answers in per_image)


def test_beam_search_answers_equal_per_question_generate(predictor, images):
    qs = questions(predictor)[:4]
    batched = predictor.generate(images[1], qs, max_new_tokens=6, num_beams=3)
    for question, answer in zip(qs, batched):
        assert answer.token_ids == reference_ids(predictor, images[1], question, max_new_tokens=6, num_beams=3)


def test_compiled_decoding_pads_to_its_shapes_and_gives_the_same_answers(predictor, images, monkeypatch):
    # On CPU transformers does not compile (its auto-compile is for accelerators): this runs the compiled
    # mode's static caches, initialised before use, and its row and length padding, against eager decoding.
    lm = predictor.model.language_model
    generate, seen = lm.generate, []

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        seen.append((type(out.past_key_values.self_attention_cache).__name__, out.sequences.shape[0],
                     kwargs["inputs_embeds"].shape[1] % LENGTH_STEP))
        return out

    monkeypatch.setattr(lm, "generate", recording_generate)
    qs = questions(predictor)
    for image in images[:2]:
        eager = predictor.generate(image, qs, max_new_tokens=8)
        monkeypatch.setattr(predictor.decoder, "mode", "compiled")
        compiled = predictor.generate(image, qs, max_new_tokens=8)
        monkeypatch.setattr(predictor.decoder, "mode", "eager")
        assert [a.token_ids for a in compiled] == [a.token_ids for a in eager]
        assert [a.confidence for a in compiled] == pytest.approx([a.confidence for a in eager], abs=1e-5)
        assert len({tuple(a.token_ids) for a in eager}) >= len(qs) // 2  # answers that differ by question
    # 9 rows padded to 12, the encoder length to a multiple of 16; eager runs unpadded with a dynamic cache.
    assert [(kind, rows, rem == 0) for kind, rows, rem in seen] == [("DynamicCache", 9, False),
                                                                    ("StaticCache", 12, True)] * 2
    assert row_bucket(1) == 8 and row_bucket(9) == 12 and row_bucket(13) == 16 and row_bucket(144) == 192


def test_a_failing_compilation_falls_back_to_eager_answers(predictor, images, monkeypatch):
    # The compile really runs (torch.compile, forced on CPU) with a backend that fails, as inductor or
    # CUDA graphs may on a GPU: the call is answered eagerly, the same answers, and the mode stays eager.
    from transformers import CompileConfig

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no kernel for this shape")

    config = CompileConfig(backend=broken_backend, mode=None, fullgraph=False, dynamic=False)
    config._compile_all_devices = True
    qs = questions(predictor)
    eager = predictor.generate(images[0], qs, max_new_tokens=8)
    monkeypatch.setattr(predictor, "decoder", Decoder(predictor.model.language_model, "compiled", config))
    assert predictor.decoding == "compiled"
    answers = predictor.generate(images[0], qs, max_new_tokens=8)
    assert [a.token_ids for a in answers] == [a.token_ids for a in eager]
    assert predictor.decoding == "eager" and "no kernel for this shape" in predictor.decoder.failure
    assert [a.token_ids for a in predictor.generate(images[0], qs, max_new_tokens=8)] == [a.token_ids for a in eager]


def test_warm_up_compiles_every_padded_shape_and_turns_off_on_answers_that_differ(untrained_artifact, monkeypatch):
    predictor = Predictor.load(untrained_artifact, decoding="compiled")  # on CPU: the static, padded path
    shapes = []
    compiled = predictor.decoder._compiled

    def recording(embeds, mask, max_new_tokens):
        shapes.append(embeds.shape[0])
        return compiled(embeds, mask, max_new_tokens)

    monkeypatch.setattr(predictor.decoder, "_compiled", recording)
    predictor.warm_up(max_products=2)  # 8 questions a product: up to 16 rows
    assert predictor.decoding == "compiled" and predictor.decoder.failure is None
    assert shapes == [8, 8, 12, 16, 8]  # the check against eager, then rows 8, 12, 16, then the last warm-up call

    def wrong(embeds, mask, max_new_tokens):
        sequences, logprobs = compiled(embeds, mask, max_new_tokens)
        return sequences + 1, logprobs  # other tokens: what an overwritten buffer would give

    monkeypatch.setattr(predictor.decoder, "_compiled", wrong)
    predictor.warm_up(max_products=1)
    assert predictor.decoding == "eager" and "differ from eager" in predictor.decoder.failure


def test_confidence_is_the_mean_probability_of_the_generated_tokens(predictor, images):
    question = questions(predictor)[2]
    answer = predictor.generate(images[0], [question], max_new_tokens=6)[0]
    inputs = predictor.processor(images=images[0], text=question, return_tensors="pt")
    start = predictor.model.config.text_config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start] + answer.token_ids[:-1]])
    with torch.no_grad():
        logits = predictor.model(**inputs, decoder_input_ids=decoder_input_ids).logits[0]
    probs = logits.softmax(-1)[torch.arange(len(answer.token_ids)), torch.tensor(answer.token_ids)]
    assert 0.0 <= answer.confidence <= 1.0
    assert answer.confidence == pytest.approx(probs.mean().item(), abs=1e-5)


def test_answer_attributes_asks_the_manifest_questions(predictor, images):
    result = predictor.answer_attributes(images[0], ["Pattern", "baseColour"], max_new_tokens=4)
    assert list(result.confidence) == ["Pattern", "baseColour"]
    assert set(result.attributes) | set(result.raw) == {"Pattern", "baseColour"}
    assert list(predictor.answer_attributes(images[0], max_new_tokens=2).confidence) == predictor.schema.names
    with pytest.raises(KeyError):
        predictor.answer_attributes(images[0], ["Smell"])


def test_rows_without_the_image_tokens_are_refused(predictor, images):
    ids = predictor.processor(images=images[0], text=["a", "b"], return_tensors="pt")["input_ids"]
    predictor.check_image_tokens(ids)
    broken = ids.clone()
    broken[1, 0] = predictor.processor.tokenizer.pad_token_id
    with pytest.raises(ImageTokenError, match=r"rows \[1\]"):
        predictor.check_image_tokens(broken)


def test_a_processor_without_num_query_tokens_is_refused(untrained_artifact):
    loaded = Predictor.load(untrained_artifact)
    loaded.processor.num_query_tokens = None  # the silent failure: no image tokens would be inserted
    with pytest.raises(ImageTokenError, match="image would be ignored"):
        Predictor(loaded.model, loaded.processor, loaded.schema)


def test_loads_offline_in_fp32_on_cpu(untrained_artifact):
    loaded = Predictor.load(untrained_artifact)
    assert loaded.model.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.model_info == {"name": "untrained-tiny", "base_model": "loom/tiny-blip2-flan-t5",
                                 "device": "cpu", "dtype": "float32"}
    assert not loaded.model.training


def test_several_images_in_one_batch_answer_as_each_alone(predictor, images):
    # Batch Transform's MultiRecord batches: different question lists per image, one without questions.
    qs = questions(predictor)
    requests = [(images[0], qs), (images[1], qs[:3]), (images[2], []), (images[0], qs[5:])]
    together = predictor.generate_many(requests, max_new_tokens=8)
    assert [len(a) for a in together] == [len(q) for _, q in requests]
    for (image, asked), answers in zip(requests, together):
        alone = predictor.generate(image, asked, max_new_tokens=8)
        assert [a.token_ids for a in answers] == [a.token_ids for a in alone]
        assert [a.confidence for a in answers] == pytest.approx([a.confidence for a in alone], abs=1e-5)
    many = predictor.answer_attributes_many([(images[1], ["Pattern", "Fit"]), (images[2], None)])
    assert many[0].to_dict() == predictor.answer_attributes(images[1], ["Pattern", "Fit"]).to_dict()
    assert set(many[1].confidence) == set(predictor.schema.names)
    with pytest.raises(KeyError, match="Heel"):
        predictor.answer_attributes_many([(images[0], ["Heel"])])
