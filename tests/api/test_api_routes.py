"""One list of routes: the handler's, the route table of docs/api.md and the routes Terraform puts on the HTTP
API (modules/api, modules/search) are the same set, so a route cannot be served but undocumented, documented
but never deployed, or deployed to a Lambda that answers 404."""

from __future__ import annotations

import re
from pathlib import Path

from inference.api import handler

ROOT = Path(__file__).resolve().parents[2]
ROUTE = re.compile(r'"(POST /[a-z]+)"')


def handler_routes() -> set[str]:
    return {f"{r.method} {r.path}" for r in handler.app._static_routes}


def test_the_handler_serves_every_documented_route():
    doc = (ROOT / "docs" / "api.md").read_text()
    table = doc.split("## Routes", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `(POST /[a-z]+)` \|", table, re.M))
    assert documented == handler_routes() == {"POST /describe", "POST /attributes", "POST /search", "POST /tags",
                                              "POST /interrogate", "POST /restyle"}
    # Each route beyond the two of the Request/Response sections has a section of its own.
    sections = {"POST /tags": doc, "POST /interrogate": doc, "POST /restyle": doc,
                "POST /search": (ROOT / "docs" / "search.md").read_text()}
    assert set(sections) == handler_routes() - {"POST /describe", "POST /attributes"}
    for route, text in sections.items():
        assert re.search(rf"^## .*`{route}`", text, re.M), route


def test_terraform_deploys_exactly_the_handlers_routes():
    api = (ROOT / "terraform" / "modules" / "api").glob("*.tf")
    search = ROOT / "terraform" / "modules" / "search" / "main.tf"
    deployed = {r for f in [*api, search] for r in ROUTE.findall(f.read_text())}
    assert deployed == handler_routes()
