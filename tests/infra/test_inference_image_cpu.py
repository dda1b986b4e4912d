"""The CPU build of the inference image, for a serverless CLIP endpoint, and how CI, the build script and
Terraform name it.

SageMaker Serverless Inference runs on CPUs only and takes container images of at most 10 GB (SageMaker guide,
"Deploy models with Amazon SageMaker Serverless Inference", feature exclusions and container limits:
https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html). containers/inference/Dockerfile
builds on the CUDA PyTorch image by default and on python:3.11-slim with the CPU torch wheel when
BASE_IMAGE=cpu-base; both are tagged by CI and scripts/build_and_push.sh, the CPU one as <tag>-cpu, which the
root module runs for a serverless search endpoint by default (terraform/main.tf local.search_image_tag).

No image is built here (the workspace has no Docker daemon): the Dockerfile is checked structurally with
dockerfile-parse, resolving stages as BuildKit does ("Conditions using build arguments", Docker's
"Advanced Dockerfiles": https://www.docker.com/blog/advanced-dockerfiles-faster-builds-and-smaller-images-using-buildkit-and-multistage-builds/).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
INFERENCE = ROOT / "containers" / "inference" / "Dockerfile"
TRAINING = ROOT / "containers" / "training" / "Dockerfile"
TORCH = "2.13.0"  # pyproject.toml's torch pin


def _stages(dockerfile: Path) -> tuple[dict[str, str], list[tuple[str, str | None, list[dict]]]]:
    """(global ARG defaults, [(FROM image, stage name, instructions of the stage)])."""
    parser = DockerfileParser(str(dockerfile))
    global_args: dict[str, str] = {}
    stages: list[tuple[str, str | None, list[dict]]] = []
    for instruction in parser.structure:
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], name, []))
        elif not stages:
            if kind == "ARG" and "=" in value:
                key, default = value.split("=", 1)
                global_args[key] = default
        else:
            stages[-1][2].append(instruction)
    return global_args, stages


def _resolve(dockerfile: Path, build_args: dict[str, str] | None = None) -> tuple[str, list[list[dict]]]:
    """The image the final stage finally builds on, and the instructions of every stage on the way, first
    stage first: FROM ${ARG} is expanded with the global ARGs, and a name that is an earlier stage's name
    continues from that stage (BuildKit builds only the stages reached this way)."""
    global_args, stages = _stages(dockerfile)
    values = {**global_args, **(build_args or {})}
    by_name = {name: (image, body) for image, name, body in stages if name}
    image, _, body = stages[-1]
    chain = [body]
    for _ in range(len(stages)):
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m[1] or m[2]], image)
        if image not in by_name:
            return image, chain[::-1]
        image, body = by_name[image]
        chain.append(body)
    raise AssertionError(f"{dockerfile}: the stages refer to each other in a loop")


def _runs(chain: list[list[dict]]) -> list[str]:
    return [i["value"] for body in chain for i in body if i["instruction"] == "RUN"]


def test_the_default_build_is_the_cuda_pytorch_image():
    image, chain = _resolve(INFERENCE)
    assert image.startswith("pytorch/pytorch:") and f"{TORCH}-cuda" in image
    assert not any("pip install" in run and "torch==" in run for run in _runs(chain)), "the CUDA base keeps its torch"


def test_the_cpu_build_is_python_slim_with_the_cpu_torch_wheel():
    image, chain = _resolve(INFERENCE, {"BASE_IMAGE": "cpu-base"})
    assert re.fullmatch(r"python:3\.1[1-9]-slim", image), image
    installs = [run for run in _runs(chain) if f'"torch=={TORCH}"' in run]
    assert len(installs) == 1, _runs(chain)
    # --index-url, never --extra-index-url: with PyPI beside it pip could take PyPI's CUDA build of torch.
    assert "--index-url" in installs[0] and "--extra-index-url" not in installs[0]
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1] for body in chain for i in body
            if i["instruction"] == "ARG" and "=" in i["value"]}
    assert args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("build_args", [None, {"BASE_IMAGE": "cpu-base"}], ids=["cuda", "cpu"])
def test_both_builds_share_the_app_layers_and_check_the_torch_pin(build_args):
    _, chain = _resolve(INFERENCE, build_args)
    final = chain[-1]
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert copies[:5] == ["pyproject.toml README.md ./", "loom/ loom/", "inference/__init__.py inference/__init__.py",
                          "runtime/ runtime/", "inference/server/ inference/server/"], copies
    serve_install = next(run for run in _runs([final]) if "transformers==" in run)
    assert f"torch.__version__.startswith('{TORCH}')" in serve_install and '"torch' not in serve_install
    assert [i["value"] for i in final if i["instruction"] == "USER"] == ["${SERVE_USER}"]
    assert [i["value"] for i in final if i["instruction"] == "CMD"] == ['["serve"]']


def test_another_image_can_still_be_the_base():
    image, _ = _resolve(INFERENCE, {"BASE_IMAGE": "registry.example.com/torch:2.13.0-cpu"})
    assert image == "registry.example.com/torch:2.13.0-cpu"
    assert _resolve(TRAINING)[0].startswith("pytorch/pytorch:")


# dependabot-core's Docker file parser reads FROM lines with this pattern (docker/lib/dependabot/docker/
# file_parser.rb, FROM_LINE) and keeps only those with a tag or digest; FROM ${BASE_IMAGE} does not match
# (dependabot-core issue #2057), so each base must have a literal FROM of its own.
_NAME = r"(?:[a-z\d]+(?:(?:[._]|__|[-]*)[a-z\d]+)*)"
_DEPENDABOT_FROM = re.compile(rf"^FROM\s+(--platform=\S+\s+)?(?P<image>{_NAME}(?:/{_NAME})*)(?::(?P<tag>[\w][\w.-]{{0,127}}))?",
                              re.IGNORECASE)


@pytest.mark.parametrize("dockerfile", [INFERENCE, TRAINING], ids=["inference", "training"])
def test_dependabot_sees_every_base_image(dockerfile):
    seen = {m["image"]: m["tag"] for line in dockerfile.read_text().splitlines()
            if (m := _DEPENDABOT_FROM.match(line)) and m["tag"]}
    _, stages = _stages(dockerfile)
    external = {image.split(":")[0] for image, _, _ in stages if not image.startswith("$")}
    stage_names = {name for _, name, _ in stages if name}
    external -= stage_names
    assert external and external <= set(seen), (external, seen)
    expected = {"pytorch/pytorch", "python"} if dockerfile == INFERENCE else {"pytorch/pytorch"}
    assert set(seen) == expected


# ---------------------------------------------------------------------------------------------
# CI, the build script and Terraform agree on the CPU build's stage and tag
# ---------------------------------------------------------------------------------------------
def _workflow() -> dict:
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on:` as True
    return document


def test_ci_builds_and_release_tags_the_cpu_build():
    jobs = _workflow()["jobs"]
    build = jobs["build-and-push"]
    entries = build["strategy"]["matrix"]["include"]
    assert {(e["image"], e["base_stage"], e["tag_suffix"]) for e in entries} == {
        ("training", "cuda-base", ""), ("inference", "cuda-base", ""), ("inference", "cpu-base", "-cpu")}
    for entry in entries:  # every stage named exists in that image's Dockerfile
        _, stages = _stages(ROOT / "containers" / entry["image"] / "Dockerfile")
        assert entry["base_stage"] in {name for _, name, _ in stages}, entry
    steps = {step.get("name"): step for step in build["steps"]}
    with_ = steps["Build and push"]["with"]
    assert with_["build-args"] == "BASE_IMAGE=${{ matrix.base_stage }}"
    assert build["env"]["IMAGE_TAG"] == "${{ github.sha }}${{ matrix.tag_suffix }}"
    # Separate BuildKit caches: the two inference builds share no base layers.
    assert "${{ matrix.tag_suffix }}" in with_["cache-from"] and "${{ matrix.tag_suffix }}" in with_["cache-to"]
    release = jobs["release-tag"]
    assert {(e["image"], e["tag_suffix"]) for e in release["strategy"]["matrix"]["include"]} == {
        (e["image"], e["tag_suffix"]) for e in entries}
    assert release["env"]["IMAGE_TAG"] == "${{ github.sha }}${{ matrix.tag_suffix }}"
    tag_step = next(s for s in release["steps"] if s.get("name") == "Add the release tag")
    assert tag_step["env"]["RELEASE_TAG"] == "${{ github.ref_name }}${{ matrix.tag_suffix }}"


def test_terraform_runs_the_tag_ci_pushes():
    main_tf = (ROOT / "terraform" / "main.tf").read_text()
    assert '"${var.inference_image_tag}-cpu"' in main_tf
    assert 'image_uri                = "${module.registry.repository_urls["inference"]}:${local.search_image_tag}"' in main_tf


STUB_DOCKER = """#!/bin/bash
echo "docker $*" >> "$STUB_LOG"
[[ $1 == login ]] && cat >/dev/null
exit 0
"""
STUB_AWS = """#!/bin/bash
echo "aws $*" >> "$STUB_LOG"
case "$1 $2" in
  "sts get-caller-identity") echo 123456789012 ;;
  "ecr get-login-password") echo password ;;
  "ecr describe-images") exit 254 ;;  # not built yet
