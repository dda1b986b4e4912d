"""Static checks of the deployment code: checkov (Terraform, Dockerfiles, workflows), hadolint,
actionlint and shellcheck, plus the workflow rules the issue asks for (pinned actions, least
permissions, no secrets).

checkov lives in its own virtualenv (`make checkov-venv`; `make test` passes its path in CHECKOV).
A missing tool skips its test with a loud `SKIP:` line naming what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DOCKERFILES = sorted(ROOT.glob("containers/*/Dockerfile"))
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>.*))?")


def _tool(name: str, env_var: str | None = None) -> str | None:
    """A tool from an environment variable, the project venv (beside this Python) or PATH."""
    if env_var and os.environ.get(env_var):
        path = os.environ[env_var]
        return path if Path(path).is_file() and os.access(path, os.X_OK) else None
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(name)


def _checkov() -> str:
    path = _tool("checkov", "CHECKOV") or next(
        (str(p) for p in [ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"] if p.is_file()), None
    )
    if not path:
        pytest.skip("SKIP: checkov not found (set CHECKOV or run `make checkov-venv`)")
    return path


def _require(name: str) -> str:
    path = _tool(name)
    if not path:
        pytest.skip(f"SKIP: {name} not found in the project venv or on PATH (pip install -e '.[dev]')")
    return path


def _json_documents(text: str) -> list[dict]:
    """checkov -o json prints one object, a list, or several documents: return all reports."""
    decoder, reports, index = json.JSONDecoder(), [], 0
    text = text.strip()
    while index < len(text):
        value, end = decoder.raw_decode(text, index)
        reports.extend(value if isinstance(value, list) else [value])
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return reports


@pytest.fixture(scope="session")
def checkov_reports() -> dict[str, subprocess.Popen[str]]:
    """Start the three checkov scans at once (each spends seconds starting up)."""
    checkov = _checkov()
    common = ["--skip-download", "--compact", "--quiet", "-o", "json"]
    scans = {
        "terraform": ["-d", "terraform", "--framework", "terraform", "--skip-path", r"\.terraform"],
        "dockerfile": [*(a for f in DOCKERFILES for a in ("-f", str(f.relative_to(ROOT)))), "--framework", "dockerfile"],
        "github_actions": ["-d", ".github/workflows", "--framework", "github_actions"],
    }
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    return {
        name: subprocess.Popen(
            [checkov, *args, *common], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args in scans.items()
    }


def _checkov_result(checkov_reports: dict[str, subprocess.Popen[str]], name: str) -> None:
    proc = checkov_reports[name]
    stdout, stderr = proc.communicate(timeout=300)
    assert stdout.strip(), f"checkov {name} printed nothing (exit {proc.returncode}):\n{stderr[-3000:]}"
    reports = _json_documents(stdout)
    failed = [
        f"{c['check_id']} {c.get('check_name', '')} at {c.get('file_path')}:{c.get('file_line_range')} ({c.get('resource')})"
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, f"checkov {name}: {len(failed)} failed check(s):\n" + "\n".join(failed)
    passed = sum(report.get("summary", {}).get("passed", 0) for report in reports)
    assert passed > 0, f"checkov {name} checked nothing:\n{stdout[-2000:]}"


def test_checkov_terraform(checkov_reports) -> None:
    _checkov_result(checkov_reports, "terraform")


def test_checkov_dockerfiles(checkov_reports) -> None:
    assert len(DOCKERFILES) >= 2, f"expected containers/training and containers/inference Dockerfiles, found {DOCKERFILES}"
    _checkov_result(checkov_reports, "dockerfile")


def test_checkov_workflows(checkov_reports) -> None:
    assert WORKFLOWS, "no .github/workflows/*.yml"
    _checkov_result(checkov_reports, "github_actions")


def test_every_checkov_skip_is_inline_with_a_reason() -> None:
    files = [*ROOT.glob("terraform/**/*.tf"), *DOCKERFILES, *WORKFLOWS]
    skips = []
    for path in files:
        if ".terraform" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match:
                reason = (match.group("reason") or "").strip()
                where = f"{path.relative_to(ROOT)}:{number} {match.group('check')}"
                assert len(reason.split()) >= 6, f"{where}: a skip needs a reason a reviewer can judge, got {reason!r}"
                skips.append(where)
    # No blanket skips: nothing may switch checks off outside the resource that needs it.
    for config in [ROOT / ".checkov.yml", ROOT / ".checkov.yaml"]:
        assert not config.exists() or "skip-check" not in config.read_text(), f"{config} skips checks globally"


def test_hadolint_dockerfiles() -> None:
    hadolint = _require("hadolint")
    assert len(DOCKERFILES) >= 2, f"expected containers/training and containers/inference Dockerfiles, found {DOCKERFILES}"
    for dockerfile in DOCKERFILES:
        result = subprocess.run(
            [hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0 and not result.stdout.strip(), f"hadolint {dockerfile}:\n{result.stdout}{result.stderr}"


def test_actionlint_workflows() -> None:
    actionlint = _require("actionlint")
    shellcheck = _require("shellcheck")
    assert WORKFLOWS, "no .github/workflows/*.yml"
    result = subprocess.run(
        [actionlint, "-no-color", "-shellcheck", shellcheck, "-pyflakes", "", *map(str, WORKFLOWS)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def _shell_scripts() -> list[Path]:
    candidates = [*ROOT.glob("scripts/*"), *ROOT.glob(".ci/*")]
    scripts = []
    for path in candidates:
        if path.is_file() and (path.suffix == ".sh" or path.read_bytes()[:64].split(b"\n")[0].endswith((b"bash", b"sh"))):
            scripts.append(path)
    return sorted(scripts)


def test_shellcheck_scripts() -> None:
    shellcheck = _require("shellcheck")
    scripts = _shell_scripts()
    assert ROOT / "scripts" / "build_and_push.sh" in scripts
    result = subprocess.run([shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"shellcheck:\n{result.stdout}{result.stderr}"


# ---------------------------------------------------------------------------------------------
# Workflow rules
# ---------------------------------------------------------------------------------------------
def _workflow(name: str) -> dict:
    import yaml

    document = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on:` as True
    return document


def test_actions_are_pinned_to_commit_shas_and_no_secrets_are_used() -> None:
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        for uses in re.findall(r"uses:\s*(\S+)", text):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), f"{workflow.name}: {uses} is not pinned to a commit SHA"
        assert "secrets." not in text, f"{workflow.name} uses secrets; use OIDC and repository variables"


def test_images_workflow_assumes_the_oidc_role_with_least_permissions() -> None:
    workflow = _workflow("images.yml")
    assert workflow["on"]["push"]["branches"] == ["main"] and workflow["on"]["push"]["tags"]
    assert workflow["permissions"] == {"contents": "read"}
    job = workflow["jobs"]["build-and-push"]
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    # training, inference and the inference image's CPU build (tests/infra/test_inference_image_cpu.py)
    assert sorted(entry["image"] for entry in job["strategy"]["matrix"]["include"]) == ["inference", "inference", "training"]
    steps = {step.get("name"): step for step in job["steps"]}
    assert steps["Assume the CI role (OIDC)"]["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    build = steps["Build and push"]["with"]
    assert build["context"] == "." and build["file"] == "containers/${{ matrix.image }}/Dockerfile"
    assert build["tags"].endswith(":${{ env.IMAGE_TAG }}")
    assert job["env"]["IMAGE_TAG"] == "${{ github.sha }}${{ matrix.tag_suffix }}"
    assert build["cache-from"].startswith("type=gha") and build["cache-to"].startswith("type=gha")
    assert "image_uri=" in steps["Image URI"]["run"]
    # Only main is built (the CI role trusts main's OIDC subject); tags never reach the build job.
    assert job["if"] == "github.ref_type == 'branch'" and "environment" not in job


def test_release_tags_go_through_the_protected_environment_only() -> None:
    """The CI role trusts tags only as repo:<owner>/<name>:environment:<env> (terraform
    github_release_environment, a GitHub environment with required reviewers): the job that adds a release
    tag must run in that environment, and does nothing when none is configured. GitHub sets the OIDC subject
    to the environment for any job that names one:
    https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect#example-subject-claims"""
    workflow = _workflow("images.yml")
    job = workflow["jobs"]["release-tag"]
    assert job["environment"] == "${{ vars.LOOM_RELEASE_ENVIRONMENT }}"
    assert job["if"] == "github.ref_type == 'tag' && vars.LOOM_RELEASE_ENVIRONMENT != ''"
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    steps = {step.get("name"): step for step in job["steps"]}
    assert "put-image" in steps["Add the release tag"]["run"] and "docker" not in str(job).lower()


