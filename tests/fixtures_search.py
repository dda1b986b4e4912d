"""Session fixtures for search: a synthetic catalog, the tiny CLIP trained on it, and its index bundle.

Built once per test session (about 1.5 min on one quiet core, most of it the tiny CLIP's training) and
shared by every search test. Registered in conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

SEARCH_CATALOG_PRODUCTS = 400
SEARCH_CATALOG_SEED = 5
TINY_CLIP_STEPS = 500


@dataclass(frozen=True)
class SearchBuild:
    catalog_dir: Path
    clip_dir: Path      # the CLIP artifact (tiny stand-in), with its index bundle in clip_dir/index
    index_dir: Path
    summary: dict
    index_manifest: dict


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> SearchBuild:
    from loom.artifact import index_dir_of
    from training.search.clip_model import build_tiny_clip
    from training.search.index_build import build
    from training.synthetic import write_catalog

    root = tmp_path_factory.mktemp("search")
    catalog = root / "catalog"
    write_catalog(catalog, products=SEARCH_CATALOG_PRODUCTS, seed=SEARCH_CATALOG_SEED)
    clip_dir = root / "clip"
    summary = build_tiny_clip(catalog, clip_dir, steps=TINY_CLIP_STEPS, seed=0)
    index_manifest = build(catalog, clip_dir, index_dir_of(clip_dir), progress=False)
    return SearchBuild(catalog, clip_dir, index_dir_of(clip_dir), summary, index_manifest)


@pytest.fixture(scope="session")
def tiny_clip_server(tiny_clip, tmp_path_factory):
    """The `serve` program on 127.0.0.1 with the tiny CLIP artifact, started once for every test that talks
    to it over HTTP (search, zero-shot tasks, the API end to end); images up to 1 MP."""
    from inference.server.local_server import LocalServer

    with LocalServer(tiny_clip.clip_dir, log_path=tmp_path_factory.mktemp("clip_serve") / "serve.log",
                     env={"MAX_IMAGE_PIXELS": "1000000"}) as running:
        running.wait_ready(180)
        yield running
