"""`pip install .[ops]` is enough for an operator's laptop: the AWS commands start without torch, transformers,
Pillow, numpy, peft or Flask. Checked in a fresh interpreter in which importing any of those fails (as it would
where `.[ops]` alone is installed), and against the extra's own list in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "PIL", "numpy", "peft", "flask", "matplotlib", "bitsandbytes", "safetensors")
BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed by .[ops]", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["loom", *sys.argv[1:]]
from operations.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("argv", [["preflight", "--help"], ["launch", "--help"], ["batch", "--help"],
                                  ["async", "--help"], ["rollout", "--help"], ["stage-base", "--help"],
                                  ["--version"], ["--help"]])
def test_operator_commands_start_without_the_ml_stack(argv):
    run = subprocess.run([sys.executable, "-c", BLOCKER, *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "usage" in run.stdout.lower() or run.stdout.startswith("loom "), run.stdout


def test_a_command_that_needs_the_ml_stack_says_so_in_one_line():
    """The blocker works (it would catch a heavy import), and the front door turns it into one line."""
    for argv in (["tiny-base", "--catalog", "x", "--out", "y"], ["index", "--help"]):
        run = subprocess.run([sys.executable, "-c", BLOCKER, *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and "which is not installed here" in run.stderr, run.stderr


def test_the_ops_extra_is_small_and_has_what_the_commands_import():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {spec.split(">")[0].split("=")[0].split("[")[0].strip() for spec in extras["ops"]}
    assert names == {"boto3", "tqdm"}  # tqdm: the catalog reader's progress bars (loom batch --catalog)


def test_the_lambda_zip_builds_with_plain_python():
    """scripts/package_lambda.py imports nothing of the ML stack (make tf-serving runs it with the system Python)."""
    run = subprocess.run([sys.executable, "-c", BLOCKER.replace("from operations.cli import main\nsys.exit(main())",
                                                                "import runpy; sys.argv=['package_lambda.py', '--help']; "
                                                                "runpy.run_path('scripts/package_lambda.py', run_name='__main__')")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
