"""Shared fixtures: a synthetic catalog and a small, untrained model artifact in the real format."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

pytest_plugins = ["fixtures_training", "fixtures_search", "fixtures_api", "report_fixtures", "fixtures_terraform"]


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """Dummy credentials and region for moto in-process; nothing may reach a real account or endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory) -> Path:
    """A 240-product synthetic catalog in the Kaggle layout (written once per test session)."""
    from training.synthetic import write_catalog

    out = tmp_path_factory.mktemp("catalog")
    write_catalog(out, products=240, seed=7)
    return out


@pytest.fixture(scope="session")
def untrained_artifact(tmp_path_factory) -> Path:
    """A model folder in the artifact format (model + processor + manifest) holding an untrained tiny BLIP-2.

    Its answers are meaningless; it is for tests of loading, batching, equivalence and the HTTP contract.
    """
    from training import tiny_base

    out = tmp_path_factory.mktemp("untrained_artifact")
    tiny_base.write_untrained_artifact(out, seed=3)
    return out
