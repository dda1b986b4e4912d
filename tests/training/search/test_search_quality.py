"""The tiny CLIP and its index on a synthetic catalog: the issue's search targets, measured, and the
`loom index` commands (build through the fixture, add and remove here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.embedder import ClipEmbedder
from runtime.search_index import SearchIndex
from operations import cli
from loom.artifact import read_clip_manifest
from training.search.search_eval import evaluate

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
    assert cli.main(["index", "remove", "--index", str(bundle), "--ids", "999999"]) == 2  # one line, no change
    assert "not in" in capsys.readouterr().err
    assert cli.main(["index", "add", "--index", str(bundle), "--catalog", str(tiny_clip.catalog_dir),
                     "--model", str(tiny_clip.clip_dir), "--ids", f"{victims[0]},{before.products[1].id}"]) == 0
    assert "1 added, 1 replaced" in capsys.readouterr().out
    added = SearchIndex.load(bundle)
    assert added.size == before.size - 1
    row = next(i for i, r in enumerate(added.products) if r.id == victims[0])
    original = next(i for i, r in enumerate(before.products) if r.id == victims[0])
    assert np.allclose(added.embeddings[row], before.embeddings[original], atol=1e-5)


def test_batch_transform_embeddings_import_into_the_same_bundle(tiny_clip, tmp_path):
    """The catalog-scale path: the Batch Transform input shards (operations/batch_records.py), answered by
    the CLIP service's JSON Lines handler as the endpoint would, joined and written as `loom batch` does,
    then `loom index import`: the same vectors as `loom index build`."""
    from runtime.clip_service import ClipService
    from operations import batch_records, batch_transform

    service = ClipService.load(tiny_clip.clip_dir, device="cpu")
    products = batch_transform.local_products(tiny_clip.catalog_dir, ("Shirts", "Tshirts"))
    results = []
    for shard in batch_records.write_shards(products, tmp_path / "shards", records_per_file=100, max_payload_mb=6):
        body = Path(shard.path).read_bytes()
        outputs = list(batch_records.parse_output_lines(
            json.dumps(line) for line in service.answer_lines(body, 40_000_000)))
        results += batch_records.join_shard(shard.ids, outputs)
    batch_records.write_results(results, tmp_path / "embeddings.jsonl")
    with (tmp_path / "embeddings.jsonl").open("a") as out:  # a failed product and an unknown id are skipped
        out.write(json.dumps({"id": "10001", "error": "line 2: bad image"}) + "\n")
        out.write(json.dumps({"id": "999999", "embedding": [0.5] * 64}) + "\n")
    bundle = tmp_path / "imported"
    assert cli.main(["index", "import", "--embeddings", str(tmp_path / "embeddings.jsonl"), "--catalog",
                     str(tiny_clip.catalog_dir), "--model", str(tiny_clip.clip_dir), "--out", str(bundle)]) == 0
    imported, built = SearchIndex.load(bundle), SearchIndex.load(tiny_clip.index_dir)
    assert imported.manifest["skipped"]["batch_error"] == 1 and imported.manifest["skipped"]["not_in_catalog"] == 1
    assert imported.size == built.size
    order = {row.id: i for i, row in enumerate(built.products)}
    for i, row in enumerate(imported.products):
        assert np.allclose(imported.embeddings[i], built.embeddings[order[row.id]], atol=1e-5)
    imported.check_embedder(ClipEmbedder.load(tiny_clip.clip_dir, device="cpu").model_info)
