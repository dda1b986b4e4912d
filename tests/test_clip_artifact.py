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

    from inference.server.embedder import ClipEmbedder
    from training import clip_artifact, clip_model

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
    from training import clip_artifact

    with pytest.raises(SystemExit):
        clip_artifact.main(["--base", str(tmp_path), "--out", str(tmp_path / "o"), "--template", "plain"])
    assert "exactly one {}" in capsys.readouterr().err


def test_tiny_clip_text_pooling_depends_on_the_words():
    """The eos pitfall (FACTS.md): with the wrong eos id every text embeds alike. Ours must not."""
    import torch

    from training import clip_model

    tokenizer = clip_model.build_tokenizer(["green red striped shirt"])
    model = clip_model.build_model(tokenizer).eval()
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id != 2
    batch = tokenizer(["green shirt", "red striped shirt"], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**batch).pooler_output
    assert not torch.allclose(features[0], features[1], atol=1e-4)
