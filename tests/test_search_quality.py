"""The tiny CLIP and its index on a synthetic catalog: the issue's search targets, measured, and the
`loom index` commands (build through the fixture, add and remove here)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from inference.server.embedder import ClipEmbedder
from inference.server.search_index import SearchIndex
from loom import cli
from loom.artifact import read_clip_manifest
from training.search_eval import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder(tiny_clip):
    return ClipEmbedder.load(tiny_clip.clip_dir, device="cpu")


def test_tiny_clip_artifact_is_a_documented_stand_in(tiny_clip):
    manifest = read_clip_manifest(tiny_clip.clip_dir)
    assert manifest["base_model"] == "loom/tiny-clip" and manifest["stand_in"] is True
    assert manifest["embedding_dimension"] == 64


def test_index_bundle_manifest_counts_and_skips(tiny_clip, embedder):
    manifest = tiny_clip.index_manifest
    index = SearchIndex.load(tiny_clip.index_dir)
    assert manifest["count"] == index.size > 300
    assert manifest["embedder"]["checksum"] == embedder.checksum
    assert manifest["skipped"]["filtered_article_type"] > 0  # jeans, watches and shoes are not indexed
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=1e-5)


def test_search_targets_on_the_synthetic_catalog(tiny_clip, embedder):
    figures = evaluate(embedder, SearchIndex.load(tiny_clip.index_dir), tiny_clip.catalog_dir, photos=100)
    print("search figures:", figures)
    assert figures["text_r_precision"]["mean"] >= 0.8
    assert figures["colour_precision_at_10"]["mean"] >= 0.9
    assert figures["photo_r_precision"]["mean"] >= 0.8


def test_green_shirt_with_a_pattern_filter(tiny_clip, embedder):
    index = SearchIndex.load(tiny_clip.index_dir)
    found = index.search(embedder.embed_texts(["green shirt"])[0], 10, {"Pattern": "Striped"})
    assert found and all(row.attributes["Pattern"] == "Striped" for row, _ in found)
    assert sum(row.attributes["baseColour"] == "Green" for row, _ in found) >= 0.9 * len(found)


def test_index_add_and_remove_update_a_bundle_without_a_rebuild(tiny_clip, tmp_path, capsys):
    bundle = tmp_path / "index"
    shutil.copytree(tiny_clip.index_dir, bundle)
    before = SearchIndex.load(bundle)
    victims = [before.products[0].id, before.products[5].id]
    assert cli.main(["index", "remove", "--index", str(bundle), "--ids", ",".join(victims)]) == 0
    removed = SearchIndex.load(bundle)
    assert removed.size == before.size - 2 and not {r.id for r in removed.products} & set(victims)
    with pytest.raises(SystemExit, match="not in"):
        cli.main(["index", "remove", "--index", str(bundle), "--ids", "999999"])
    assert cli.main(["index", "add", "--index", str(bundle), "--catalog", str(tiny_clip.catalog_dir),
                     "--model", str(tiny_clip.clip_dir), "--ids", f"{victims[0]},{before.products[1].id}"]) == 0
    assert "1 added, 1 replaced" in capsys.readouterr().out
    added = SearchIndex.load(bundle)
    assert added.size == before.size - 1
    row = next(i for i, r in enumerate(added.products) if r.id == victims[0])
    original = next(i for i, r in enumerate(before.products) if r.id == victims[0])
    assert np.allclose(added.embeddings[row], before.embeddings[original], atol=1e-5)
