"""The embedded search backend on known vectors: exact cosine top-k, filters honoured exactly, float32 kept,
and bundles that do not hold together refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.search_index import BundleError, ProductRow, SearchIndex, index_manifest, write_bundle
from loom.artifact import IndexPaths
from loom.errors import StatusError
from loom.schema import SchemaError

EMBEDDER = {"base_model": "test", "checksum": "sha256:abc"}
COLOURS = ("Green", "Red", "Blue")
PATTERNS = ("Solid", "Striped")


def random_index(n=600, d=32, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(i), f"p{i}", {"baseColour": COLOURS[i % 3], "Pattern": PATTERNS[i % 2]}
                       | ({"Fit": "Slim"} if i % 5 == 0 else {}), f"images/{i}.jpg") for i in range(n)]
    return SearchIndex(vectors, rows, index_manifest(EMBEDDER, d, n)), vectors, rows


def test_top_k_is_the_exact_cosine_ranking():
    index, vectors, rows = random_index()
    query = vectors[17] + 0.1 * vectors[3]
    query = query / np.linalg.norm(query)
    found = index.search(query, 10)
    expected = np.argsort(-(vectors.astype(np.float64) @ query))[:10]
    assert [row.id for row, _ in found] == [str(i) for i in expected]
    assert found[0][0].id == "17"
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert found[0][1] == pytest.approx(float(vectors[17] @ query), abs=1e-5)


def test_filters_are_honoured_exactly():
    index, vectors, rows = random_index()
    found = index.search(vectors[0], 50, {"baseColour": "Green", "Pattern": "Striped"})
    assert len(found) == 50
    assert all(r.attributes["baseColour"] == "Green" and r.attributes["Pattern"] == "Striped" for r, _ in found)
    # The best 50 of exactly the matching rows, none missed.
    matching = [i for i, r in enumerate(rows) if r.attributes["baseColour"] == "Green"
                and r.attributes["Pattern"] == "Striped"]
    best = sorted(matching, key=lambda i: -float(vectors[i] @ vectors[0]))[:50]
    assert [r.id for r, _ in found] == [str(i) for i in best]
    anyof = index.search(vectors[0], 50, {"baseColour": ["Red", "Blue"]})
    assert {r.attributes["baseColour"] for r, _ in anyof} == {"Red", "Blue"}
    only_some = index.search(vectors[0], 50, {"Fit": "Slim", "baseColour": "Red"})  # 600/15 = 40 rows
    assert len(only_some) == 40 and all(int(r.id) % 15 == 10 for r, _ in only_some)
    assert index.search(vectors[0], 5, {"baseColour": "Mauve"}) == []


def test_unknown_filter_field_and_wrong_dimension_are_client_errors():
    index, vectors, _ = random_index()
    with pytest.raises(StatusError) as error:
        index.search(vectors[0], 5, {"colour": "Green"})
    assert error.value.status == 400 and "baseColour" in error.value.message
    with pytest.raises(StatusError, match="dimensions"):
        index.search(np.ones(7, dtype=np.float32), 5)


def test_search_stays_float32():
    """A float64 query would promote the whole product to float64 (FACTS.md: 40x slower)."""
    index, vectors, _ = random_index()
    assert index.embeddings.dtype == np.float32
    found64 = index.search(vectors[5].astype(np.float64), 3)
    assert found64[0][0].id == "5"


def test_bundle_round_trip_and_inconsistent_bundles(tmp_path):
    index, vectors, rows = random_index(n=20, d=8)
    write_bundle(tmp_path, vectors, rows, index.manifest)
    loaded = SearchIndex.load(tmp_path)
    assert loaded.size == 20 and np.array_equal(loaded.embeddings, vectors) and loaded.products == rows
    assert not list(tmp_path.glob("*.tmp"))
    paths = IndexPaths.of(tmp_path)
    manifest = json.loads(paths.manifest.read_text())
    paths.manifest.write_text(json.dumps({**manifest, "count": 21}))
    with pytest.raises(BundleError, match="do not match"):
        SearchIndex.load(tmp_path)
    paths.manifest.unlink()
    with pytest.raises(SchemaError, match="loom index build"):
        SearchIndex.load(tmp_path)
    with pytest.raises(ValueError):
        write_bundle(tmp_path, vectors.astype(np.float64), rows, index.manifest)


def test_a_bundle_from_other_weights_is_refused():
    index, _, _ = random_index(n=5, d=4)
    index.check_embedder(EMBEDDER)
    with pytest.raises(BundleError, match="rebuild"):
        index.check_embedder({**EMBEDDER, "checksum": "sha256:other"})


def test_float16_shortlist_path_returns_the_exact_ranking_and_scores():
    exact, vectors, rows = random_index(n=3000, d=64, seed=3)
    fast = SearchIndex(vectors, rows, exact.manifest, fast_path=True)
    assert fast._half is not None and exact._half is None  # 3000 rows: below the automatic threshold
    rng = np.random.default_rng(4)
    for query in rng.standard_normal((30, 64)).astype(np.float32):
        query /= np.linalg.norm(query)
        for filters in (None, {"baseColour": "Green"}, {"Fit": "Slim", "Pattern": "Solid"}):
            want = exact.search(query, 10, filters)
            got = fast.search(query, 10, filters)
            assert [r.id for r, _ in got] == [r.id for r, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6)  # rescored in float32
    assert fast.search(vectors[0], 5, {"baseColour": "Mauve"}) == []
