"""The scale-out search backend: Amazon OpenSearch Service (a managed domain, or a Serverless vector collection).

Standard library + botocore only, so the API Lambda can use it without opensearch-py (boto3/botocore are in
the Lambda runtime; the zip stays small): requests are signed with botocore's `SigV4Auth` (service "es" for
a domain, "aoss" for Serverless) and sent with urllib. `loom index push` uses the same client.

Index layout (docs/search.md):
- `embedding`: `knn_vector`, HNSW from the faiss engine, `innerproduct` space. The vectors are
  L2-normalised, so the inner product is the cosine, on every OpenSearch version (faiss gets
  `cosinesimil` only from 2.19). OpenSearch turns the inner product p into a score of p + 1 when p > 0
  and 1 / (1 - p) otherwise (https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/);
  `cosine_from_score` undoes it, so results carry cosine similarities as on the embedded backend.
- `attributes.*`: keyword fields (a dynamic template), for exact filters; `name`, `description`: text.
- Filters go inside the k-NN query (`knn.embedding.filter`, efficient filtering: the top k are taken
  among matching documents, not filtered afterwards).
- Hybrid mode: a `hybrid` query (lexical match on name and description + the k-NN query) through a search
  pipeline with the normalization processor (OpenSearch >= 2.10), on domains and on Serverless collections
  alike: the Serverless guide documents hybrid search with the normalization processor (min_max or l2,
  arithmetic/geometric/harmonic mean) and the hybrid query
  (https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-configure-neural-search.html).
- `push` makes the index equal to the bundle and converges when re-run after an interruption: it lists what the
  index holds (a composite aggregation over `product_id` and `content_hash`, a sha256 of the document), writes
  the products that are missing, changed or duplicated, and deletes the documents of products the bundle no
  longer holds. Unchanged products are not rewritten. Domain: the product id is the document `_id`, so a
  write overwrites. Serverless vector collections refuse a custom `_id` and upserts (and `refresh`): a write
  deletes the product's documents (generated ids, looked up by `product_id`) and indexes it afresh in the same
  bulk request.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from loom.errors import StatusError

VECTOR_FIELD = "embedding"
HYBRID_PIPELINE = "loom-hybrid"
DEFAULT_HYBRID_WEIGHTS = (0.3, 0.7)  # lexical, vector
BULK_BATCH = 500
LIST_PAGE = 1000  # composite buckets per request when listing what an index holds
MAX_RESULT_WINDOW = 10_000  # index.max_result_window's default: hits one search may return
HASH_FIELD = "content_hash"
SERVICES = {"domain": "es", "serverless": "aoss"}


def index_body(dimension: int, *, m: int = 16, ef_construction: int = 128, ef_search: int = 100) -> dict[str, Any]:
    """Settings and mappings of a Loom product index."""
    return {
        "settings": {"index": {"knn": True, "knn.algo_param.ef_search": ef_search}},
        "mappings": {
            "dynamic_templates": [{"attributes_as_keywords": {
                "path_match": "attributes.*", "mapping": {"type": "keyword"}}}],
            "properties": {
                VECTOR_FIELD: {"type": "knn_vector", "dimension": int(dimension), "method": {
                    "name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                    "parameters": {"m": m, "ef_construction": ef_construction}}},
                "product_id": {"type": "keyword"},
                HASH_FIELD: {"type": "keyword"},
                "name": {"type": "text"},
                "description": {"type": "text"},
                "image": {"type": "keyword", "index": False},
                "attributes": {"type": "object"},
            },
        },
    }


def hybrid_pipeline_body(weights: Sequence[float] = DEFAULT_HYBRID_WEIGHTS) -> dict[str, Any]:
    """The search pipeline that normalises and fuses the lexical and vector scores of a hybrid query."""
    return {"description": "Loom hybrid search: min-max normalised lexical and vector scores, weighted mean",
            "phase_results_processors": [{"normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": list(weights)}}}}]}


def filter_clauses(filters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Exact keyword filters: a string is a `term`, a list any of its values (`terms`)."""
    clauses = []
    for name, wanted in (filters or {}).items():
        key = f"attributes.{name}"
        clauses.append({"terms": {key: list(wanted)}} if isinstance(wanted, list) else {"term": {key: wanted}})
    return clauses


