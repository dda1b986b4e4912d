"""`loom search-demo`: product search offline, end to end, with a page to try it in a browser.

synthetic catalog -> tiny CLIP (a stand-in, cached) -> index bundle -> the `serve` program on 127.0.0.1
-> three text queries and one photo query through the API's search code, that photo's zero-shot tags and
interrogated prompts through the API's /tags and /interrogate code -> the search page on 127.0.0.1
(type a query or drop a photo, narrow it with attribute filters, pick the vector or hybrid mode: thumbnails
with scores and attributes; any error answer is shown as one readable line). Ctrl-C stops it.

    loom search-demo [--work DIR] [--catalog DIR] [--port 8765] [--no-serve]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path(__file__).with_name("search_page.html")
MAX_BODY_BYTES = 8 * 1024 * 1024
TEXT_QUERIES = ("green shirt", "red striped long sleeves", "black checked sleeveless")
_IMAGE_PATH = re.compile(r"^/images/([A-Za-z0-9_-]{1,64})\.jpg$")


MAX_FACET_VALUES = 40  # attributes with more distinct values (names, ids) are not offered as filter suggestions


def facets_of(products_jsonl: Path) -> dict[str, list[str]]:
    """{attribute: sorted values} of an index bundle's products.jsonl: the filter suggestions of the page."""
    values: dict[str, set[str]] = {}
    for line in Path(products_jsonl).read_text(encoding="utf-8").splitlines():
        for name, value in json.loads(line).get("attributes", {}).items():
            values.setdefault(name, set()).add(str(value))
    return {name: sorted(found) for name, found in sorted(values.items()) if len(found) <= MAX_FACET_VALUES}


