"""Every `loom` command, given a user's mistake, ends in one line `loom <command>: error: ...` and exit 2,
never a Python traceback; bad input is refused before anything is created; `--version` answers; a closed
pipe ends quietly. Nothing here can reach AWS: credentials and Region are absent, the endpoint override
points at a closed port on 127.0.0.1 and the instance metadata service is disabled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from operations import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


def bad_inputs(tmp: Path) -> dict[str, list[str]]:
    missing = str(tmp / "missing")
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    not_a_repo = tmp / "not-a-model"
    not_a_repo.mkdir(exist_ok=True)
    (not_a_repo / "README.txt").write_text("nothing here")
    shard = tmp / "shard.jsonl"
    shard.write_text('{"id": "1", "image": "aGVsbG8="}\n')
    return {
        "synthetic": ["--out", str(tmp / "cat"), "--products", "0"],
        "prepare": ["--catalog", missing, "--out", str(tmp / "prep")],
        "tiny-base": ["--catalog", missing, "--out", str(tmp / "base")],
        "train": ["--sm-root", str(tmp / "nonexistent" / "opt_ml")],
        "report": ["--model", missing, "--images", str(empty)],
        "stage-base": ["--base-model", missing, "--bucket", "loom-data-123456789012-us-east-1"],
        "launch": ["--image-uri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-training:abc",
                   "--role-arn", "arn:aws:iam::123456789012:role/loom-training", "--bucket",
                   "loom-data-123456789012-us-east-1", "--data", missing],
        "batch": ["--catalog", missing, "--model-name", "loom-model", "--bucket", "loom-data-123456789012-us-east-1"],
        "preflight": ["--model-id", "not a model id!"],
        "tiny-clip": ["--catalog", str(empty), "--out", str(tmp / "clip")],
        "clip-artifact": ["--base", str(not_a_repo), "--out", str(tmp / "clip-artifact")],
        "index": ["remove", "--index", missing, "--ids", "1"],
        "search-demo": ["--catalog", missing, "--no-serve"],
        "search-eval": ["--model", missing, "--catalog", missing],
        "demo": ["--catalog", missing],
        "async": ["submit", "--endpoint", "loom-async", "--bucket", "loom-data-123456789012-us-east-1",
                  "--shard", str(shard)],
        "rollout": ["--endpoint", "loom-endpoint", "--model-data", "s3://b/model.tar.gz"],
    }


def test_every_command_has_a_bad_input_case(tmp_path):
    assert set(bad_inputs(tmp_path)) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_users_mistake_is_one_line_and_exit_2(command, tmp_path, capsys, no_aws, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = bad_inputs(tmp_path)[command]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main([command, *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"loom {command}"), err
    assert "error" in lines[-1], err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"loom {command} created {set(after) - set(before)} before refusing its input"


def test_more_bad_inputs_the_issue_names(tmp_path, capsys, no_aws):
    missing = str(tmp_path / "missing")
    for args in (["index", "build", "--catalog", missing, "--model", missing, "--out", str(tmp_path / "i")],
                 ["async", "collect", "--receipt", missing, "--out", str(tmp_path / "o.jsonl")]):
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"loom {args[0]}"), err


def test_a_bug_keeps_its_traceback_and_exit_1(monkeypatch, capsys):
    class Broken:
        @staticmethod
        def main(argv):
            raise ZeroDivisionError("a bug")

    monkeypatch.setitem(sys.modules, "loom_test_broken", Broken)
    monkeypatch.setitem(cli.COMMANDS, "broken", ("loom_test_broken", "a command with a bug"))
    assert cli.main(["broken"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "internal error" in err


def test_version_and_a_closed_pipe():
    run = subprocess.run([sys.executable, "-m", "operations.cli", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("loom ") and run.stderr == ""
    # `loom --help | head -1`: the reader goes away; the command must end quietly (no BrokenPipeError).
    proc = subprocess.Popen([sys.executable, "-m", "operations.cli", "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert b"BrokenPipeError" not in err and b"Traceback" not in err, err


def test_no_message_names_a_module_path_instead_of_the_command():
    """Users type `loom <command>`; messages and usage lines must say that, not `python -m package.module`."""
    offenders = []
    for path in [*ROOT.glob("operations/*.py"), *ROOT.glob("training/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        for stale in ("python -m training.", "python -m operations.", "python -m loom."):
            if stale in text:
                offenders.append(f"{path.relative_to(ROOT)}: {stale}")
    assert offenders == []


def test_training_imports_quietly():
    """bitsandbytes' CPU-kernel warning (printed on every peft import) is not shown to users."""
    run = subprocess.run([sys.executable, "-c", "import training.finetune, peft"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "gemm_4bit" not in run.stderr and "kernels" not in run.stderr, run.stderr
