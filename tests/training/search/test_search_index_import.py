"""`loom index import` skips and counts bad Batch Transform lines instead of aborting, and says where they are.

Eight malformed-line files (the six that used to abort the whole import: a truncated line, a list, a string
embedding, a ragged array, a list of objects, a 5,000-digit number; and two that were already skipped: a
wrong-size vector and a job error), plus lines that break other assumptions (invalid UTF-8, deep nesting,
numbers as strings, booleans, an id that is an object). Python's int parser refuses more than 4,300 digits
with a ValueError and json.loads raises RecursionError on deep nesting, neither a JSONDecodeError
(https://docs.python.org/3/library/stdtypes.html#int-max-str-digits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.search_index import load_embeddings
from loom.artifact import KIND_CLIP, MANIFEST_FILE, MANIFEST_VERSION
from operations import index as index_ops
from training.search import index_build
from training.catalog import DEFAULT_ARTICLE_TYPES, read_catalog

DIMENSION = 4


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory) -> Path:
    """A CLIP artifact's manifest and a weight file: all `import` reads (it never loads the model)."""
    model = tmp_path_factory.mktemp("clip")
    (model / MANIFEST_FILE).write_text(json.dumps({
        "manifest_version": MANIFEST_VERSION, "kind": KIND_CLIP, "embedding_dimension": DIMENSION,
        "normalized": True, "prompt_templates": ["a photo of {}"], "base_model": "tiny-clip"}))
    (model / "model.safetensors").write_bytes(b"weights")
    return model


@pytest.fixture(scope="module")
def ids(catalog_dir) -> list[str]:
    products = read_catalog(catalog_dir, article_types=DEFAULT_ARTICLE_TYPES, attributes=None,
                            require_attributes=False).products
    return [p.id for p in products[:4]]


def good(pid: str, seed: int = 0) -> str:
    vector = np.random.default_rng(seed).standard_normal(DIMENSION).round(4).tolist()
    return json.dumps({"id": pid, "embedding": vector})


BAD_LINES = {  # name -> (line, reason)
    "truncated line": ('{"id": "X", "embedding": [0.1, 0.2', "malformed_line"),
    "a list": ('[0.1, 0.2, 0.3, 0.4]', "malformed_line"),
    "embedding is a string": ('{"id": "X", "embedding": "abc"}', "bad_embedding"),
    "ragged array": ('{"id": "X", "embedding": [[0.1, 0.2], [0.3]]}', "bad_embedding"),
    "list of objects": ('[{"id": "X"}, {"id": "Y"}]', "malformed_line"),
    "5,000-digit number": ('{"id": "X", "embedding": [' + "9" * 5000 + ', 0, 0, 0]}', "malformed_line"),
    "wrong size": ('{"id": "X", "embedding": [0.1, 0.2, 0.3]}', "bad_embedding"),
    "job error": ('{"id": "X", "error": "cannot identify image file"}', "batch_error"),
    # beyond the eight
    "invalid UTF-8": (b'{"id": "X", "embedding": "\xff\xfe"}', "malformed_line"),
    "deep nesting": ('{"id": "X", "embedding": ' + "[" * 100_000 + "]" * 100_000 + "}", "malformed_line"),
    "numbers as strings": ('{"id": "X", "embedding": ["0.1", "0.2", "0.3", "0.4"]}', "bad_embedding"),
    "booleans": ('{"id": "X", "embedding": [true, false, true, true]}', "bad_embedding"),
    "infinite": ('{"id": "X", "embedding": [1e999, 0, 0, 0]}', "bad_embedding"),
    "zero vector": ('{"id": "X", "embedding": [0, 0, 0, 0]}', "bad_embedding"),
    "id is an object": ('{"id": {"a": 1}, "embedding": [0.1, 0.2, 0.3, 0.4]}', "malformed_line"),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_one_bad_line_is_skipped_counted_and_located(tmp_path, catalog_dir, clip_model, ids, name):
    line, reason = BAD_LINES[name]
    line = line.replace("X", ids[1]) if isinstance(line, str) else line.replace(b"X", ids[1].encode())
    source = tmp_path / "embeddings.jsonl"
    with source.open("wb") as out:
        for part in (good(ids[0]), line, good(ids[2], 2), "", good(ids[3], 3)):
            out.write((part.encode() if isinstance(part, str) else part) + b"\n")
    result = index_build.import_embeddings(source, catalog_dir, clip_model, tmp_path / "index")
    assert result["count"] == 3 and result["skipped"][reason] == 1
    assert result["skipped_lines"] == {reason: [2]}
    embeddings, rows, _ = load_embeddings(tmp_path / "index")
    assert [r.id for r in rows] == [ids[0], ids[2], ids[3]]
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)


def test_every_bad_line_together_and_the_report_is_bounded(tmp_path, catalog_dir, clip_model, ids, capsys):
    source = tmp_path / "embeddings.jsonl"
    with source.open("wb") as out:
        out.write((good(ids[0]) + "\n").encode())
        for _ in range(3):
            for line, _reason in BAD_LINES.values():
                out.write((line.encode() if isinstance(line, str) else line) + b"\n")
        out.write((good(ids[0]) + "\n").encode())  # a duplicate id
    index_ops.main(["import", "--embeddings", str(source), "--catalog", str(catalog_dir), "--model",
                      str(clip_model), "--out", str(tmp_path / "index")])
    manifest = json.loads((tmp_path / "index" / "index_manifest.json").read_text())
    expected = {}
    for _line, reason in BAD_LINES.values():
        expected[reason] = expected.get(reason, 0) + 3
    assert manifest["count"] == 1 and manifest["skipped"]["duplicate_id"] == 1
    for reason, count in expected.items():
        assert manifest["skipped"][reason] == count
    assert all(len(numbers) <= index_build.MAX_REPORTED_LINES for numbers in manifest["skipped_lines"].values())
    assert manifest["skipped_lines"]["malformed_line"][:3] == [2, 3, 6]
    printed = capsys.readouterr().out
    assert "malformed_line at lines 2, 3, 6" in printed and "more" in printed
    assert len(printed) < 2000  # bounded, whatever the file holds
