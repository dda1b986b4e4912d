"""A loopback OpenSearch stub that answers with recorded OpenSearch responses (fixtures/opensearch/README.md
cites their sources), and an independent SigV4 signature for checking the requests it receives
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from botocore.credentials import Credentials

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opensearch"
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def serve_json(answer, *, unquote_path: bool = False):
    """(server, url) of an HTTP server on 127.0.0.1 whose every request becomes a record {"method", "path",
    "query", "headers", "body"} passed to `answer(record) -> (status, JSON body or None)`; a status of None
    drops the connection before any answer. Shared by the recorded-response stub and the stateful fake."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path) if unquote_path else url.path
            record = {"method": self.command, "path": path, "query": url.query,
                      "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            status, reply = answer(record)
            if status is None:
                self.close_connection = True
                return
            data = b"" if reply is None else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Stub:
    """A fake OpenSearch on 127.0.0.1 that records every request and answers from the fixtures."""

    def __init__(self, serverless: bool = False, index_exists: bool = False):
        self.requests: list[dict] = []
        self.serverless, self.index_exists = serverless, index_exists
        self.documents: dict[str, dict] = {}  # _id -> source, to check idempotency
        self.generated = 0
        self.server, self.url = serve_json(self._record)

    def _record(self, record):
        self.requests.append(record)
        return self.route(record)

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


