"""The `loom` front door: every subcommand answers --help, and unknown ones fail with the list."""

from __future__ import annotations

import subprocess
import sys

import pytest

from operations import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "operations.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert f"  {name}" in result.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_has_help_named_after_the_front_door(name, capsys):
    assert cli.main([name, "--help"]) == 0  # argparse's SystemExit(0) becomes the exit status
    out = capsys.readouterr().out
    assert out.startswith(f"usage: loom {name}") or f"loom {name}" in out.splitlines()[0], out[:200]


def test_an_unknown_command_is_refused_with_the_list():
    result = run("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr and "prepare" in result.stderr


def test_the_front_door_imports_nothing_heavy():
    code = ("import sys; from operations import cli; cli.usage(); "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"