def knn_query(vector: Sequence[float], k: int, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    knn: dict[str, Any] = {"vector": [float(v) for v in vector], "k": int(k)}
    clauses = filter_clauses(filters)
    if clauses:
        knn["filter"] = {"bool": {"filter": clauses}}
    return {"knn": {VECTOR_FIELD: knn}}


def search_body(vector: Sequence[float], k: int, filters: Mapping[str, Any] | None = None,
                text: str | None = None) -> dict[str, Any]:
    """A vector search (text None) or a hybrid search (lexical `text` + vector), both filtered."""
    source = {"excludes": [VECTOR_FIELD]}
    if text is None:
        return {"size": int(k), "_source": source, "query": knn_query(vector, k, filters)}
    lexical: dict[str, Any] = {"bool": {"must": [{"multi_match": {"query": text, "fields": ["name^2", "description"]}}]}}
    clauses = filter_clauses(filters)
    if clauses:
        lexical["bool"]["filter"] = clauses
    return {"size": int(k), "_source": source,
            "query": {"hybrid": {"queries": [lexical, knn_query(vector, k, filters)]}}}


def cosine_from_score(score: float) -> float:
    """Undo OpenSearch's innerproduct score (p + 1 for p > 0, 1 / (1 - p) otherwise)."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def results_from(response: Mapping[str, Any], hybrid: bool) -> list[dict[str, Any]]:
    """The search results in Loom's shape; vector scores become cosines, hybrid scores stay fused scores."""
    results = []
    for hit in response.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        score = float(hit.get("_score") or 0.0)
        results.append({"id": str(source.get("product_id", hit.get("_id"))),
                        "score": round(score if hybrid else cosine_from_score(score), 6),
                        "name": source.get("name", ""), "attributes": source.get("attributes", {})})
    return results


class OpenSearchError(StatusError):
    """OpenSearch answered with an error status; the message carries its error type and reason."""


@dataclass
class OpenSearchClient:
    """Signed JSON requests to one domain or collection endpoint (https://...)."""

    endpoint: str
    region: str
    kind: str = "domain"  # or "serverless"
    credentials: Any = None  # botocore credentials; None: the default chain (the Lambda role)
    timeout_s: float = 5.0
    send: Callable[[urllib.request.Request, float], Any] = field(default=None, repr=False)  # type: ignore

    def __post_init__(self):
        if self.kind not in SERVICES:
            raise ValueError(f"kind must be one of {sorted(SERVICES)}, got {self.kind!r}")
        parsed = urllib.parse.urlsplit(self.endpoint)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ValueError(f"endpoint must be an https:// URL, got {self.endpoint!r}")
        self.endpoint = self.endpoint.rstrip("/")
        self.send = self.send or (lambda request, timeout: urllib.request.urlopen(request, timeout=timeout))  # noqa: S310

    @property
    def service(self) -> str:
        return SERVICES[self.kind]

    @property
    def serverless(self) -> bool:
        return self.kind == "serverless"

    def _credentials(self):
        if self.credentials is None:
            import botocore.session

            self.credentials = botocore.session.get_session().get_credentials()
            if self.credentials is None:
                raise StatusError(500, "no AWS credentials to sign OpenSearch requests with")
        return self.credentials

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                ndjson: bool = False) -> dict[str, Any]:
        """Send one SigV4-signed request; the JSON answer, or OpenSearchError with OpenSearch's reason."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.endpoint + "/" + path.lstrip("/")
        if params:
            url += "?" + urllib.parse.urlencode(sorted(params.items()))
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json",
                   # Serverless requires the payload hash as a header; a domain accepts it.
                   "x-amz-content-sha256": hashlib.sha256(data).hexdigest()}
        signed = AWSRequest(method=method, url=url, data=data or None, headers=headers)
        SigV4Auth(self._credentials(), self.service, self.region).add_auth(signed)
        prepared = urllib.request.Request(url, data=data or None, method=method, headers=dict(signed.headers.items()))
        try:
            with self.send(prepared, self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            raise OpenSearchError(502 if exc.code >= 500 else exc.code,
                                  f"OpenSearch {method} {path} answered {exc.code}: {_reason(raw)}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise OpenSearchError(504, f"OpenSearch {method} {path} did not answer: {exc}") from None
        return json.loads(raw) if raw else {}

    # -- index management and ingestion --------------------------------------------------------------
    def ensure_pipeline(self) -> None:
        """Create or replace the hybrid search pipeline (PUT is idempotent)."""
        self.request("PUT", f"_search/pipeline/{HYBRID_PIPELINE}", hybrid_pipeline_body())

    def ensure_index(self, index: str, dimension: int, hybrid: bool = True) -> bool:
        """Create the index (and, when `hybrid`, the hybrid search pipeline) unless it exists; True when created.
        An existing index gets the `content_hash` keyword field (adding a field is a compatible mapping change)."""
        if hybrid:
            self.ensure_pipeline()
        try:
            self.request("HEAD", index)
        except OpenSearchError as exc:
            if exc.status != 404:
                raise
            self.request("PUT", index, index_body(dimension))
            return True
        self.request("PUT", f"{index}/_mapping", {"properties": {HASH_FIELD: {"type": "keyword"}}})
        return False

    def indexed_products(self, index: str) -> dict[str, dict[str | None, int]]:
        """What the index holds: product id -> {content hash (None for documents without one): document count},
        paged through a composite aggregation (every bucket, in a stable order, `after_key` as the cursor)."""
        held: dict[str, dict[str | None, int]] = {}
        after = None
        while True:
            composite: dict[str, Any] = {"size": LIST_PAGE, "sources": [
                {"product_id": {"terms": {"field": "product_id"}}},
                {HASH_FIELD: {"terms": {"field": HASH_FIELD, "missing_bucket": True}}}]}
            if after:
                composite["after"] = after
            answer = self.request("POST", f"{index}/_search", {"size": 0, "aggs": {"held": {"composite": composite}}})
            held_agg = answer.get("aggregations", {}).get("held", {})
            buckets = held_agg.get("buckets", [])
            for bucket in buckets:
                key = bucket["key"]
                held.setdefault(str(key["product_id"]), {})[key.get(HASH_FIELD)] = int(bucket["doc_count"])
            after = held_agg.get("after_key")
            if not buckets or not after:
                return held

    def push(self, index: str, documents: Iterable[Mapping[str, Any]], batch: int = BULK_BATCH) -> dict[str, int]:
        """Make the index hold exactly these product documents (see the module docstring); counts of what was
        done: `indexed`, `unchanged`, `deleted` (documents removed: the old copies of rewritten products on
        Serverless and every document of a product the bundle lacks), `removed_products`, `failed`."""
        wanted = {}
        for doc in documents:
            doc = with_hash(doc)
            wanted[doc["product_id"]] = doc
        held = self.indexed_products(index)
        counts = {"indexed": 0, "unchanged": 0, "deleted": 0, "removed_products": 0, "failed": 0}
        to_write = []
        for pid, doc in wanted.items():
            if held.get(pid) == {doc[HASH_FIELD]: 1}:
                counts["unchanged"] += 1
            else:
                to_write.append(doc)
        # Write first, delete after: an interruption never leaves a product the bundle holds missing for longer
        # than its own rewrite, and the next push finishes the job from what the index then holds.
        for start in range(0, len(to_write), batch):
            chunk = to_write[start:start + batch]
            old = self._documents_of(index, {d["product_id"]: held.get(d["product_id"], {}) for d in chunk})
            self._bulk(index, chunk, old, counts)
        stale = {pid: hashes for pid, hashes in held.items() if pid not in wanted}
        counts["removed_products"] = len(stale)
        pids = sorted(stale)
        for start in range(0, len(pids), batch):
            chunk = {pid: stale[pid] for pid in pids[start:start + batch]}
            self._bulk(index, [], self._documents_of(index, chunk, every=True), counts)
        if counts["failed"]:
            raise OpenSearchError(502, f"OpenSearch refused {counts['failed']} of the operations pushed: {counts}; "
                                       "push again to finish")
        return counts

    def _documents_of(self, index: str, held: Mapping[str, Mapping[str | None, int]], every: bool = False
                      ) -> list[str]:
        """The `_id`s to delete for these products. Domain: the product id is the `_id` (a rewrite overwrites it;
        only a removal deletes it). Serverless: the generated ids, looked up by `product_id`."""
        present = {pid: sum(hashes.values()) for pid, hashes in held.items() if hashes}
        if not self.serverless:
            return sorted(present) if every else []
        ids: list[str] = []
        pids = sorted(present)
        start = 0
        while start < len(pids):  # as many products a search as fit the result window
            group, total = [], 0
            while start < len(pids) and (not group or total + present[pids[start]] <= MAX_RESULT_WINDOW):
                group.append(pids[start])
                total += present[pids[start]]
                start += 1
            ids += self.document_ids(index, group, size=min(total, MAX_RESULT_WINDOW))
        return ids

    def _bulk(self, index: str, documents: Sequence[Mapping[str, Any]], delete_ids: Sequence[str],
              counts: dict[str, int]) -> None:
        lines = [json.dumps({"delete": {"_index": index, "_id": doc_id}}) for doc_id in delete_ids]
        for document in documents:
            action = {"_index": index} if self.serverless else {"_index": index, "_id": document["product_id"]}
            lines += [json.dumps({"index": action}), json.dumps(document, ensure_ascii=False)]
        if not lines:
            return
        answer = self.request("POST", "_bulk", ("\n".join(lines) + "\n").encode(), ndjson=True)
        for item in answer.get("items", []):
            (operation, outcome), = item.items()
            ok = outcome.get("status", 500) < 300 or (operation == "delete" and outcome.get("status") == 404)
            key = "failed" if not ok else "deleted" if operation == "delete" else "indexed"
            counts[key] += 1

    def document_ids(self, index: str, product_ids: Sequence[str], size: int | None = None) -> list[str]:
        """The generated `_id`s of documents holding these product ids (Serverless: no custom `_id`)."""
        answer = self.request("POST", f"{index}/_search", {
            "size": size if size is not None else min(10 * len(product_ids), MAX_RESULT_WINDOW), "_source": False,
            "query": {"terms": {"product_id": list(product_ids)}}})
        return [hit["_id"] for hit in answer.get("hits", {}).get("hits", [])]

    def search(self, index: str, vector: Sequence[float], k: int, filters: Mapping[str, Any] | None = None,
               text: str | None = None) -> list[dict[str, Any]]:
        """Top-k products: vector search, or hybrid when `text` is given; filters inside the k-NN query."""
        params = {"search_pipeline": HYBRID_PIPELINE} if text is not None else None
        answer = self.request("POST", f"{index}/_search", search_body(vector, k, filters, text), params=params)
        return results_from(answer, hybrid=text is not None)

    def count(self, index: str) -> int:
        return int(self.request("GET", f"{index}/_count").get("count", 0))


def document(row: Mapping[str, Any], vector: Sequence[float]) -> dict[str, Any]:
    """The OpenSearch document of one product-table row (see search_index.ProductRow.to_dict)."""
    return {"product_id": str(row["id"]), "name": row.get("name", ""), "description": row.get("description", ""),
            "image": row.get("image", ""), "attributes": dict(row.get("attributes") or {}),
            VECTOR_FIELD: [round(float(v), 7) for v in vector]}


def with_hash(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document with its `content_hash`: a sha256 of its other fields (sorted keys), so a push can tell an
    unchanged product from one to rewrite."""
    body = {k: v for k, v in doc.items() if k != HASH_FIELD}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return {**body, HASH_FIELD: hashlib.sha256(canonical.encode("utf-8")).hexdigest()}


def _reason(raw: bytes) -> str:
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return raw[:300].decode("utf-8", "replace")
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('reason')}"
    return str(error)[:300]
