"""The zero-shot request rules of a CLIP artifact (runtime/tagging.py, with the tags and interrogate
field rules of loom/clip_request.py, which the API Lambda shares) on a bag-of-words embedder
whose geometry is known (a text is the normalised sum of its words' random vectors, a photo the sum of its
true values' words): which candidates and thresholds a tags request gets, what is stated and withheld, and
every refusal. The real server and model: tests/server/test_serve_clip_zero_shot.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from word_vectors import WordSpace

from runtime import zero_shot as zs
from runtime.tagging import ZeroShot, parse_prompts
from loom.clip_request import parse_interrogate, parse_tags
from loom.calibration import fit_calibration
from loom.errors import StatusError
from loom.schema import AttributeSchema

SPACE = WordSpace(256, seed=1)


class BagOfWords:
    """Stands in for ClipEmbedder: the three things ZeroShot uses."""

    dimension = 256
    logit_scale = 10.0  # a small temperature keeps mixed pictures uncertain

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed_texts(self, texts, templated=True):
        assert templated is False, "zero-shot texts are embedded verbatim (templates are applied by the caller)"
        self.calls.append(list(texts))
        return SPACE.embed(texts)


def photo(*words: str) -> np.ndarray:
    return SPACE.picture(*words, noise=0.05)[None]


def schema() -> AttributeSchema:
    s = AttributeSchema.from_names(["baseColour", "Pattern", "Fabric"])
    for name, values in {"baseColour": ["Red", "Green", "Blue"], "Pattern": ["Solid", "Striped"],
                         "Fabric": ["Cotton", "Linen"]}.items():
        for value in values:
            s.count(name, value, 10)
    return s


def zero_shot(calibrated: dict[str, float | None] | None = None) -> ZeroShot:
    calibration = None
    if calibrated is not None:
        # Records that make each attribute's threshold what the test asks (None: 0.95 shown nowhere): 80 right
        # answers at the threshold show 0.95 with 95 % confidence (loom/calibration.py), 10 wrong below do not.
        records = []
        for name, threshold in calibrated.items():
            if threshold is None:
                records += [(name, i % 2 == 0, 0.9) for i in range(100)]
            else:
                records += [(name, True, threshold)] * 80 + [(name, False, threshold / 2)] * 10
        calibration = fit_calibration(records)
    tables = [zs.PhraseTable("catalog-colour", ["red", "green"], BagOfWords().embed_texts(["red", "green"], False))]
    return ZeroShot(BagOfWords(), schema(), zs.DEFAULT_TEMPLATES, "shirt", calibration, tables)


def test_default_candidates_are_the_schema_values_and_calibrated_thresholds_decide():
    service = zero_shot({"baseColour": 0.5, "Pattern": 0.9, "Fabric": None})
    plan = service.plan(*parse_tags({"task": "tags", "image": "x"}))
    assert list(plan.candidates) == ["baseColour", "Pattern", "Fabric"]
    assert plan.candidates["Pattern"][0] == ["Solid", "Striped"]
    assert plan.thresholds == {"baseColour": 0.5, "Pattern": 0.9, "Fabric": math.inf}
    answer = service.tag(photo("green", "striped", "solid", "shirt"), plan)[0]  # a picture both solid and striped
    assert answer["tags"]["baseColour"]["value"] == "Green" and answer["tags"]["baseColour"]["probability"] >= 0.5
    assert answer["withheld"]["Pattern"]["reason"] == "below_threshold"
    assert answer["withheld"]["Pattern"]["probability"] < 0.9
    # Calibrated, but the validation photos show the target precision at no threshold: withheld as the
    # attribute model withholds such an attribute (loom/abstention.py), not as if calibration had never run.
    assert answer["withheld"]["Fabric"]["reason"] == "not_enough_evidence"
    # An attribute the calibration never saw is `not_calibrated`.
    partial = zero_shot({"baseColour": 0.5})
    answer = partial.tag(photo("green", "striped"), partial.plan(*parse_tags({"task": "tags", "image": "x"})))[0]
    assert answer["withheld"]["Pattern"]["reason"] == "not_calibrated"


def test_labels_are_ensembled_through_the_templates_and_cached():
    service = zero_shot()
    service.plan(["Pattern"], None, None)
    first = service.embedder.calls[-1]
    assert first == ["a photo of a Solid shirt", "a Solid shirt", "Solid", "a photo of a Striped shirt",
                     "a Striped shirt", "Striped"]
    calls = len(service.embedder.calls)
    service.plan(["Pattern"], None, None)
    assert len(service.embedder.calls) == calls  # the schema's label embeddings are computed once


def test_an_uncalibrated_artifact_withholds_every_tag_as_not_calibrated():
    service = zero_shot(None)
    answer = service.tag(photo("red", "solid"), service.plan(None, None, None))[0]
    assert answer["tags"] == {} and {w["reason"] for w in answer["withheld"].values()} == {"not_calibrated"}
    assert answer["withheld"]["baseColour"]["value"] == "Red"


def test_caller_labels_have_no_calibrated_threshold_unless_min_probability_is_given():
    service = zero_shot({"baseColour": 0.5, "Pattern": 0.5, "Fabric": 0.5})
    image = photo("green", "striped")
    labels = {"baseColour": ["Green", "Red"], "Occasion": ["party", "office"]}
    plan = service.plan(*parse_tags({"task": "tags", "image": "x", "labels": labels}))
    assert list(plan.candidates) == ["baseColour", "Occasion"]  # the keys of labels, when attributes is absent
    answer = service.tag(image, plan)[0]
    assert answer["tags"] == {} and answer["withheld"]["baseColour"]["reason"] == "not_calibrated"
    stated = service.tag(image, service.plan(*parse_tags(
        {"task": "tags", "image": "x", "labels": labels, "min_probability": 0.6})))[0]
    assert stated["tags"]["baseColour"]["value"] == "Green"
    # The schema's own values (in any order) keep the calibrated threshold; other schema attributes too.
    same = service.plan(["baseColour", "Pattern"], {"baseColour": ["Blue", "Green", "Red"]}, None)
    assert same.thresholds == {"baseColour": 0.5, "Pattern": 0.5}


@pytest.mark.parametrize("request_body, needle", [
    ({"attributes": ["Sleeve"]}, "unknown attributes ['Sleeve']"),
    ({"attributes": []}, "'attributes'"),
    ({"attributes": ["Pattern", "Pattern"]}, "twice"),
    ({"attributes": "Pattern"}, "'attributes'"),
    ({"labels": {}}, "'labels'"),
    ({"labels": {"Pattern": []}}, "labels.Pattern must be a non-empty list"),
    ({"labels": {"Pattern": ["Striped", ""]}}, "labels.Pattern[]"),
    ({"labels": {"Pattern": ["Striped", "Striped"]}}, "twice"),
    ({"labels": {"Pattern": "Striped"}}, "labels.Pattern"),
    ({"labels": {"A": [f"v{i}" for i in range(150)], "B": [f"w{i}" for i in range(51)]}}, "201 candidate values"),
    ({"attributes": ["Pattern"], "labels": {"Fabric": ["Silk"]}}, "does not ask for"),
    ({"min_probability": 0.5}, "caller-given 'labels'"),
    ({"labels": {"Pattern": ["Striped"]}, "min_probability": 0}, "'min_probability'"),
    ({"labels": {"Pattern": ["Striped"]}, "min_probability": 1.5}, "'min_probability'"),
    ({"labels": {"Pattern": ["Striped"]}, "min_probability": True}, "'min_probability'"),
    ({"text": "x"}, "unexpected fields ['text']"),
])
def test_bad_tags_requests_are_400_with_the_reason(request_body, needle):
    service = zero_shot()
    with pytest.raises(StatusError) as caught:
        service.plan(*parse_tags({"task": "tags", "image": "x", **request_body}))
    assert caught.value.status == 400 and needle in caught.value.message


def test_exactly_200_labels_are_accepted():
    labels = {"A": [f"v{i}" for i in range(150)], "B": [f"w{i}" for i in range(50)]}
    assert len(zero_shot().plan(*parse_tags({"task": "tags", "image": "x", "labels": labels})).candidates) == 2


def test_without_a_schema_tags_need_labels():
    service = ZeroShot(BagOfWords(), None, zs.DEFAULT_TEMPLATES, "", None, None)
    with pytest.raises(StatusError, match="no attribute schema"):
        service.plan(None, None, None)
    plan = service.plan(None, {"Occasion": ["party", "office"]}, None)
    assert service.tag(photo("party"), plan)[0]["withheld"]["Occasion"]["value"] == "party"


def test_prompt_form_probabilities_are_verbatim_softmax_rows():
    service = zero_shot()
    prompts = parse_prompts({"image": "x", "prompt": ["a photo of a cat", "a photo of a dog"]})
    rows = service.prompt_probabilities(photo("dog"), prompts)
    assert service.embedder.calls[-1] == ["a photo of a cat", "a photo of a dog"]  # no template added
    assert len(rows) == 1 and len(rows[0]) == 2 and rows[0][1] > rows[0][0] and abs(sum(rows[0]) - 1) < 1e-5


@pytest.mark.parametrize("request_body, needle", [
    ({"image": "x", "prompt": []}, "'prompt' must be a list"),
    ({"image": "x", "prompt": "a cat"}, "'prompt' must be a list"),
    ({"image": "x", "prompt": ["a cat", " "]}, "prompt[]"),
    ({"image": "x", "prompt": ["p"] * 201}, "201 prompts"),
    ({"image": "x", "prompt": ["a cat"], "k": 3}, "unexpected fields ['k']"),
])
def test_bad_prompt_requests_are_400(request_body, needle):
    with pytest.raises(StatusError, match=None) as caught:
        parse_prompts(request_body)
    assert needle in caught.value.message


def test_interrogate_defaults_and_refusals():
    assert parse_interrogate({"task": "interrogate", "image": "x"}) == ("fast", 6, None)
    assert parse_interrogate({"task": "interrogate", "image": "x", "mode": "best", "max_terms": 32,
                              "caption": " a shirt "}) == ("best", 32, "a shirt")
    for body, needle in [({"mode": "slow"}, "'mode'"), ({"max_terms": 0}, "'max_terms'"),
                         ({"max_terms": 33}, "'max_terms'"), ({"max_terms": 2.0}, "'max_terms'"),
                         ({"max_terms": True}, "'max_terms'"), ({"caption": ""}, "'caption'"),
                         ({"caption": 3}, "'caption'"), ({"labels": {}}, "unexpected fields")]:
        with pytest.raises(StatusError) as caught:
            parse_interrogate({"task": "interrogate", "image": "x", **body})
        assert caught.value.status == 400 and needle in caught.value.message
    result = zero_shot().interrogate(photo("green")[0], "fast", 1, "a shirt")
    assert result["prompt"] == "a shirt, green" and result["terms"][0]["text"] == "green"
    with pytest.raises(StatusError, match="no phrase tables"):
        ZeroShot(BagOfWords(), schema(), zs.DEFAULT_TEMPLATES, "shirt", None, None).interrogate(
            photo("green")[0], "fast", 1, None)