class SearchPage:
    """The page, the catalog's thumbnails, GET /facets (the filter suggestions) and POST /search (answered
    by inference/api/visual/search.py in local mode against the CLIP server at `endpoint_url`) on 127.0.0.1 only."""

    def __init__(self, catalog_dir: Path, endpoint_url: str, port: int = 0,
                 facets: dict[str, list[str]] | None = None):
        from inference.api.visual.search import SearchSettings

        self.catalog_dir = Path(catalog_dir)
        self.facets = facets or {}
        self.settings = SearchSettings(None, endpoint_url, "embedded", None, "loom-products", "us-east-1")
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    return self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                if path == "/facets":
                    return self._send(200, json.dumps(page.facets).encode(), "application/json")
                match = _IMAGE_PATH.match(path)
                photo = page.catalog_dir / "images" / f"{match.group(1)}.jpg" if match else None
                if photo is not None and photo.is_file():
                    return self._send(200, photo.read_bytes(), "image/jpeg")
                self._send(404, b'{"error": "not found"}', "application/json")

            def do_POST(self):
                if self.path != "/search":
                    return self._send(404, b'{"error": "use POST /search"}', "application/json")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    return self._send(413, b'{"error": "the request is too large"}', "application/json")
                status, answer = page.answer(self.rfile.read(length).decode("utf-8", "replace"))
                self._send(status, json.dumps(answer).encode(), "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: str) -> tuple[int, dict[str, Any]]:
        from inference.api.visual.search import parse_search, search
        from loom.errors import StatusError

        try:
            return 200, search(self.settings, parse_search(body, False))
        except StatusError as exc:
            return exc.status, exc.body()

    def start(self) -> "SearchPage":
        threading.Thread(target=self.server.serve_forever, name="loom-search-page", daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def print_results(title: str, status: int, answer: dict[str, Any], top: int = 5) -> None:
    print(f"\n  {title}")
    if status != 200:
        print(f"    error {status}: {answer.get('error')}")
        return
    for row in answer["results"][:top]:
        attributes = ", ".join(f"{k}={row['attributes'].get(k, '-')}" for k in ("baseColour", "Pattern", "Sleeve Length"))
        print(f"    {row['score']:.3f}  {row['id']}  {row['name']}  ({attributes})")


def print_zero_shot(page: SearchPage, photo: str, product: dict[str, Any]) -> None:
    """The same photo's zero-shot tags (calibrated: stated or withheld) and its interrogated prompts, through
    the API's code for POST /tags and POST /interrogate."""
    from inference.api.visual.tags import interrogate, parse_interrogate_route, parse_tags_route, tags

    truth = ", ".join(f"{k}={product['attributes'].get(k, '-')}" for k in ("baseColour", "Pattern", "Sleeve Length"))
    print(f"\n  zero-shot tags of that photo (true: {truth})")
    answer = tags(page.settings, parse_tags_route(json.dumps({"image": photo}), False))
    for name, tag in answer["tags"].items():
        print(f"    stated    {name} = {tag['value']}  (p {tag['probability']:.2f})")
    for name, tag in answer["withheld"].items():
        print(f"    withheld  {name} (top {tag['value']!r}, p {tag['probability']:.2f}: {tag['reason']})")
    print("\n  prompts written from that photo (interrogation)")
    for mode in ("fast", "classic", "best"):
        body = json.dumps({"image": photo, "mode": mode, "max_terms": 5})
        print(f"    {mode:<8}{interrogate(page.settings, parse_interrogate_route(body, False))['prompt']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom search-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "search-demo", help="working folder")
    parser.add_argument("--catalog", type=Path, help="a catalog in the Kaggle layout (default: a synthetic one)")
    parser.add_argument("--steps", type=int, default=900, help="tiny CLIP training steps")
    parser.add_argument("--port", type=int, default=8765, help="port of the search page on 127.0.0.1")
    parser.add_argument("--no-serve", action="store_true", help="run the queries and stop")
    args = parser.parse_args(argv)
    from inference.server.local_server import LocalServer
    from loom.artifact import IndexPaths, index_dir_of, is_artifact
    from training import synthetic
    from training.search import clip_model, index_build

    catalog = args.catalog or args.work / "catalog"
    if args.catalog is None and not (catalog / "styles.csv").is_file():
        synthetic.write_catalog(catalog, products=600, seed=3)
    model = args.work / f"tiny-clip-v{clip_model.TINY_CLIP_VERSION}-{args.steps}"
    if not is_artifact(model):
        print(f"training the tiny CLIP (a stand-in) on {catalog} ...", flush=True)
        print(f"  {clip_model.build_tiny_clip(catalog, model, steps=args.steps)}")
    manifest = index_build.build(catalog, model, index_dir_of(model))
    print(f"index: {manifest['count']} products, {manifest['dimension']}-d")
    with LocalServer(model, log_path=args.work / "serve.log") as server:
        server.wait_ready(300)
        page = SearchPage(catalog, server.url, args.port, facets_of(IndexPaths.of(index_dir_of(model)).products))
        for text in TEXT_QUERIES:
            print_results(f"text: {text!r}", *page.answer(json.dumps({"text": text, "k": 5})))
        first = json.loads(IndexPaths.of(index_dir_of(model)).products.read_text().splitlines()[0])
        photo = shopper_photo_b64(catalog / first["image"])
        print_results(f"photo: a shopper's photo of product {first['id']} ({first['name']})",
                      *page.answer(json.dumps({"image": photo, "k": 5})))
        print_zero_shot(page, photo, first)
        if args.no_serve:
            page.server.server_close()
            return 0
        page.start()
        print(f"\nsearch page: {page.url}/  (Ctrl-C stops it)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            page.stop()
    return 0


def shopper_photo_b64(path: Path) -> str:
    """A catalog photo cropped, resized and re-encoded, as a shopper's photo would be."""
    import random

    from PIL import Image

    from training.search.search_eval import shopper_photo

    with Image.open(path) as image:
        photo = shopper_photo(image.convert("RGB"), random.Random(1))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    sys.exit(main())
