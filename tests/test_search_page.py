"""The search page of `loom search-demo` on 127.0.0.1: its HTTP routes, then Debian's headless Chromium loading
it with a query typed in (`?q=` fills the box and submits the form), checking the rendered results and taking
a screenshot. Chromium flags as established in ../shared/FACTS.md ("Browser tests")."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from inference.server.local_server import LocalServer
from loom.search_demo import SearchPage

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(tiny_clip, tmp_path_factory):
    with LocalServer(tiny_clip.clip_dir, log_path=tmp_path_factory.mktemp("page") / "serve.log") as server:
        server.wait_ready(180)
        running = SearchPage(tiny_clip.catalog_dir, server.url).start()
        yield running
        running.stop()


def get(url, data=None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


def test_page_images_and_search_routes(page, tiny_clip):
    status, kind, body = get(page.url + "/")
    assert status == 200 and kind.startswith("text/html") and b'id="query"' in body
    first = json.loads((tiny_clip.index_dir / "products.jsonl").read_text().splitlines()[0])
    status, kind, body = get(f"{page.url}/images/{first['id']}.jpg")
    assert status == 200 and kind == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert get(page.url + "/images/..%2Fstyles.csv")[0] == 404  # only images/<id>.jpg is served
    assert get(page.url + "/images/../styles.csv")[0] == 404
    status, _, body = get(page.url + "/search", json.dumps({"text": "green shirt", "k": 3}).encode())
    assert status == 200 and len(json.loads(body)["results"]) == 3
    status, _, body = get(page.url + "/search", json.dumps({"text": ""}).encode())
    assert status == 400 and "error" in json.loads(body)


def test_chromium_types_a_query_and_sees_green_shirts(page, tiny_clip, tmp_path):
    if CHROMIUM is None:
        print("\nSKIP: Debian's chromium is not installed (.ci/run installs it; apt-get install chromium)")
        pytest.skip("SKIP: no chromium binary")
    url = f"{page.url}/?q=green%20shirt"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    ids = re.findall(r'class="product" data-id="([^"]+)"', dom)
    assert len(ids) == 12, dom[-2000:]
    colours = {json.loads(line)["id"]: json.loads(line)["attributes"]["baseColour"]
               for line in (tiny_clip.index_dir / "products.jsonl").read_text().splitlines()}
    assert sum(colours[i] == "Green" for i in ids[:10]) >= 9
    assert "results from the embedded index" in dom
    screenshot = tmp_path / "search.png"
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1200,900", url],
                   capture_output=True, timeout=120)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
