"""An endpoint whose CLIP artifact holds a half-written first index bundle does not go InService: /ping answers
500 with the folder named (SageMaker keeps an endpoint whose container fails /ping out of service), instead of
a healthy endpoint that answers every search "no index bundle". tests/runtime/test_search_index_first_build.py
checks the decision itself; here it reaches the HTTP health check through the server's loader."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from inference.server.app import create_app
from loom.artifact import index_dir_of
from runtime import clip_service, search_index
from runtime.search_index import ProductRow, index_manifest, write_bundle


def test_ping_is_500_naming_the_folder_of_a_half_written_first_index(tmp_path, monkeypatch):
    vectors = np.eye(3, 8, dtype=np.float32)
    rows = [ProductRow(str(i), f"shirt {i}", {}, f"{i}.jpg") for i in range(3)]
    real = os.replace

    def interrupted(source, target):  # the first rename is the commit: a crash before it
        raise OSError("interrupted before the commit")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_index.os, "replace", interrupted)
        with pytest.raises(OSError):
            write_bundle(index_dir_of(tmp_path), vectors, rows, index_manifest({"base_model": "test", "checksum": "sha256:abc"}, 8, 3))
    assert search_index.os.replace is real

    embedder = SimpleNamespace(model_id="stub", dimension=8, model_info={"checksum": "sha256:abc"})
    monkeypatch.setattr(clip_service.ClipEmbedder, "load", classmethod(lambda cls, model_dir, device=None: embedder))
    monkeypatch.setattr(clip_service.ZeroShot, "load",
                        classmethod(lambda cls, model_dir, embedder: SimpleNamespace(summary="stub")))
    client = create_app(predictor_factory=lambda: clip_service.ClipService.load(tmp_path)).test_client()
    deadline = time.monotonic() + 10
    while client.get("/ping").status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    response = client.get("/ping")
    assert response.status_code == 500, response.json
    assert str(index_dir_of(tmp_path)) in response.json["error"] and "loom index build" in response.json["error"]
