"""Zero-shot tagging and interrogation on embeddings, with a bag-of-words embedder whose geometry is known:
a text is the normalised sum of its words' random vectors, a picture the sum of its true attributes' words."""

from __future__ import annotations

import math

import numpy as np
import pytest

from word_vectors import WordSpace

from runtime import zero_shot as zs

SPACE = WordSpace(1024, seed=0)
embed_texts = SPACE.embed


def picture(*words: str, noise: float = 0.1) -> np.ndarray:
    return SPACE.picture(*words, noise=noise)


def test_ensembled_label_embeddings_are_unit_vectors_one_per_label():
    labels = ["Red", "Green", "Blue"]
    emb = zs.label_embeddings(embed_texts, labels, noun="shirt")
    assert emb.shape == (3, 1024) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_probabilities_pick_the_right_prompt_and_sum_to_one():
    prompts = ["a photo of a cat", "a photo of a dog"]
    p = zs.probabilities(picture("dog"), embed_texts(prompts))
    assert p.argmax() == 1 and abs(p.sum() - 1) < 1e-9


def test_tags_state_what_passes_the_calibrated_threshold_and_withhold_the_rest():
    colours, patterns = ["Red", "Green", "Blue"], ["Solid", "Striped", "Checked"]
    candidates = {"baseColour": (colours, zs.label_embeddings(embed_texts, colours, noun="shirt")),
                  "Pattern": (patterns, zs.label_embeddings(embed_texts, patterns, noun="shirt")),
                  "Fabric": (["Cotton", "Linen"], zs.label_embeddings(embed_texts, ["Cotton", "Linen"], noun="shirt")),
                  "Neck": (["Round", "V"], zs.label_embeddings(embed_texts, ["Round", "V"], noun="shirt"))}
    tags, withheld = zs.tag(picture("green", "striped", "shirt"), candidates,
                            {"baseColour": 0.5, "Pattern": 1.01, "Fabric": None, "Neck": math.inf})
    assert tags["baseColour"]["value"] == "Green" and tags["baseColour"]["probability"] >= 0.5
    assert abs(sum(tags["baseColour"]["probabilities"].values()) - 1) < 1e-3
    assert withheld["Pattern"]["reason"] == "below_threshold" and withheld["Pattern"]["value"] == "Striped"
    assert withheld["Fabric"]["reason"] == "not_calibrated"
    # inf: calibrated, but the validation photos showed the target precision at no threshold.
    assert withheld["Neck"]["reason"] == "not_enough_evidence"


@pytest.fixture
def tables():
    def table(name, phrases):
        return zs.PhraseTable(name, phrases, embed_texts(phrases))
    return [table("catalog", ["red", "green", "striped", "checked", "long sleeves", "short sleeves"]),
            table("lighting", ["studio lighting", "natural light"]),
            table("medium", ["product photo", "oil painting", "sketch"])]


def test_fast_and_classic_rank_the_tables_against_the_picture(tables):
    image = picture("green", "checked", "studio", "lighting", "product", "photo", noise=0.0)
    fast = [t["text"] for t in zs.interrogate(image, tables, mode="fast", max_terms=4)["terms"]]
    # Two-word phrases whose words are both in the picture score highest, then single true words.
    assert set(fast[:2]) == {"studio lighting", "product photo"} and set(fast[2:]) == {"green", "checked"}
    classic = zs.interrogate(image, tables, mode="classic", caption="a shirt", max_terms=3)
    assert classic["prompt"].startswith("a shirt, ") and len(classic["terms"]) == 3
    assert [t["text"] for t in classic["terms"]][1:] == ["studio lighting", "product photo"]


def test_best_adds_only_terms_that_bring_the_prompt_closer_to_the_picture(tables):
    image = picture("green", "checked", "long", "sleeves")
    best = zs.interrogate(image, tables, mode="best", max_terms=6, embed_texts=embed_texts)
    texts = [t["text"] for t in best["terms"]]
    assert {"green", "checked", "long sleeves"} <= set(texts)
    assert "oil painting" not in texts
    fast = zs.interrogate(image, tables, mode="fast", max_terms=len(texts), embed_texts=embed_texts)
    assert best["similarity"] >= fast["similarity"]


def test_a_prompt_names_at_most_one_value_of_each_catalog_attribute():
    """One catalog attribute's values exclude each other (a shirt has one colour): `fast` and `best` take the
    best of such a table once; style tables may give several phrases."""
    def table(name, phrases):
        return zs.PhraseTable(name, phrases, embed_texts(phrases))

    colours = table("catalog-colour", ["red", "green", "red green"])
    styles = table("lighting", ["studio lighting", "natural light", "studio light"])
    image = picture("red", "green", "studio", "lighting", "light", noise=0.0)  # both colours score high
    for mode in ("fast", "best"):
        texts = [t["text"] for t in zs.interrogate(image, [colours, styles], mode=mode, max_terms=6,
                                                   embed_texts=embed_texts)["terms"]]
        assert sum(t in colours.phrases for t in texts) == 1, (mode, texts)
    fast = [t["text"] for t in zs.interrogate(image, [colours, styles], mode="fast", max_terms=6)["terms"]]
    assert sum(t in styles.phrases for t in fast) >= 2  # not exclusive
    # The same phrases in a table that is not one attribute's values: several colours may be named.
    loose = table("colours", colours.phrases)
    assert sum(t["text"] in loose.phrases
               for t in zs.interrogate(image, [loose, styles], mode="fast", max_terms=6)["terms"]) >= 2


def test_bad_arguments_are_refused(tables):
    with pytest.raises(ValueError, match="unknown mode"):
        zs.interrogate(picture("red"), tables, mode="slow")
    with pytest.raises(ValueError, match="needs a text encoder"):
        zs.interrogate(picture("red"), tables, mode="best")
    with pytest.raises(ValueError, match="max_terms"):
        zs.interrogate(picture("red"), tables, max_terms=0)
