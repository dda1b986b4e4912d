"""The search page of `loom search-demo` on 127.0.0.1: its HTTP routes, then Debian's headless Chromium driven
as a shopper would (tests/headless_chromium.py): it clicks the search box, types a query, presses Enter,
checks the rendered results against the index, narrows the search with attribute filters, asks for the hybrid
mode (which the embedded index refuses with a readable error) and takes a screenshot. What the page shows for
other error bodies: test_search_page_errors.py."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from headless_chromium import HeadlessChromium
from operations.search_demo import SearchPage, facets_of

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(tiny_clip, tiny_clip_server):
    running = SearchPage(tiny_clip.catalog_dir, tiny_clip_server.url,
                         facets=facets_of(tiny_clip.index_dir / "products.jsonl")).start()
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
    status, kind, body = get(page.url + "/facets")
    facets = json.loads(body)
    assert status == 200 and kind == "application/json" and "Green" in facets["baseColour"]
    assert all(len(values) <= 40 for values in facets.values())


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

        # Filters: the attribute box suggests the index's attributes (GET /facets), the value box its values.
        browser.click("#add-filter")
        browser.type_text("baseColour")
        suggested = browser.evaluate("[[...document.querySelectorAll('#filter-fields option')].map(o => o.value), "
                                     "[...document.querySelector('.filter datalist').options].map(o => o.value)]")
        browser.click(".filter .filter-values")
        browser.type_text("Red, Blue")
        browser.click("#query")
        browser.evaluate("document.getElementById('query').select()")
        browser.type_text("striped shirt")
        browser.evaluate("document.getElementById('status').textContent = ''")
        browser.press_enter()
        filtered_status = browser.wait_for("(s => s && s !== 'searching...' && s)("
                                           "document.getElementById('status').textContent)")
        filtered = browser.evaluate("[...document.querySelectorAll('.product')].map(card => card.dataset.id)")

        # Hybrid mode needs OpenSearch: the demo's embedded index refuses it, and the page says why.
        browser.evaluate("document.getElementById('mode').value = 'hybrid'; "
                         "document.getElementById('status').textContent = ''")
        browser.click("#query")
        browser.press_enter()
        hybrid = browser.wait_for("(s => s && s !== 'searching...' && s)(document.getElementById('status').textContent)")
        hybrid_state = browser.evaluate("[document.getElementById('status').className, "
                                        "document.querySelectorAll('.product').length]")
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

    assert "baseColour" in suggested[0] and {"Red", "Blue", "Green"} <= set(suggested[1])
    red_or_blue = [p for p in indexed.values() if p["attributes"].get("baseColour") in ("Red", "Blue")]
    assert filtered_status == f"{min(12, len(red_or_blue))} results from the embedded index of {len(indexed)} products"
    assert filtered and all(indexed[i]["attributes"]["baseColour"] in ("Red", "Blue") for i in filtered)
    assert "'mode': 'hybrid' needs an OpenSearch backend" in hybrid and hybrid_state == ["error", 0]
    print(f"\nscreenshot: {screenshot}")
