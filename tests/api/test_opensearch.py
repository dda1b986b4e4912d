"""The OpenSearch backend's requests, against a loopback stub that answers with recorded OpenSearch responses
(tests/fixtures/opensearch/README.md cites each): paths, bodies, filters inside the k-NN query, the hybrid
pipeline, idempotent pushes to a domain and to Serverless (no custom _id), and SigV4 signatures checked by an
independent implementation of the signing algorithm
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from opensearch_stub import CREDENTIALS, Stub, expected_signature

from inference.api.visual.opensearch import (OpenSearchClient, OpenSearchError, cosine_from_score, document,
                                      index_body, search_body)
from runtime.search_index import ProductRow, index_manifest, write_bundle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opensearch"






@pytest.fixture
def stub():
    running = Stub()
    yield running
    running.close()


def client_for(stub: Stub, kind="domain") -> OpenSearchClient:
    return OpenSearchClient(stub.url, "eu-west-1", kind, credentials=CREDENTIALS)




def test_mapping_is_faiss_hnsw_inner_product_with_keyword_attributes():
    body = index_body(512)
    vector = body["mappings"]["properties"]["embedding"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == 512
    assert vector["method"]["engine"] == "faiss" and vector["method"]["name"] == "hnsw"
    assert vector["method"]["space_type"] == "innerproduct"
    assert body["settings"]["index"]["knn"] is True
    template = body["mappings"]["dynamic_templates"][0]["attributes_as_keywords"]
    assert template == {"path_match": "attributes.*", "mapping": {"type": "keyword"}}


def test_filters_go_inside_the_knn_query_and_hybrid_adds_a_lexical_match():
    vector = [0.6, 0.8]
    body = search_body(vector, 5, {"baseColour": "Green", "Sleeve Length": ["Long Sleeves", "Sleeveless"]})
    knn = body["query"]["knn"]["embedding"]
    assert knn["k"] == 5 and knn["vector"] == vector and body["size"] == 5
    assert knn["filter"] == {"bool": {"filter": [{"term": {"attributes.baseColour": "Green"}},
                                                 {"terms": {"attributes.Sleeve Length": ["Long Sleeves", "Sleeveless"]}}]}}
    hybrid = search_body(vector, 5, {"baseColour": "Green"}, text="green shirt")["query"]["hybrid"]["queries"]
    assert hybrid[0]["bool"]["must"][0]["multi_match"]["query"] == "green shirt"
    assert hybrid[0]["bool"]["filter"] == [{"term": {"attributes.baseColour": "Green"}}]
    assert "filter" in hybrid[1]["knn"]["embedding"]


@pytest.mark.parametrize("cosine", [0.93, 0.2, 0.0, -0.4])
def test_scores_convert_back_to_cosine(cosine):
    # OpenSearch's innerproduct score (knn-spaces page): p + 1 for p > 0, 1 / (1 - p) otherwise.
    score = cosine + 1 if cosine > 0 else 1 / (1 - cosine)
    assert cosine_from_score(score) == pytest.approx(cosine)


def test_vector_search_request_signing_and_results(stub):
    client = client_for(stub)
    results = client.search("loom-products", [0.6, 0.8], 2, {"baseColour": "Green"})
    request = stub.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/loom-products/_search" and request["query"] == ""
    assert json.loads(request["body"]) == search_body([0.6, 0.8], 2, {"baseColour": "Green"})
    assert request["headers"]["x-amz-content-sha256"] == hashlib.sha256(request["body"]).hexdigest()
    assert expected_signature(request, "eu-west-1", "es")
    assert [r["id"] for r in results] == ["10007", "10042"]
    assert results[0]["score"] == pytest.approx(0.8923) and results[1]["score"] == pytest.approx(-0.25)
    assert set(results[0]) == {"id", "score", "name", "attributes"}


def test_hybrid_search_uses_the_pipeline_and_serverless_signs_for_aoss(stub):
    client = client_for(stub, "serverless")
    client.search("loom-products", [0.6, 0.8], 2, text="green shirt")
    request = stub.requests[-1]
    assert request["query"] == "search_pipeline=loom-hybrid"
    assert "hybrid" in json.loads(request["body"])["query"]
    assert expected_signature(request, "eu-west-1", "aoss")


def test_a_tampered_body_fails_the_signature_check(stub):
    client_for(stub).search("loom-products", [0.6, 0.8], 2)
    request = dict(stub.requests[-1])
    request["body"] = request["body"].replace(b"0.6", b"0.7")
    assert not expected_signature(request, "eu-west-1", "es")


def test_errors_become_status_errors_with_opensearch_reason(stub):
    with pytest.raises(OpenSearchError) as error:
        client_for(stub).request("GET", "missing/_count")
    assert error.value.status == 404 and "index_not_found_exception" in error.value.message


def make_bundle(tmp_path, n=7):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(10000 + i), f"Shirt {i}", {"baseColour": "Green"}, f"images/{10000 + i}.jpg")
            for i in range(n)]
    write_bundle(tmp_path, vectors, rows, index_manifest({"base_model": "t", "checksum": "c"}, 4, n))
    return vectors, rows


@pytest.mark.parametrize("kind", ["domain", "serverless"])
def test_push_creates_the_index_and_pipeline_and_signs_every_request(tmp_path, kind):
    # What a second push, a removal or an interruption does: tests/operations/test_opensearch_push_sync.py.
    from inference.api.visual.opensearch import with_hash
    from operations.index import push

    stub = Stub(serverless=kind == "serverless")
    try:
        vectors, rows = make_bundle(tmp_path)
        client = client_for(stub, kind)
        first = push(tmp_path, stub.url, "eu-west-1", kind=kind, batch=3, client=client)
        assert first["created"] is True and first["indexed"] == 7 and first["hybrid_pipeline"] == "ready"
        methods = [(r["method"], r["path"]) for r in stub.requests if r["path"] != "/_bulk"]
        # The hybrid search pipeline on both kinds: the Serverless guide documents hybrid search with the
        # normalization processor (serverless-configure-neural-search.html).
        creation = [("PUT", "/_search/pipeline/loom-hybrid"), ("HEAD", "/loom-products"), ("PUT", "/loom-products"),
                    ("POST", "/loom-products/_search")]  # then: what the index holds (nothing yet)
        assert methods[:len(creation)] == creation
        assert json.loads(next(r for r in stub.requests if r["path"] == "/loom-products" and r["method"] == "PUT")
                          ["body"]) == index_body(4)
        bulk = [r for r in stub.requests if r["path"] == "/_bulk"]
        assert len(bulk) == 3 and all(r["headers"]["content-type"] == "application/x-ndjson" for r in bulk)
        actions = [json.loads(line) for line in bulk[0]["body"].decode().splitlines()[::2]]
        if kind == "domain":
            assert [a["index"]["_id"] for a in actions] == ["10000", "10001", "10002"]
        else:
            assert all("_id" not in a["index"] for a in actions)  # Serverless refuses custom ids
        assert all(expected_signature(r, "eu-west-1", "es" if kind == "domain" else "aoss") for r in stub.requests)
        assert sorted(s["product_id"] for s in stub.documents.values()) == [r.id for r in rows]
        stored = next(s for s in stub.documents.values() if s["product_id"] == "10003")
        assert stored == with_hash(document(rows[3].to_dict(), vectors[3]))
    finally:
        stub.close()


def test_push_reports_refused_documents(tmp_path):
    stub = Stub(serverless=True)
    try:
        make_bundle(tmp_path, n=2)
        wrong = client_for(stub, "domain")  # a domain client against a Serverless collection sends _id
        from operations.index import push

        with pytest.raises(OpenSearchError, match="refused 2"):
            push(tmp_path, stub.url, "eu-west-1", client=wrong)
    finally:
        stub.close()


def test_client_refuses_bad_settings():
    with pytest.raises(ValueError, match="kind"):
        OpenSearchClient("https://x", "eu-west-1", "cluster")
    with pytest.raises(ValueError, match="https"):
        OpenSearchClient("ftp://x", "eu-west-1")
