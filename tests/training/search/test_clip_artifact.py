"""The CLIP artifact kind: its manifest beside the BLIP-2 one, and `loom clip-artifact` on a real-format
checkpoint folder (a small CLIPModel saved with save_pretrained stands in for openai/clip-vit-base-patch32)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loom import artifact
from loom.schema import AttributeSchema, SchemaError


def test_clip_manifest_round_trip_and_kind(tmp_path):
    artifact.write_clip_manifest(tmp_path, base_model="openai/clip-vit-base-patch32", dimension=512,
                                 prompt_templates=["a photo of a {}"])
    manifest = artifact.read_clip_manifest(tmp_path)
    assert manifest["kind"] == "clip" and manifest["embedding_dimension"] == 512 and manifest["normalized"] is True
    assert artifact.manifest_kind(tmp_path) == "clip"
    with pytest.raises(SchemaError, match="not an attribute model"):
        artifact.read_manifest(tmp_path)


def test_attribute_manifest_without_kind_is_still_the_attribute_model(tmp_path):
    schema = AttributeSchema.from_names(["Pattern"])
    artifact.write_manifest(tmp_path, schema, base_model="x")
    assert "kind" not in json.loads(artifact.ArtifactPaths.of(tmp_path).manifest.read_text())
    assert artifact.manifest_kind(tmp_path) == "attributes"
    assert artifact.read_manifest(tmp_path)["schema"].names == ["Pattern"]
    with pytest.raises(SchemaError, match="not 'clip'"):
        artifact.read_clip_manifest(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"embedding_dimension": 0}, "positive integer"),
    ({"embedding_dimension": True}, "positive integer"),
    ({"normalized": "yes"}, "true or false"),
    ({"prompt_templates": ["no placeholder"]}, "one {}"),
    ({"prompt_templates": []}, "non-empty"),
    ({"base_model": ""}, "base_model"),
    ({"kind": "other"}, "kind"),
])
def test_bad_clip_manifests_are_refused(tmp_path, change, message):
    artifact.write_clip_manifest(tmp_path, base_model="b", dimension=8, prompt_templates=["{}"])
    path = artifact.ArtifactPaths.of(tmp_path).manifest
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(SchemaError, match=message):
        artifact.read_clip_manifest(tmp_path)


def test_clip_artifact_command_turns_a_checkpoint_folder_into_an_artifact(tmp_path):
    from transformers import CLIPModel

    from runtime.embedder import ClipEmbedder
    from training.search import clip_artifact, clip_model

    tokenizer = clip_model.build_tokenizer(["a photo of a green striped shirt"])
    checkpoint = tmp_path / "checkpoint"  # what a downloaded real checkpoint folder holds
    clip_model.build_model(tokenizer, projection=24).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    clip_model.build_image_processor(64).save_pretrained(checkpoint)
    assert not artifact.is_artifact(checkpoint)

    out = tmp_path / "artifact"
    assert clip_artifact.main(["--base", str(checkpoint), "--out", str(out), "--template", "a picture of {}"]) == 0
    manifest = artifact.read_clip_manifest(out)
    assert manifest["embedding_dimension"] == 24 and manifest["prompt_templates"] == ["a picture of {}"]
    assert manifest["base_model"] == str(checkpoint)
    embedder = ClipEmbedder.load(out, device="cpu")
    vectors = embedder.embed_texts(["green shirt", "red shirt"])
    assert vectors.shape == (2, 24) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # The artifact's weights are the checkpoint's: same text embedding from both folders.
    direct = CLIPModel.from_pretrained(checkpoint).eval()
    batch = tokenizer(["a picture of green shirt"], return_tensors="pt")
    raw = direct.get_text_features(**batch).pooler_output.detach().numpy()[0]
    assert np.allclose(vectors[0], raw / np.linalg.norm(raw), atol=1e-5)


def test_clip_artifact_refuses_a_template_without_placeholder(tmp_path, capsys):
    from training.search import clip_artifact

    with pytest.raises(SystemExit):
        clip_artifact.main(["--base", str(tmp_path), "--out", str(tmp_path / "o"), "--template", "plain"])
    assert "exactly one {}" in capsys.readouterr().err


def test_tiny_clip_text_pooling_depends_on_the_words():
    """The eos pitfall (FACTS.md): with the wrong eos id every text embeds alike. Ours must not."""
    import torch

    from training.search import clip_model

    tokenizer = clip_model.build_tokenizer(["green red striped shirt"])
    model = clip_model.build_model(tokenizer).eval()
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id != 2
    batch = tokenizer(["green shirt", "red striped shirt"], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**batch).pooler_output
    assert not torch.allclose(features[0], features[1], atol=1e-4)


# -- the zero-shot part: schema, tag calibration and phrase tables --------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real-format CLIP checkpoint folder (small, untrained) and a small synthetic catalog."""
    from training.search import clip_model
    from training.synthetic import write_catalog

    root = tmp_path_factory.mktemp("clip_checkpoint")
    write_catalog(root / "catalog", products=60, seed=3)
    tokenizer = clip_model.build_tokenizer(["a photo of a green striped shirt"])
    clip_model.build_model(tokenizer, projection=24).save_pretrained(root / "checkpoint")
    tokenizer.save_pretrained(root / "checkpoint")
    clip_model.build_image_processor(64).save_pretrained(root / "checkpoint")
    return root


def photo(catalog, index=0):
    from PIL import Image

    return Image.open(sorted((catalog / "images").glob("*.jpg"))[index]).convert("RGB")


