"""The OpenSearch backend's requests, against a loopback stub that answers with recorded OpenSearch responses
(tests/fixtures/opensearch/README.md cites each): paths, bodies, filters inside the k-NN query, the hybrid
pipeline, idempotent pushes to a domain and to Serverless (no custom _id), and SigV4 signatures checked by an
independent implementation of the signing algorithm
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from botocore.credentials import Credentials

from inference.api.opensearch import (OpenSearchClient, OpenSearchError, cosine_from_score, document,
                                      index_body, search_body)
from inference.server.search_index import ProductRow, index_manifest, write_bundle

FIXTURES = Path(__file__).parent / "fixtures" / "opensearch"
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class Stub:
    """A fake OpenSearch on 127.0.0.1 that records every request and answers from the fixtures."""

    def __init__(self, serverless: bool = False, index_exists: bool = False):
        self.requests: list[dict] = []
        self.serverless, self.index_exists = serverless, index_exists
        self.documents: dict[str, dict] = {}  # _id -> source, to check idempotency
        self.generated = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                record = {"method": self.command, "path": url.path, "query": url.query,
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                stub.requests.append(record)
                status, answer = stub.route(record)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, r):
        if r["method"] == "HEAD":
            return (200, None) if self.index_exists else (404, None)
        if r["path"].startswith("/_search/pipeline/"):
            return 200, fixture("put_pipeline.json")
        if r["method"] == "PUT":
            self.index_exists = True
            return 200, fixture("create_index.json")
        if r["path"] == "/_bulk":
            return 200, self.bulk(r["body"])
        if r["path"].endswith("/_search"):
            query = json.loads(r["body"])
            if "terms" in query.get("query", {}):  # Serverless: look up generated ids by product_id
                wanted = set(query["query"]["terms"]["product_id"])
                hits = [{"_index": "loom-products", "_id": i, "_score": 1.0}
                        for i, s in self.documents.items() if s["product_id"] in wanted]
                return 200, {**fixture("search_knn.json"), "hits": {"total": {"value": len(hits)}, "hits": hits}}
            return 200, fixture("search_knn.json")
        return 404, fixture("error_index_missing.json")

    def bulk(self, body: bytes) -> dict:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items, position = [], 0
        while position < len(lines):
            (operation, action), = lines[position].items()
            if operation == "delete":
                self.documents.pop(action["_id"], None)
                items.append(fixture("bulk_item_delete.json"))
                position += 1
                continue
            source = lines[position + 1]
            position += 2
            if self.serverless and "_id" in action:
                items.append(fixture("serverless_custom_id.json"))
                continue
            self.generated += 1
            doc_id = action.get("_id") or f"generated-{self.generated}"
            self.documents[doc_id] = source
            item = fixture("bulk_item_index.json")
            item["index"]["_id"] = doc_id
            items.append(item)
        return {"took": 3, "errors": any(i[next(iter(i))]["status"] >= 300 for i in items), "items": items}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    running = Stub()
    yield running
    running.close()


def client_for(stub: Stub, kind="domain") -> OpenSearchClient:
    return OpenSearchClient(stub.url, "eu-west-1", kind, credentials=CREDENTIALS)


def expected_signature(record: dict, region: str, service: str) -> str:
    """SigV4 computed from the request as received (not with botocore), as the server does."""
    authorization = record["headers"]["authorization"]
    scheme, _, rest = authorization.partition(" ")
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    signed = parts["SignedHeaders"].split(";")
    amz_date = record["headers"]["x-amz-date"]
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                               for k, v in sorted(urllib.parse.parse_qsl(record["query"], keep_blank_values=True)))
    canonical = "\n".join([
        record["method"], urllib.parse.quote(record["path"], safe="/-_.~"), canonical_query,
        "".join(f"{h}:{' '.join(record['headers'][h].split())}\n" for h in signed), ";".join(signed),
        hashlib.sha256(record["body"]).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + CREDENTIALS.secret_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    assert scheme == "AWS4-HMAC-SHA256" and parts["Credential"] == f"{CREDENTIALS.access_key}/{scope}"
    assert "host" in signed and "x-amz-date" in signed and "x-amz-content-sha256" in signed
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == parts["Signature"]


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
    # What a second push, a removal or an interruption does: tests/test_opensearch_push_sync.py (stateful fake).
    from inference.api.opensearch import with_hash
    from training.index_build import push

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
        from training.index_build import push

        with pytest.raises(OpenSearchError, match="refused 2"):
            push(tmp_path, stub.url, "eu-west-1", client=wrong)
    finally:
        stub.close()


def test_client_refuses_bad_settings():
    with pytest.raises(ValueError, match="kind"):
        OpenSearchClient("https://x", "eu-west-1", "cluster")
    with pytest.raises(ValueError, match="https"):
        OpenSearchClient("ftp://x", "eu-west-1")
