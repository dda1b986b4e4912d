"""terraform/README.md against the modules' real variables, outputs and routes: it fails when a variable
or output is missing, when a module has no row, or when an API route is not named (the README once said
the API had two routes while it had six)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
README = TF_DIR / "README.md"

hcl2 = pytest.importorskip("hcl2", reason="SKIP: python-hcl2 (dev extra) is needed to read the modules")


def _names(path: Path, kind: str) -> list[str]:
    if not path.is_file():
        return []
    return [name.strip('"') for block in hcl2.loads(path.read_text()).get(kind, []) for name in block]


def _module_dirs() -> list[Path]:
    return [TF_DIR, *sorted(p for p in (TF_DIR / "modules").iterdir() if (p / "main.tf").is_file())]


def _section(text: str, directory: Path) -> str:
    title = "root module (`terraform/`)" if directory == TF_DIR else f"`modules/{directory.name}`"
    start = text.index(f"### Inputs and outputs of the {title}")
    end = text.find("### Inputs and outputs of the ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_readme_lists_every_variable_and_output_of_every_module() -> None:
    text = README.read_text()
    for directory in _module_dirs():
        section = _section(text, directory)
        for name in _names(directory / "variables.tf", "variable"):
            assert f"| `{name}` |" in section, f"terraform/README.md lacks input {name} of {directory.relative_to(ROOT)}"
        for name in _names(directory / "outputs.tf", "output"):
            assert f"| `{name}` |" in section, f"terraform/README.md lacks output {name} of {directory.relative_to(ROOT)}"


def test_readme_names_nothing_the_modules_do_not_have() -> None:
    text = README.read_text()
    for directory in _module_dirs():
        section = _section(text, directory)
        listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M))
        real = set(_names(directory / "variables.tf", "variable")) | set(_names(directory / "outputs.tf", "output"))
        assert listed <= real, f"terraform/README.md lists {sorted(listed - real)} that {directory.relative_to(ROOT)} does not have"


def test_readme_has_a_row_for_every_module() -> None:
    text = README.read_text()
    for directory in _module_dirs()[1:]:
        assert re.search(rf"^\| `modules/{directory.name}` \| .+ \|$", text, flags=re.M), f"no row for modules/{directory.name}"
    assert "| `modules/search` |" in text


def test_readme_names_all_six_api_routes() -> None:
    routes = set()
    for tf_file in [*(TF_DIR / "modules" / "api").glob("*.tf"), *(TF_DIR / "modules" / "search").glob("*.tf")]:
        routes.update(re.findall(r'"(POST /[a-z]+)"', tf_file.read_text()))
    assert routes == {"POST /describe", "POST /attributes", "POST /restyle", "POST /search", "POST /tags", "POST /interrogate"}
    text = README.read_text()
    for route in sorted(routes):
        assert f"`{route}`" in text, f"terraform/README.md does not name {route}"
    assert "six routes" in text and "two routes" not in text


def test_readme_generated_part_is_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "terraform_readme.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
