"""Terraform harness: the offline CLI configuration (provider from the machine image's mirror only), a copy
of the module per test, terraform runs that cannot hang, and a moto server on 127.0.0.1 to apply against.

Terraform and the hashicorp/aws provider come with the machine image (never from a registry): tests that
use `require_terraform` skip with a loud `SKIP:` line naming what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


TF_DIR = ROOT / "terraform"


TERRAFORM = shutil.which("terraform") or "/usr/local/bin/terraform"


PLUGIN_MIRROR = Path(os.environ.get("LOOM_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))


AWS_PROVIDER_DIR = PLUGIN_MIRROR / "registry.terraform.io" / "hashicorp" / "aws"


def _missing_tools() -> list[str]:
    missing = []
    if not (Path(TERRAFORM).is_file() and os.access(TERRAFORM, os.X_OK)):
        missing.append("terraform binary (expected on PATH or at /usr/local/bin/terraform)")
    if not any(AWS_PROVIDER_DIR.glob("*/linux_amd64/terraform-provider-aws_*")):
        missing.append(f"hashicorp/aws provider mirror ({AWS_PROVIDER_DIR}/<version>/linux_amd64)")
    return missing


@pytest.fixture(scope="session")
def require_terraform() -> None:
    missing = _missing_tools()
    if missing:
        pytest.skip("SKIP: Terraform checks not run, missing: " + "; ".join(missing))


# ---------------------------------------------------------------------------------------------
# Offline Terraform environment
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tf_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for Terraform: provider from the local mirror only, no AWS credentials at all."""
    cli_config = tmp_path_factory.mktemp("tfcli") / "terraformrc"
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{PLUGIN_MIRROR}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        {
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            # Anything that escapes the endpoint override would try real AWS over HTTPS: send it
            # to a proxy that does not exist. 127.0.0.1 is never proxied.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            # No credentials and an endpoint that refuses connections, for the mock-provider runs.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "none",
            "AWS_SECRET_ACCESS_KEY": "none",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
    )
    return env


def _copy_module(dest: Path) -> Path:
    """Copy terraform/ without local state or init output, so tests never touch a real working dir."""
    shutil.copytree(
        TF_DIR,
        dest,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "terraform.tfstate*", "*.tfplan"),
    )
    return dest


def _tf(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [TERRAFORM, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        stderr += f"\n[test] terraform {args[0]} killed after {timeout} s"
    finally:
        _kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode if proc.returncode is not None else -9, stdout, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop provider plugins a terraform command left behind (`terraform test` leaks them)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _ok(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"


# ---------------------------------------------------------------------------------------------
# Real apply / plan / destroy against moto on 127.0.0.1
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def moto_server():
    from moto_harness import start_moto_server

    server, url = start_moto_server()
    assert url.startswith("http://127.0.0.1:")
    try:
        yield url
    finally:
        # moto keeps its backends per process, not per server: empty them so the next test starts clean.
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
        server.stop()


def moto_tf_env(tf_env: dict[str, str], url: str) -> dict[str, str]:
    """The offline Terraform environment, with AWS pointed at the moto server at `url` only."""
    from moto_harness import aws_env

    env = aws_env(url, base=tf_env)
    for key in ("TF_CLI_CONFIG_FILE", "CHECKPOINT_DISABLE", "TF_IN_AUTOMATION", "TF_INPUT", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        env[key] = tf_env[key]
    return env


def _boto(url: str):
    import boto3

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    return lambda service: session.client(service, endpoint_url=url)


def _statements(document: str | dict) -> list[dict]:
    doc = json.loads(document) if isinstance(document, str) else document
    return doc["Statement"]


def _resources(statements: list[dict], action: str) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            found.update(resources)
    return found


