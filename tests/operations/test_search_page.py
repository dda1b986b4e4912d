"""The search page of `loom search-demo` on 127.0.0.1: its HTTP routes, then Debian's headless Chromium driven
as a shopper would (tests/headless_chromium.py): it clicks the search box, types a query, presses Enter,
checks the rendered results against the index and takes a screenshot."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from headless_chromium import HeadlessChromium
from operations.search_demo import SearchPage

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(tiny_clip, tiny_clip_server):
    running = SearchPage(tiny_clip.catalog_dir, tiny_clip_server.url).start()
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
    indexed = {p["id"]: p for p in map(json.loads, (tiny_clip.index_dir / "products.jsonl").read_text().splitlines())}
    with HeadlessChromium(CHROMIUM, tmp_path / "profile") as browser:
        browser.open(page.url + "/")
        assert browser.evaluate("document.querySelectorAll('.product').length") == 0
        browser.click("#query")
        assert browser.evaluate("document.activeElement.id") == "query"
        browser.type_text("green shirt")
        browser.press_enter()
        status = browser.wait_for("document.querySelectorAll('.product').length > 0 && "
                                  "document.querySelectorAll('.product img').length === "
                                  "[...document.querySelectorAll('.product img')].filter(i => i.complete).length && "
                                  "document.getElementById('status').textContent")
        cards = browser.evaluate("""[...document.querySelectorAll('.product')].map(card => ({
            id: card.dataset.id, score: card.querySelector('.score').textContent,
            attributes: card.querySelector('.attributes').textContent,
            image: card.querySelector('img').naturalWidth > 0, alt: card.querySelector('img').alt}))""")
        typed = browser.evaluate("[document.getElementById('query').value, location.search]")
        screenshot = browser.screenshot(tmp_path / "search.png")
    assert typed == ["green shirt", ""]  # typed into the box and submitted in place, not a ?q= link
    assert status == f"12 results from the embedded index of {len(indexed)} products"
    assert len(cards) == 12 and all(card["image"] for card in cards)
    scores = []
    for card in cards:
        product = indexed[card["id"]]
        score, name = card["score"].split("  ", 1)
        scores.append(float(score))
        assert name == product["name"] == card["alt"]
        assert card["attributes"] == " · ".join(f"{k}: {v}" for k, v in product["attributes"].items())
    assert scores == sorted(scores, reverse=True)
    assert sum(indexed[card["id"]]["attributes"]["baseColour"] == "Green" for card in cards[:10]) >= 9
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    print(f"\nscreenshot: {screenshot}")
