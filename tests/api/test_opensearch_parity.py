"""Parity: a real OpenSearch (domain, Serverless collection or a local cluster) returns the same top-k as the
embedded backend on the same bundle. Runs only when LOOM_OPENSEARCH_URL is set; prints a loud SKIP otherwise.

    LOOM_OPENSEARCH_URL=https://search-xxx.eu-west-1.es.amazonaws.com LOOM_OPENSEARCH_REGION=eu-west-1 \\
    [LOOM_OPENSEARCH_KIND=serverless] python -m pytest -q tests/api/test_opensearch_parity.py -s

AWS credentials come from the usual chain (for a local cluster without security, any values). The test creates
an index named loom-parity-<random>, pushes the tiny CLIP bundle, compares, and deletes the index.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

URL = os.environ.get("LOOM_OPENSEARCH_URL")
if not URL:
    print("\nSKIP: tests/api/test_opensearch_parity.py needs a real OpenSearch: set LOOM_OPENSEARCH_URL "
          "(and LOOM_OPENSEARCH_REGION, LOOM_OPENSEARCH_KIND=domain|serverless) to run the parity check")
    pytest.skip("SKIP: LOOM_OPENSEARCH_URL is not set (no OpenSearch server can run here)", allow_module_level=True)

pytestmark = pytest.mark.slow
QUERIES = ["green shirt", "red striped long sleeves", "black checked sleeveless", "yellow shirt", "blue solid"]


def test_opensearch_top_k_matches_the_embedded_backend(tiny_clip):
    from inference.api.visual.opensearch import OpenSearchClient
    from runtime.embedder import ClipEmbedder
    from runtime.search_index import SearchIndex
    from operations.index import push

    kind = os.environ.get("LOOM_OPENSEARCH_KIND", "domain")
    client = OpenSearchClient(URL, os.environ.get("LOOM_OPENSEARCH_REGION", "us-east-1"), kind, timeout_s=30)
    name = f"loom-parity-{uuid.uuid4().hex[:8]}"
    index = SearchIndex.load(tiny_clip.index_dir)
    embedder = ClipEmbedder.load(tiny_clip.clip_dir, device="cpu")
    try:
        push(tiny_clip.index_dir, URL, client.region, kind=kind, name=name, client=client)
        deadline = time.monotonic() + 120  # Serverless has no _refresh: wait until every document is searchable
        while client.count(name) < index.size and time.monotonic() < deadline:
            time.sleep(5)
        assert client.count(name) == index.size
        for query in QUERIES:
            vector = embedder.embed_texts([query])[0]
            for filters in (None, {"Pattern": "Striped"}):
                local = [row.id for row, _ in index.search(vector, 10, filters)]
                remote = [r["id"] for r in client.search(name, vector.tolist(), 10, filters)]
                overlap = len(set(local) & set(remote)) / len(local)
                print(f"{query!r} {filters}: top-10 overlap {overlap:.2f}")
                assert overlap >= 0.9, (query, filters, local, remote)  # HNSW is approximate; exact would be 1.0
                assert remote[0] == local[0]
    finally:
        client.request("DELETE", name)