esac
exit 0
"""


def _run_script(tmp_path: Path, images: str | None) -> tuple[subprocess.CompletedProcess, list[str]]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, text in (("docker", STUB_DOCKER), ("aws", STUB_AWS)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{stubs}:{os.environ['PATH']}", "HOME": str(tmp_path), "STUB_LOG": str(log)}
    if images is not None:
        env["LOOM_IMAGES"] = images
    result = subprocess.run([str(ROOT / "scripts" / "build_and_push.sh"), "123456789012", "us-east-1", "abc123"],
                            capture_output=True, text=True, check=False, env=env)
    builds = [line for line in (log.read_text().splitlines() if log.exists() else []) if "buildx build" in line]
    return result, builds


def test_build_script_builds_the_three_images_with_their_stages(tmp_path):
    result, builds = _run_script(tmp_path, None)
    assert result.returncode == 0, result.stderr
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    expected = [("training", "cuda-base", "loom-training:abc123"), ("inference", "cuda-base", "loom-inference:abc123"),
                ("inference", "cpu-base", "loom-inference:abc123-cpu")]
    assert len(builds) == 3, builds
    for line, (folder, stage, tag) in zip(builds, expected, strict=True):
        assert f"--file containers/{folder}/Dockerfile" in line and f"--build-arg BASE_IMAGE={stage}" in line, line
        assert f"--tag {registry}/{tag} " in line and "--platform linux/amd64" in line, line
    assert result.stdout.split() == [f"{registry}/{tag}" for _, _, tag in expected]


def test_build_script_builds_only_the_images_asked_for(tmp_path):
    result, builds = _run_script(tmp_path, "inference-cpu")
    assert result.returncode == 0, result.stderr
    assert len(builds) == 1 and "BASE_IMAGE=cpu-base" in builds[0] and "loom-inference:abc123-cpu" in builds[0]
    refused, builds = _run_script(tmp_path, "inference gpu")
    assert refused.returncode == 2 and "unknown image 'gpu'" in refused.stderr and not builds
