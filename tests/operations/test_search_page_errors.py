"""The search page (operations/search_page.html) in Debian's headless Chromium against a scripted server: the
request its controls build (filters, mode, k) and what it shows for every kind of answer, including error
bodies that are not the API's JSON (a proxy's HTML 502, an empty 500, API Gateway's {"message": ...}, a 200
that is not JSON, a server that is gone). No model: the CLIP side is tested in test_search_page.py."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from headless_chromium import HeadlessChromium
from operations.search_demo import PAGE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSWER = {"results": [{"id": "7", "score": 0.91, "name": "Loom Men Green Shirt", "attributes": {"baseColour": "Green"}}],
          "index": {"backend": "embedded", "size": 40}}


class ScriptedServer:
    """Serves the real page; answers each POST /search with the next (status, content type, body) and records
    the request bodies. No /facets: the page must work without filter suggestions."""

    def __init__(self):
        self.answers: list[tuple[int, str, bytes]] = []
        self.requests: list[dict] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, kind, body):
                self.send_response(status)
                if kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.split("?")[0] == "/":
                    return self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
                self._send(404, "text/plain", b"not here")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                scripted.requests.append(json.loads(self.rfile.read(length)))
                self._send(*scripted.answers.pop(0))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One browser for the module (starting Chromium costs seconds of CPU); each test opens the page afresh."""
    if CHROMIUM is None:
        print("\nSKIP: Debian's chromium is not installed (.ci/run installs it; apt-get install chromium)")
        pytest.skip("SKIP: no chromium binary")
    with HeadlessChromium(CHROMIUM, tmp_path_factory.mktemp("profile")) as running:
        yield running


@pytest.fixture
def browser(chromium):
    server = ScriptedServer()
    chromium.open(server.url + "/")
    yield chromium, server
    server.stop()


def submit(chromium, text="green shirt"):
    chromium.evaluate(f"document.getElementById('status').textContent = ''; "
                      f"document.getElementById('query').value = {json.dumps(text)}")
    chromium.click("#query")
    chromium.press_enter()
    return chromium.wait_for("(s => s && s !== 'searching...' && s)(document.getElementById('status').textContent)")


def test_the_controls_build_the_api_request(browser):
    chromium, server = browser
    server.answers.append((200, "application/json", json.dumps(ANSWER).encode()))
    assert submit(chromium) == "1 results from the embedded index of 40 products"
    assert server.requests[-1] == {"k": 12, "text": "green shirt"}  # defaults: vector mode, no filters
    assert chromium.evaluate("document.querySelectorAll('.product').length") == 1

    chromium.click("#add-filter")  # focus moves to the new row's attribute box
    chromium.type_text("baseColour")
    chromium.click(".filter:last-child .filter-values")
    chromium.type_text("Green, Blue")
    chromium.click("#add-filter")
    chromium.type_text("Pattern")
    chromium.click(".filter:last-child .filter-values")
    chromium.type_text("Striped")
    chromium.click("#add-filter")  # an empty row is left out
    chromium.evaluate("document.getElementById('mode').value = 'hybrid'; document.getElementById('k').value = '5'")
    server.answers.append((200, "application/json", json.dumps(ANSWER).encode()))
    submit(chromium, "striped shirt")
    assert server.requests[-1] == {"k": 5, "text": "striped shirt", "mode": "hybrid",
                                   "filters": {"baseColour": ["Green", "Blue"], "Pattern": "Striped"}}

    chromium.click(".filter .remove-filter")
    server.answers.append((200, "application/json", json.dumps(ANSWER).encode()))
    submit(chromium, "striped shirt")
    assert server.requests[-1]["filters"] == {"Pattern": "Striped"}


@pytest.mark.parametrize("status,kind,body,shown", [
    (400, "application/json", b'{"error": "\'k\' must be an integer from 1 to 50, got 99"}',
     "'k' must be an integer from 1 to 50, got 99"),
    (502, "text/html", b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
     b"</center><hr><center>nginx</center></body></html>", "HTTP 502 Bad Gateway: 502 Bad Gateway nginx"),
    (500, None, b"", "HTTP 500 Internal Server Error with an empty body"),
    (503, "application/json", b'{"message":"Service Unavailable"}', "HTTP 503 Service Unavailable: Service Unavailable"),
    (504, "application/json", b"[1, 2]", "HTTP 504 Gateway Timeout: [1,2]"),
    (413, "text/plain", b"request entity too large", "HTTP 413 Request Entity Too Large: request entity too large"),
    (200, "text/html", b"<p>maintenance</p>", "HTTP 200: the answer is not a search result (<p>maintenance</p>)"),
    (200, "application/json", b"", "HTTP 200: the answer is not a search result (empty body)"),
    (200, "application/json", b'{"error": null}', 'HTTP 200: the answer is not a search result ({"error": null})'),
])
def test_every_error_body_is_one_readable_line(browser, status, kind, body, shown):
    chromium, server = browser
    server.answers.append((200, "application/json", json.dumps(ANSWER).encode()))
    submit(chromium)  # results on the page first: an error must clear them
    server.answers.append((status, kind, body))
    assert submit(chromium) == shown
    assert chromium.evaluate("[document.getElementById('status').className, "
                             "document.querySelectorAll('.product').length]") == ["error", 0]


def test_a_server_that_is_gone_is_said(browser):
    chromium, server = browser
    server.stop()
    assert submit(chromium).startswith("could not reach the search server: ")
