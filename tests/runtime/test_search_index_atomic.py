"""Index bundle writes are atomic: interrupted at any rename, a bundle loads as the old one or the new one,
never as new embeddings beside old products; the next write finishes or discards the interrupted one; and a
bundle whose files do not match its manifest's checksums (a mix of two writes) is refused on load.

POSIX rename(2) replaces the target atomically (https://pubs.opengroup.org/onlinepubs/9799919799/functions/rename.html;
Python's os.replace: https://docs.python.org/3/library/os.html#os.replace): each single rename is the unit
of atomicity, so every rename is interrupted in turn here."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from runtime import search_index
from runtime.search_index import (BundleError, ProductRow, index_manifest, load_embeddings, settle_bundle,
                                           write_bundle)
from loom.artifact import IndexPaths

EMBEDDER = {"base_model": "test", "checksum": "sha256:abc"}


def bundle(n: int, seed: int, prefix: str):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ProductRow(str(i), f"{prefix} {i}", {"baseColour": "Green"}, f"images/{i}.jpg") for i in range(n)]
    return vectors, rows, index_manifest(EMBEDDER, 8, n)


OLD = bundle(5, 0, "old")
NEW_SAME_SIZE = bundle(5, 1, "new")  # `index add` replacing rows: same shape, so a shape check cannot tell
NEW_LARGER = bundle(7, 2, "new")


def which(index_dir) -> str:
    """'old' or 'new' when the bundle loads as exactly one of them; anything else fails the test."""
    embeddings, rows, _ = load_embeddings(index_dir)
    for name, (vectors, expected_rows, _) in (("old", OLD), ("new", NEW_SAME_SIZE), ("new", NEW_LARGER)):
        if rows == expected_rows and np.array_equal(embeddings, vectors):
            return name
    raise AssertionError("the bundle loaded as neither the old nor the new one")


class Interrupted(OSError):
    pass


def interrupt_rename(monkeypatch, at: int) -> list:
    """Make the `at`-th os.replace call (1-based) raise, as a crash or a full disk would, before renaming."""
    calls: list = []
    real = os.replace

    def replace(source, target):
        calls.append((os.fspath(source), os.fspath(target)))
        if len(calls) == at:
            raise Interrupted(f"interrupted at rename {at}")
        return real(source, target)

    monkeypatch.setattr(search_index.os, "replace", replace)
    return calls


def leftovers(index_dir) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir() if p.name.endswith((".tmp", ".partial")))


def test_a_whole_write_makes_four_renames_and_leaves_nothing_pending(tmp_path, monkeypatch):
    write_bundle(tmp_path, *OLD)
    calls = interrupt_rename(monkeypatch, at=0)  # count only
    write_bundle(tmp_path, *NEW_SAME_SIZE)
    assert [os.path.basename(target) for _, target in calls] == [
        "index_manifest.json.tmp", "embeddings.npy", "products.jsonl", "index_manifest.json"]
    assert which(tmp_path) == "new" and leftovers(tmp_path) == []
    files = json.loads(IndexPaths.of(tmp_path).manifest.read_text())["files"]
    assert set(files) == {"embeddings.npy", "products.jsonl"} and all(len(f["sha256"]) == 64 for f in files.values())


@pytest.mark.parametrize("new", [NEW_SAME_SIZE, NEW_LARGER], ids=["same size", "larger"])
@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_interrupted_at_each_rename_the_bundle_is_old_or_new_and_the_next_write_settles_it(tmp_path, monkeypatch,
                                                                                           at, new):
    write_bundle(tmp_path, *OLD)
    interrupt_rename(monkeypatch, at)
    with pytest.raises(Interrupted):
        write_bundle(tmp_path, *new)
    # Rename 1 publishes the new manifest (the commit): interrupted there, the bundle is still the old one.
    assert which(tmp_path) == ("old" if at == 1 else "new")
    monkeypatch.undo()
    settle_bundle(tmp_path)  # what the next write does first
    assert which(tmp_path) == ("old" if at == 1 else "new") and leftovers(tmp_path) == []


@pytest.mark.parametrize("first, second", [(2, 1), (3, 2), (2, 3)])
def test_an_interrupted_settle_is_finished_by_the_next_one(tmp_path, monkeypatch, first, second):
    write_bundle(tmp_path, *OLD)
    interrupt_rename(monkeypatch, first)
    with pytest.raises(Interrupted):
        write_bundle(tmp_path, *NEW_LARGER)
    monkeypatch.undo()
    interrupt_rename(monkeypatch, second)
    with pytest.raises(Interrupted):
        settle_bundle(tmp_path)
    assert which(tmp_path) == "new"
    monkeypatch.undo()
    write_bundle(tmp_path, *NEW_SAME_SIZE)  # a later write settles the earlier one, then writes its own
    assert which(tmp_path) == "new" and load_embeddings(tmp_path)[1] == NEW_SAME_SIZE[1] and leftovers(tmp_path) == []


def test_interrupted_while_writing_the_new_files_the_bundle_stays_old(tmp_path, monkeypatch):
    write_bundle(tmp_path, *OLD)

    def crash(path, products):
        path.write_text('{"id": "0", "name": "half a ta')
        raise Interrupted("disk full")

    monkeypatch.setattr(search_index, "write_products", crash)
    with pytest.raises(Interrupted):
        write_bundle(tmp_path, *NEW_SAME_SIZE)
    assert which(tmp_path) == "old" and "embeddings.npy.tmp" in leftovers(tmp_path)
    monkeypatch.undo()
    write_bundle(tmp_path, *NEW_LARGER)
    assert which(tmp_path) == "new" and leftovers(tmp_path) == []


def test_an_interrupted_index_remove_leaves_the_old_or_the_new_bundle(tmp_path, monkeypatch):
    from training.search.index_build import remove

    for at in (1, 2, 3, 4):
        folder = tmp_path / str(at)
        write_bundle(folder, *OLD)
        interrupt_rename(monkeypatch, at)
        with pytest.raises(Interrupted):
            remove(folder, {"1", "3"})
        monkeypatch.undo()
        _, rows, _ = load_embeddings(folder)
        assert [r.id for r in rows] == (["0", "1", "2", "3", "4"] if at == 1 else ["0", "2", "4"])


def test_load_refuses_a_mix_of_two_writes(tmp_path):
    # What a rename-by-rename write used to leave when interrupted after its first rename: the new
    # embeddings beside the old products and manifest, same shape, so the count check passed.
    old, new = tmp_path / "old", tmp_path / "new"
    write_bundle(old, *OLD)
    write_bundle(new, *NEW_SAME_SIZE)
    shutil.copy(new / "embeddings.npy", old / "embeddings.npy")
    with pytest.raises(BundleError, match="embeddings.npy is not the file .* mixes two writes"):
        load_embeddings(old)
    write_bundle(old, *OLD)
    shutil.copy(new / "products.jsonl", old / "products.jsonl")
    with pytest.raises(BundleError, match="products.jsonl is not the file"):
        load_embeddings(old)


def test_a_committed_write_with_a_damaged_file_is_refused_not_half_loaded(tmp_path, monkeypatch):
    write_bundle(tmp_path, *OLD)
    interrupt_rename(monkeypatch, 2)
    with pytest.raises(Interrupted):
        write_bundle(tmp_path, *NEW_LARGER)
    monkeypatch.undo()
    with (tmp_path / "products.jsonl.tmp").open("a") as damaged:
        damaged.write("{}\n")
    with pytest.raises(BundleError, match="products.jsonl is not the file"):
        load_embeddings(tmp_path)
    with pytest.raises(BundleError):
        settle_bundle(tmp_path)  # nothing is moved into place from a write that does not check out
    assert (tmp_path / "index_manifest.json.tmp").exists()


def test_a_bundle_written_before_checksums_still_loads(tmp_path):
    write_bundle(tmp_path, *OLD)
    manifest_path = IndexPaths.of(tmp_path).manifest
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]
    manifest_path.chmod(0o644)
    manifest_path.write_text(json.dumps(manifest))
    assert which(tmp_path) == "old"


def test_a_manifest_without_count_or_with_a_huge_declared_shape_is_a_bundle_error(tmp_path):
    """Hostile bundles: a manifest missing its count (was a KeyError, reported by the CLI as a bug) and an .npy
    whose header declares 1e11 rows with matching checksums (was a 2.9 TiB allocation) are refused as what
    they are."""
    import json

    import numpy as np

    from loom.artifact import IndexPaths
    from runtime.search_index import BundleError, ProductRow, file_digest, index_manifest, load_embeddings, write_bundle

    rows = [ProductRow(id=str(i), name=f"shirt {i}", attributes={}, image=f"{i}.jpg") for i in range(3)]
    vectors = np.eye(3, 8, dtype=np.float32)
    write_bundle(tmp_path, vectors, rows, index_manifest({"base_model": "tiny-clip", "checksum": "0"}, 8, 3))
    paths = IndexPaths.of(tmp_path)
    manifest = json.loads(paths.manifest.read_text())
    broken = {k: v for k, v in manifest.items() if k != "count"}
    paths.manifest.chmod(0o644)
    paths.manifest.write_text(json.dumps(broken))
    with pytest.raises(BundleError, match="'count' and 'dimension'"):
        load_embeddings(tmp_path)
    # A header that declares (1e11, 8) float32, with checksums that match the file.
    header = np.lib.format.header_data_from_array_1_0(vectors)
    header["shape"] = (100_000_000_000, 8)
    paths.embeddings.chmod(0o644)
    with paths.embeddings.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(vectors.tobytes())
    manifest["count"] = 100_000_000_000
    manifest["files"][paths.embeddings.name] = file_digest(paths.embeddings)
    paths.manifest.write_text(json.dumps(manifest))
    with pytest.raises(BundleError):
        load_embeddings(tmp_path)