def test_with_a_catalog_the_schema_is_prepares_and_tags_are_calibrated_on_its_validation_photos(checkpoint, tmp_path):
    from runtime.clip_service import ClipService
    from training.search import clip_artifact
    from training.prepare import prepare_products

    out = tmp_path / "artifact"
    assert clip_artifact.main(["--base", str(checkpoint / "checkpoint"), "--out", str(out),
                               "--catalog", str(checkpoint / "catalog")]) == 0
    manifest = artifact.read_clip_manifest(out)
    prepared = prepare_products(checkpoint / "catalog")
    assert manifest["schema"] == prepared.schema.to_dict()  # what `loom prepare` writes as attribute_schema.json
    calibration = manifest["calibration"]
    # The attribute model's rule (loom/calibration.py): precision 0.95 shown with 95 % confidence.
    assert calibration["target_precision"] == 0.95 and calibration["confidence"] == 0.95
    assert calibration["min_stated"] == 59
    records = artifact.read_calibration_records(out)
    assert len(records) == sum(len(p.attributes) for p in prepared.val) > 0
    assert {name for name, _, _ in records} == set(calibration["attributes"])
    service = ClipService.load(out, device="cpu")
    answer = service.tag_images([photo(checkpoint / "catalog")])[0]
    for name, withheld in answer["withheld"].items():
        # calibrated with a threshold: below_threshold; calibrated without one: not_enough_evidence; never:
        # not_calibrated
        entry = calibration["attributes"].get(name)
        assert withheld["reason"] == ("not_calibrated" if entry is None else "below_threshold"
                                      if entry["threshold"] is not None else "not_enough_evidence")
    assert all(tag["probability"] >= calibration["attributes"][name]["threshold"]
               for name, tag in answer["tags"].items())
    tables = artifact.read_phrase_tables(out)
    assert all(name.startswith("catalog-") for name in list(tables)[:len(tables) - 4])
    assert list(tables)[-4:] == ["lighting", "mediums", "movements", "photography"]


def test_with_only_a_schema_every_tag_is_withheld_as_not_calibrated(checkpoint, tmp_path):
    import numpy as np

    from runtime.clip_service import ClipService
    from runtime.embedder import ClipEmbedder
    from training.search import clip_artifact
    from training.prepare import prepare

    prepare(checkpoint / "catalog", tmp_path / "prepared")
    (tmp_path / "phrases").mkdir()
    (tmp_path / "phrases" / "lighting.txt").write_text("neon glow\ncandle light\n")
    (tmp_path / "phrases" / "brands.txt").write_text("house brand\n")
    out = tmp_path / "artifact"
    assert clip_artifact.main(["--base", str(checkpoint / "checkpoint"), "--out", str(out),
                               "--schema", str(tmp_path / "prepared" / "attribute_schema.json"),
                               "--phrases", str(tmp_path / "phrases")]) == 0
    manifest = artifact.read_clip_manifest(out)
    assert "calibration" not in manifest and manifest["zero_shot"]["noun"] == "shirt"
    answer = ClipService.load(out, device="cpu").tag_images([photo(checkpoint / "catalog")])[0]
    assert answer["tags"] == {} and {w["reason"] for w in answer["withheld"].values()} == {"not_calibrated"}
    tables = artifact.read_phrase_tables(out)
    assert tables["lighting"] == ["neon glow", "candle light"] and list(tables)[-1] == "brands"
    # The shipped embeddings are the text encoder's, phrase by phrase, stored in float16.
    phrases = [p for table in tables.values() for p in table]
    stored = np.load(artifact.PhrasePaths.of(out).embeddings)
    fresh = ClipEmbedder.load(out, device="cpu").embed_texts(phrases, templated=False)
    assert stored.dtype == np.float16 and np.allclose(stored.astype(np.float32), fresh, atol=2e-3)


def test_without_schema_tags_need_labels_and_interrogation_uses_the_style_tables(checkpoint, tmp_path):
    from runtime.clip_service import ClipService
    from loom.errors import StatusError
    from training.search import clip_artifact

    out = tmp_path / "artifact"
    assert clip_artifact.main(["--base", str(checkpoint / "checkpoint"), "--out", str(out)]) == 0
    service = ClipService.load(out, device="cpu")
    with pytest.raises(StatusError, match="no attribute schema"):
        service.tag_images([photo(checkpoint / "catalog")])
    answer = service.tag_images([photo(checkpoint / "catalog")], labels={"Colour": ["red", "green"]},
                                min_probability=0.01)[0]
    assert set(answer["tags"]) == {"Colour"}
    assert list(artifact.read_phrase_tables(out)) == ["lighting", "mediums", "movements", "photography"]
    vector = service.embedder.embed_images([photo(checkpoint / "catalog")])[0]
    assert len(service.zero_shot.interrogate(vector, "classic", 4, None)["terms"]) == 4


@pytest.mark.parametrize("flags, message", [
    (["--phrases", "missing-folder"], "not a folder"),
    (["--schema", "missing.json"], "no attribute schema"),
    (["--catalog", "missing-catalog"], "missing-catalog"),
    (["--calibration-products", "0"], "at least 1"),
])
def test_bad_zero_shot_flags_are_refused_before_the_checkpoint_is_read(tmp_path, capsys, flags, message):
    from training.search import clip_artifact

    with pytest.raises(SystemExit):
        clip_artifact.main(["--base", str(tmp_path / "no-checkpoint"), "--out", str(tmp_path / "o"), *flags])
    assert message in capsys.readouterr().err
