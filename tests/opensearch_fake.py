"""A stateful fake OpenSearch on 127.0.0.1 for the push tests: it keeps documents, answers with the status
codes and body shapes of the real API (tests/fixtures/opensearch/README.md cites each), and can behave as a
Serverless vector collection (no custom `_id`; eventually consistent search) or break a bulk request midway.

What it implements, and nothing more: HEAD/PUT <index>, PUT/GET <index>/_mapping, PUT _search/pipeline/<id>,
POST _bulk (index, delete), GET <index>/_count, and POST <index>/_search with a composite aggregation over
keyword fields, a `terms` query on product_id, or a `knn` query (exact inner product).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from opensearch_stub import serve_json

FIXTURES = Path(__file__).parent / "fixtures" / "opensearch"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def error(status: int, kind: str, reason: str) -> tuple[int, dict]:
    """OpenSearch's common error body (as in error_index_missing.json)."""
    return status, {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
                    "status": status}


class FakeOpenSearch:
    def __init__(self, serverless: bool = False, lag: bool = False):
        self.serverless = serverless
        self.lag = lag  # Serverless: documents of the latest bulk request are not searchable yet
        self.indexes: dict[str, dict] = {}  # name -> {"properties": {...}, "docs": {_id: source}}
        self.pipelines: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.unsearchable: set[str] = set()
        self.refuse_pipeline = False
        self.break_bulk_at: int | None = None  # the n-th bulk request applies half its items, then drops
        self.bulk_requests = 0
        self.generated = 0
        self.lock = threading.Lock()
        self.server, self.url = serve_json(self._record, unquote_path=True)

    def _record(self, record):
        with self.lock:
            self.requests.append(record)
            return self.route(record)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- views for the tests ---------------------------------------------------------------------------------
    def documents(self, index: str = "loom-products") -> list[dict]:
        return list(self.indexes.get(index, {}).get("docs", {}).values())

    def catch_up(self) -> None:
        """Everything written becomes searchable (Serverless' refresh)."""
        self.unsearchable.clear()

    # -- routing -------------------------------------------------------------------------------------------------
    def route(self, r):
        parts = [p for p in r["path"].split("/") if p]
        method = r["method"]
        if parts[:2] == ["_search", "pipeline"] and method == "PUT":
            if self.refuse_pipeline:
                return error(403, "security_exception", "no permissions for [cluster:admin/search/pipeline/put]")
            self.pipelines[parts[2]] = json.loads(r["body"])
            return 200, fixture("put_pipeline.json")
        if parts == ["_bulk"] and method == "POST":
            return self.bulk(r["body"])
        name = parts[0]
        index = self.indexes.get(name)
        if len(parts) == 1 and method == "HEAD":
            return (200, None) if index else (404, None)
        if len(parts) == 1 and method == "PUT":
            if index:
                return error(400, "resource_already_exists_exception", f"index [{name}/x] already exists")
            body = json.loads(r["body"])
            self.indexes[name] = {"properties": dict(body["mappings"]["properties"]), "docs": {}}
            return 200, {**fixture("create_index.json"), "index": name}
        if index is None:
            return 404, fixture("error_index_missing.json")
        if parts[1:] == ["_mapping"] and method == "PUT":
            for field, spec in json.loads(r["body"])["properties"].items():
                old = index["properties"].get(field)
                if old and old.get("type") != spec.get("type"):
                    return error(400, "illegal_argument_exception",
                                 f"mapper [{field}] cannot be changed from type [{old['type']}] to [{spec['type']}]")
                index["properties"][field] = spec
            return 200, {"acknowledged": True}
        if parts[1:] == ["_mapping"] and method == "GET":
            return 200, {name: {"mappings": {"properties": index["properties"]}}}
        if parts[1:] == ["_count"]:
            return 200, {"count": len(self.searchable(index)), "_shards": {"total": 1, "successful": 1, "skipped": 0,
                                                                             "failed": 0}}
        if parts[1:] == ["_search"] and method == "POST":
            return self.search(index, json.loads(r["body"]))
        return error(400, "illegal_argument_exception", f"unsupported request {method} {r['path']}")

    def searchable(self, index) -> dict:
        return {i: d for i, d in index["docs"].items() if i not in self.unsearchable}

    def bulk(self, body: bytes):
        self.bulk_requests += 1
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        operations, position = [], 0
        while position < len(lines):
            (operation, action), = lines[position].items()
            if operation == "delete":
                operations.append((operation, action, None))
                position += 1
            else:
                operations.append((operation, action, lines[position + 1]))
                position += 2
        broken = self.bulk_requests == self.break_bulk_at
        if broken:
            operations = operations[:len(operations) // 2]
        if self.lag:
            self.unsearchable.clear()  # the previous request's documents are searchable now
        items = [self.apply(*op) for op in operations]
        if broken:
            return None, None  # a bulk request is not atomic: half applied, then the connection drops
        return 200, {"took": 3, "errors": any(i[next(iter(i))]["status"] >= 300 for i in items), "items": items}

    def apply(self, operation, action, source):
        name = action["_index"]
        index = self.indexes.get(name)
        if index is None:  # automatic index creation is not what Loom relies on: refuse it
            item = fixture("error_index_missing.json")["error"]
            return {operation: {"_index": name, "status": 404, "error": {"type": item["type"], "reason": item["reason"]}}}
        if operation == "delete":
            if index["docs"].pop(action["_id"], None) is None:
                item = fixture("bulk_item_delete.json")["delete"]
                return {"delete": {**item, "_id": action["_id"], "result": "not_found", "status": 404}}
            return {"delete": {**fixture("bulk_item_delete.json")["delete"], "_id": action["_id"]}}
        if self.serverless and "_id" in action:
            return fixture("serverless_custom_id.json")
        self.generated += 1
        doc_id = action.get("_id") or f"1%3A0%3Agen{self.generated:06d}"
        created = doc_id not in index["docs"]
        index["docs"][doc_id] = source
        if self.lag:
            self.unsearchable.add(doc_id)
        item = fixture("bulk_item_index.json")["index"]
        return {"index": {**item, "_id": doc_id, "result": "created" if created else "updated",
                          "status": 201 if created else 200}}

    def search(self, index, query):
        docs = self.searchable(index)
        envelope = {"took": 2, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        if "aggs" in query:
            return self.composite(index, docs, query, envelope)
        if "terms" in query.get("query", {}):
            wanted = set(query["query"]["terms"]["product_id"])
            hits = [{"_index": "loom-products", "_id": i, "_score": 1.0}
                    for i, s in docs.items() if s.get("product_id") in wanted][:query.get("size", 10)]
            return 200, {**envelope, "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0,
                                              "hits": hits}}
        if "knn" in query.get("query", {}):
            knn = query["query"]["knn"]["embedding"]
            scored = sorted(((sum(a * b for a, b in zip(s["embedding"], knn["vector"])), i, s)
                             for i, s in docs.items()), key=lambda t: -t[0])[:knn["k"]]
            hits = [{"_index": "loom-products", "_id": i, "_score": p + 1 if p > 0 else 1 / (1 - p),
                     "_source": {k: v for k, v in s.items() if k != "embedding"}} for p, i, s in scored]
            return 200, {**envelope, "hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": hits}}
        return error(400, "illegal_argument_exception", "unsupported query")

    def composite(self, index, docs, query, envelope):
        """A composite aggregation of terms sources (OpenSearch keeps Elasticsearch 7.10's: buckets sorted by
        key, `after` as the cursor, `after_key` with every page that has buckets, missing values first)."""
        if query.get("size") != 0 or len(query["aggs"]) != 1:
            return error(400, "illegal_argument_exception", "unexpected aggregation request")
        (agg_name, spec), = query["aggs"].items()
        composite = spec["composite"]
        fields = []
        for source in composite["sources"]:
            (key_name, terms), = source.items()
            field = terms["terms"]["field"]
            if index["properties"].get(field, {}).get("type") != "keyword":
                return error(400, "illegal_argument_exception",
                             f"Text fields are not optimised for operations that require per-document field data "
                             f"like aggregations and sorting, so these operations are disabled by default. "
                             f"Please use a keyword field instead. [{field}]")
            fields.append((key_name, field, terms["terms"].get("missing_bucket", False)))
        counts: dict[tuple, int] = {}
        for source in docs.values():
            key = tuple(source.get(field) for _, field, _ in fields)
            if any(v is None and not missing for v, (_, _, missing) in zip(key, fields)):
                continue
            counts[key] = counts.get(key, 0) + 1

        def order(key):
            return tuple((v is not None, v or "") for v in key)

        keys = sorted(counts, key=order)
        after = composite.get("after")
        if after:
            cursor = order(tuple(after.get(name) for name, _, _ in fields))
            keys = [k for k in keys if order(k) > cursor]
        page = keys[:composite.get("size", 10)]
        buckets = [{"key": {name: v for (name, _, _), v in zip(fields, k)}, "doc_count": counts[k]} for k in page]
        result = {"buckets": buckets}
        if buckets:
            result["after_key"] = buckets[-1]["key"]
        return 200, {**envelope, "hits": {"total": {"value": len(docs), "relation": "eq"}, "max_score": None,
                                          "hits": []}, "aggregations": {agg_name: result}}
