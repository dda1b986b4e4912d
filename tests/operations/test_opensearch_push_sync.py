"""`loom index push` makes the OpenSearch index equal to the bundle, on a domain and on a Serverless collection,
against a stateful loopback fake (tests/opensearch_fake.py; bodies from tests/fixtures/opensearch):

- `index remove` then `push` deletes the removed products (push used to only add);
- an unchanged bundle pushed again writes nothing; a changed product is rewritten, once;
- a push interrupted midway (a bulk request half applied, then the connection dropped) converges when re-run;
- Serverless: no custom `_id` (AWS: "For time series and vector search collections, you can't index by custom
  document ID or update by upsert requests",
  https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-overview.html), and search is
  eventually consistent: a push that runs before the previous one's documents are searchable may duplicate
  them, and the next push removes the duplicates;
- the hybrid search pipeline is set up on Serverless too (its guide documents hybrid search with the
  normalization processor:
  https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-configure-neural-search.html),
  and a refused pipeline does not stop the data push.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from botocore.credentials import Credentials

from inference.api.visual.opensearch import HASH_FIELD, HYBRID_PIPELINE, OpenSearchClient, OpenSearchError, document
from runtime.search_index import ProductRow, index_manifest, load_embeddings, write_bundle
from opensearch_fake import FakeOpenSearch
from operations import index as index_ops
from training.search.index_build import remove

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
KINDS = ["domain", "serverless"]


def products(n=7, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(10000 + i), f"Shirt {i}", {"baseColour": "Green"}, f"images/{10000 + i}.jpg")
            for i in range(n)]
    return vectors, rows


def make_bundle(folder, n=7, seed=0):
    vectors, rows = products(n, seed)
    write_bundle(folder, vectors, rows, index_manifest({"base_model": "t", "checksum": "c"}, 4, n))
    return vectors, rows


@pytest.fixture(params=KINDS)
def fake(request):
    running = FakeOpenSearch(serverless=request.param == "serverless")
    running.kind = request.param
    yield running
    running.close()


def push(folder, fake, batch=3):
    client = OpenSearchClient(fake.url, "eu-west-1", fake.kind, credentials=CREDENTIALS)
    return index_ops.push(folder, fake.url, "eu-west-1", kind=fake.kind, batch=batch, client=client)


def assert_index_equals_bundle(fake, folder):
    """One document per bundle product, holding its row and vector, and nothing else."""
    embeddings, rows, _ = load_embeddings(folder)
    held = fake.documents()
    assert sorted(d["product_id"] for d in held) == sorted(r.id for r in rows)
    by_id = {d["product_id"]: d for d in held}
    for row, vector in zip(rows, embeddings):
        stored = {k: v for k, v in by_id[row.id].items() if k != HASH_FIELD}
        assert stored == document(row.to_dict(), vector)


def bulk_bodies(fake, since=0):
    return [[json.loads(line) for line in r["body"].decode().splitlines()]
            for r in fake.requests[since:] if r["path"] == "/_bulk"]


def test_remove_then_push_deletes_the_removed_products(tmp_path, fake):
    make_bundle(tmp_path)
    first = push(tmp_path, fake)
    assert first["created"] and first["indexed"] == 7 and first["removed_products"] == 0
    assert_index_equals_bundle(fake, tmp_path)
    remove(tmp_path, {"10002", "10005"})
    mark = len(fake.requests)
    second = push(tmp_path, fake)
    assert second["removed_products"] == 2 and second["deleted"] == 2
    assert second["unchanged"] == 5 and second["indexed"] == 0
    assert_index_equals_bundle(fake, tmp_path)
    deletes = [line["delete"] for body in bulk_bodies(fake, mark) for line in body if "delete" in line]
    if fake.kind == "domain":  # the product id is the _id
        assert sorted(d["_id"] for d in deletes) == ["10002", "10005"]
    else:  # generated ids, looked up by product_id
        assert len(deletes) == 2 and all(d["_id"].startswith("1%3A0%3A") for d in deletes)


def test_an_unchanged_bundle_writes_nothing_and_a_changed_product_is_rewritten_once(tmp_path, fake):
    vectors, rows = make_bundle(tmp_path)
    push(tmp_path, fake)
    mark = len(fake.requests)
    again = push(tmp_path, fake)
    assert again["unchanged"] == 7 and again["indexed"] == again["deleted"] == 0 and bulk_bodies(fake, mark) == []
    # `index add` replacing product 10003: a new vector and a new name.
    vectors[3] = -vectors[3]
    rows[3] = ProductRow("10003", "Shirt 3, re-shot", rows[3].attributes, rows[3].image)
    write_bundle(tmp_path, vectors, rows, index_manifest({"base_model": "t", "checksum": "c"}, 4, 7))
    changed = push(tmp_path, fake)
    assert changed["indexed"] == 1 and changed["unchanged"] == 6
    assert changed["deleted"] == (1 if fake.kind == "serverless" else 0)  # Serverless: delete + index, no upsert
    assert_index_equals_bundle(fake, tmp_path)


@pytest.mark.parametrize("broken", [1, 2, 3])
def test_an_interrupted_push_converges_when_run_again(tmp_path, fake, broken):
    make_bundle(tmp_path, n=7)
    push(tmp_path, fake)
    # The next bundle changes five products (new vectors), adds one and drops two: 3 bulk requests at batch 4
    # (two of writes, one of deletes); each is broken in turn (half applied, then the connection drops).
    vectors, rows = products(n=8, seed=1)
    keep = [i for i in range(8) if i not in (0, 6)]
    write_bundle(tmp_path, vectors[keep], [rows[i] for i in keep],
                 index_manifest({"base_model": "t", "checksum": "c"}, 4, len(keep)))
    fake.break_bulk_at = fake.bulk_requests + broken
    with pytest.raises(OpenSearchError) as error:
        push(tmp_path, fake, batch=4)
    assert error.value.status == 504
    fake.break_bulk_at = None
    push(tmp_path, fake, batch=4)
    assert_index_equals_bundle(fake, tmp_path)
    final = push(tmp_path, fake, batch=4)
    assert final["unchanged"] == 6 and final["indexed"] == final["deleted"] == 0


def test_serverless_lag_may_duplicate_and_the_next_push_removes_the_duplicates(tmp_path):
    fake = FakeOpenSearch(serverless=True, lag=True)
    fake.kind = "serverless"
    try:
        make_bundle(tmp_path, n=5)
        push(tmp_path, fake, batch=10)  # one bulk request, not yet searchable
        push(tmp_path, fake, batch=10)  # sees nothing, writes everything again
        assert len(fake.documents()) == 10
        fake.catch_up()
        fixed = push(tmp_path, fake, batch=10)
        assert fixed["indexed"] == 5 and fixed["deleted"] == 10  # each duplicated product: both copies, then one
        fake.catch_up()
        assert_index_equals_bundle(fake, tmp_path)
        fake.catch_up()
        assert push(tmp_path, fake, batch=10)["unchanged"] == 5
    finally:
        fake.close()


def test_an_index_from_an_older_push_gets_the_hash_field_and_is_rewritten_once(tmp_path, fake):
    vectors, rows = make_bundle(tmp_path)
    client = OpenSearchClient(fake.url, "eu-west-1", fake.kind, credentials=CREDENTIALS)
    body = client.request  # an index made before content hashes: no content_hash field or values
    from inference.api.visual.opensearch import index_body

    old_mapping = index_body(4)
    del old_mapping["mappings"]["properties"][HASH_FIELD]
    body("PUT", "loom-products", old_mapping)
    lines = []
    for row, vector in zip(rows, vectors):
        action = {"_index": "loom-products"} if fake.kind == "serverless" else {"_index": "loom-products", "_id": row.id}
        lines += [json.dumps({"index": action}), json.dumps(document(row.to_dict(), vector))]
    body("POST", "_bulk", ("\n".join(lines) + "\n").encode(), ndjson=True)
    first = push(tmp_path, fake)
    put_mapping = [r for r in fake.requests if r["path"] == "/loom-products/_mapping" and r["method"] == "PUT"]
    assert json.loads(put_mapping[0]["body"]) == {"properties": {HASH_FIELD: {"type": "keyword"}}}
    assert first["created"] is False and first["indexed"] == 7
    assert first["deleted"] == (7 if fake.kind == "serverless" else 0)
    assert_index_equals_bundle(fake, tmp_path)
    assert push(tmp_path, fake)["unchanged"] == 7


def test_the_hybrid_pipeline_is_set_up_on_both_kinds_and_a_refusal_does_not_stop_the_push(tmp_path, fake):
    make_bundle(tmp_path)
    result = push(tmp_path, fake)
    assert result["hybrid_pipeline"] == "ready"
    processor = fake.pipelines[HYBRID_PIPELINE]["phase_results_processors"][0]["normalization-processor"]
    # Techniques the Serverless guide lists as supported: min_max normalization, arithmetic_mean combination.
    assert processor["normalization"]["technique"] == "min_max"
    assert processor["combination"]["technique"] == "arithmetic_mean"
    fake.refuse_pipeline = True
    remove(tmp_path, {"10000"})
    refused = push(tmp_path, fake)
    assert refused["hybrid_pipeline"].startswith("refused (OpenSearch PUT _search/pipeline/loom-hybrid answered 403")
    assert refused["removed_products"] == 1
    assert_index_equals_bundle(fake, tmp_path)


def test_every_request_is_signed_for_the_kinds_service(tmp_path, fake):
    make_bundle(tmp_path, n=3)
    push(tmp_path, fake)
    service = "es" if fake.kind == "domain" else "aoss"
    assert all(f"/eu-west-1/{service}/aws4_request" in r["headers"]["authorization"] for r in fake.requests)


def test_the_cli_says_what_the_push_did(tmp_path, fake, capsys, monkeypatch):
    make_bundle(tmp_path)
    monkeypatch.setattr(index_ops, "push", lambda *a, **k: {
        "index": "loom-products", "created": False, "indexed": 1, "unchanged": 5, "deleted": 2, "removed_products": 1,
        "failed": 0, "products": 6, "hybrid_pipeline": "ready"})
    index_ops.main(["push", "--index", str(tmp_path), "--endpoint", fake.url, "--region", "eu-west-1"])
    out = capsys.readouterr().out
    assert "6 products, 1 written, 5 unchanged, 1 removed (2 documents deleted)" in out
