"""The model artifact is readable by the inference image's non-root user, by construction.

safetensors 0.8 writes `model.safetensors` with mode 0600 whatever the umask, and `tar` (SageMaker's
model.tar.gz) keeps the mode, so a root-produced artifact was unreadable for uid 1000 (issue 12, item 1).
`training.merge.save_merged` now ends with `loom.artifact.make_world_readable`; JSON files of the artifact
are written readable too. The Dockerfile copies a baked artifact root-owned and readable
(tests/infra/test_static_checks.py and test_inference_dockerfile_serves_as_non_root_with_a_readable_model below).
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from loom.artifact import make_world_readable, write_json

ROOT = Path(__file__).resolve().parents[2]


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def test_save_merged_leaves_every_file_world_readable_even_under_umask_077(tmp_path):
    from training import tiny_base
    from training.merge import save_merged

    processor = tiny_base.build_processor(["Colour: Red", "Pattern: Solid"])
    model = tiny_base.build_model(processor, seed=1)
    previous = os.umask(0o077)
    try:
        out = save_merged(model, processor, tmp_path / "merged")
        write_json(out / "loom_manifest.json", {"manifest_version": 1})
    finally:
        os.umask(previous)
    found = modes(out)
    assert "model.safetensors" in found and "loom_manifest.json" in found
    unreadable = {name: oct(mode) for name, mode in found.items() if mode & 0o444 != 0o444}
    untraversable = {name: oct(mode) for name, mode in found.items()
                     if (out / name).is_dir() and mode & 0o111 != 0o111}
    assert (unreadable, untraversable) == ({}, {})
    # SageMaker's model.tar.gz keeps these modes: what /opt/ml/model holds inside the container.
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as archive:
        archive.add(out, arcname=".")
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        assert all(member.mode & 0o444 == 0o444 for member in archive.getmembers())


def test_make_world_readable_adds_read_bits_and_keeps_the_rest(tmp_path):
    (tmp_path / "sub").mkdir(mode=0o700)
    secret = tmp_path / "sub" / "weights.bin"
    secret.write_bytes(b"x")
    secret.chmod(0o600)
    make_world_readable(tmp_path)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o755


def test_inference_dockerfile_serves_as_non_root_with_a_readable_model():
    parser = DockerfileParser(str(ROOT / "containers" / "inference" / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    copies = [value for kind, value in instructions if kind == "COPY" and "/opt/loom/model" in value]
    assert copies and all("--chown=root:root" in c and "--chmod=0755" in c for c in copies), copies
    users = [value for kind, value in instructions if kind == "USER"]
    assert users[-1] == "${SERVE_USER}"
    assert "SERVE_USER=1000" in [value for kind, value in instructions if kind == "ARG"]


@pytest.mark.slow
def test_every_file_the_train_program_leaves_in_the_artifact_is_world_readable(trained_artifact):
    # The evaluation files and the report are written after the merge; the whole folder must be readable
    # by the serving container's non-root user, not only what save_merged wrote.
    unreadable = [p for p in trained_artifact.model_dir.rglob("*")
                  if not (p.stat().st_mode & (stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)))]
    assert not unreadable, unreadable
