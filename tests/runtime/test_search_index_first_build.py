"""A server must not read a half-written first index bundle as "no index".

`write_bundle` commits a bundle by renaming its new manifest to the pending name (runtime/search_index.py). A
first-ever `loom index build` interrupted before that rename leaves pending data files and no manifest: the
folder holds an index the operator meant to serve, and an endpoint that loaded "no index" would answer every
search with a 400 that hides the cause. Interrupted after the rename, the bundle is committed and loads as
it is, read-only (a served model folder is not the server's to change). The renames are interrupted one by
one as in tests/runtime/test_search_index_atomic.py (os.replace is the unit of atomicity: POSIX rename(2),
https://pubs.opengroup.org/onlinepubs/9799919799/functions/rename.html)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from loom.artifact import index_dir_of
from runtime import clip_service, search_index
from runtime.search_index import BundleError, ProductRow, SearchIndex, has_bundle, index_manifest, write_bundle

CHECKSUM = "sha256:abc"


def new_bundle(n: int = 4):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(i), f"shirt {i}", {"baseColour": "Green"}, f"images/{i}.jpg") for i in range(n)]
    return vectors, rows, index_manifest({"base_model": "test", "checksum": CHECKSUM}, 8, n)


class Interrupted(OSError):
    pass


def first_build_interrupted(index_dir, at: int) -> None:
    """A first-ever write_bundle into `index_dir`, stopped at its `at`-th os.replace (1: the commit)."""
    calls = []
    real = os.replace

    def replace(source, target):
        calls.append(target)
        if len(calls) == at:
            raise Interrupted(f"interrupted at rename {at}")
        return real(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_index.os, "replace", replace)
        with pytest.raises(Interrupted):
            write_bundle(index_dir, *new_bundle())


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_no_folder_or_an_empty_one_is_no_index(tmp_path):
    assert has_bundle(tmp_path / "index") is False
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / ".keep").write_text("")
    assert has_bundle(tmp_path / "index") is False


def test_a_first_build_interrupted_before_its_commit_is_refused_with_the_folder_named(tmp_path):
    index_dir = tmp_path / "index"
    first_build_interrupted(index_dir, at=1)
    before = snapshot(index_dir)
    assert "index_manifest.json" not in before and "index_manifest.json.tmp" not in before
    with pytest.raises(BundleError) as refused:
        has_bundle(index_dir)
    message = str(refused.value)
    assert str(index_dir) in message and "interrupted before it committed" in message
    assert "loom index build" in message and "embeddings.npy.tmp" in message
    assert snapshot(index_dir) == before  # read-only: nothing removed or moved


def test_a_first_build_that_died_while_writing_its_files_is_refused(tmp_path, monkeypatch):
    def crash(path, products):
        path.write_text('{"id": "0", "name": "half a ta')
        raise Interrupted("disk full")

    monkeypatch.setattr(search_index, "write_products", crash)
    with pytest.raises(Interrupted):
        write_bundle(tmp_path, *new_bundle())
    monkeypatch.undo()
    with pytest.raises(BundleError, match="interrupted before it committed"):
        has_bundle(tmp_path)


def test_data_files_without_any_manifest_are_refused(tmp_path):
    write_bundle(tmp_path, *new_bundle())
    (tmp_path / "index_manifest.json").unlink()
    with pytest.raises(BundleError, match="holds no index_manifest.json"):
        has_bundle(tmp_path)


@pytest.mark.parametrize("at", [2, 3, 4])
def test_a_first_build_interrupted_after_its_commit_loads_read_only(tmp_path, at):
    index_dir = tmp_path / "index"
    first_build_interrupted(index_dir, at)
    before = snapshot(index_dir)
    assert "index_manifest.json.tmp" in before  # committed, not settled
    assert has_bundle(index_dir) is True
    index = SearchIndex.load(index_dir)
    vectors, rows, _ = new_bundle()
    assert index.products == rows and np.array_equal(index.embeddings, vectors)
    assert snapshot(index_dir) == before


@pytest.fixture
def stub_model(monkeypatch):
    """ClipService.load with the embedder and zero-shot side stubbed: only the index decision is real."""
    embedder = SimpleNamespace(model_id="stub", dimension=8, model_info={"checksum": CHECKSUM})
    monkeypatch.setattr(clip_service.ClipEmbedder, "load", classmethod(lambda cls, model_dir, device=None: embedder))
    monkeypatch.setattr(clip_service.ZeroShot, "load",
                        classmethod(lambda cls, model_dir, embedder: SimpleNamespace(summary="stub")))


def test_clip_service_refuses_to_start_on_a_half_written_first_index(tmp_path, stub_model):
    first_build_interrupted(index_dir_of(tmp_path), at=1)
    with pytest.raises(BundleError, match=str(index_dir_of(tmp_path))):
        clip_service.ClipService.load(tmp_path)


def test_clip_service_serves_a_committed_unsettled_first_index(tmp_path, stub_model):
    first_build_interrupted(index_dir_of(tmp_path), at=3)
    service = clip_service.ClipService.load(tmp_path)
    assert service.index is not None and service.index.size == 4


def test_clip_service_without_an_index_folder_has_no_index(tmp_path, stub_model):
    assert clip_service.ClipService.load(tmp_path).index is None