def test_dependabot_updates_actions_python_and_docker_bases() -> None:
    """.github/dependabot.yml covers the pinned actions, the Python dependencies and both Dockerfiles,
    each in a folder that exists (Dependabot options reference:
    https://docs.github.com/en/code-security/dependabot/working-with-dependabot/dependabot-options-reference)."""
    import yaml

    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) >= {"github-actions", "pip", "docker"}
    for ecosystem, update in updates.items():
        assert update["schedule"]["interval"] in {"daily", "weekly", "monthly"}, ecosystem
        for folder in update.get("directories", [update.get("directory")]):
            assert (ROOT / folder.lstrip("/")).is_dir(), f"{ecosystem}: {folder} does not exist"
    assert (ROOT / "pyproject.toml").is_file()
    docker_dirs = {d.lstrip("/") for d in updates["docker"]["directories"]}
    assert docker_dirs == {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("containers/*/Dockerfile")}


def test_ci_workflow_runs_make_test_on_pull_requests() -> None:
    workflow = _workflow("ci.yml")
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read"}
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert ".ci/run" in runs and "make test" in (ROOT / ".ci" / "run").read_text()


def test_build_and_push_script_fails_clearly_without_arguments_or_docker(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "build_and_push.sh"
    assert os.access(script, os.X_OK), "scripts/build_and_push.sh must be executable"
    no_args = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert no_args.returncode == 2 and "usage:" in no_args.stderr
    bad_account = subprocess.run([str(script), "12345", "us-east-1", "abc"], capture_output=True, text=True, check=False)
    assert bad_account.returncode == 2 and "account" in bad_account.stderr
    # A PATH with bash and coreutils but no docker: the script must say so, not fail obscurely.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "git", "dirname", "cat", "env"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    no_docker = subprocess.run(
        [str(bin_dir / "bash"), str(script), "123456789012", "us-east-1", "abc123"],
        capture_output=True, text=True, check=False, env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert no_docker.returncode != 0 and "docker" in no_docker.stderr.lower(), no_docker.stderr
