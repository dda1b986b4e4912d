"""Loom's layering, "imports run one way", held for every import, lazy ones included:

    loom (contract, standard library only) <- runtime <- (inference.server, training) <- operations
    inference.api (the Lambda) imports only loom, the standard library, Powertools and boto3/botocore

Each rule is checked by reading every module's source (ast), so an import inside a function counts as much
as one at the top: a lazy import still ends up in the deployable that runs it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("loom", "runtime", "inference", "training", "operations")

# package (dotted prefix) -> project packages it may import (besides itself)
ALLOWED_PROJECT = {
    "loom": set(),
    "runtime": {"loom"},
    "inference.server": {"loom", "runtime"},
    "training": {"loom", "runtime"},
    "inference.api": {"loom"},
    "operations": {"loom", "runtime", "inference.server", "inference.api", "training"},
}
# third-party libraries each deployable may use (the standard library is always allowed)
ALLOWED_THIRD_PARTY = {
    "loom": set(),
    "runtime": {"torch", "transformers", "numpy", "PIL"},
    "inference.server": {"torch", "transformers", "numpy", "PIL", "flask", "werkzeug", "gunicorn"},
    "training": {"torch", "transformers", "numpy", "PIL", "peft", "accelerate", "safetensors", "matplotlib",
                 "bitsandbytes", "tqdm", "tokenizers", "boto3", "botocore"},
    "inference.api": {"aws_lambda_powertools", "boto3", "botocore"},
    "operations": None,  # the operator's desk may use anything the project installs
}


def package_of(module: str) -> str | None:
    for name in ("inference.server", "inference.api"):
        if module == name or module.startswith(name + "."):
            return name
    top = module.split(".")[0]
    return top if top in PROJECT and top != "inference" else None


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    dotted = ".".join(path.relative_to(root).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = dotted.split(".")[: -node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from inference import api` names a package too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names
                      if package_of(f"{module}.{alias.name}") and not package_of(module)]
    return found


def source_files(root: Path = ROOT) -> list[Path]:
    files = []
    for top in PROJECT:
        files += [p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def owner(path: Path, root: Path = ROOT) -> str:
    return package_of(".".join(path.relative_to(root).with_suffix("").parts)) or "inference"


def test_every_source_file_belongs_to_one_package():
    assert {owner(p) for p in source_files()} <= set(ALLOWED_PROJECT) | {"inference"}
    assert all(owner(p) != "inference" or p.name == "__init__.py" for p in source_files())


def violations(package: str, root: Path = ROOT) -> list[str]:
    """Every import in `package`'s files (under `root`) that breaks its rule."""
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in source_files(root):
        if owner(path, root) != package:
            continue
        for line, module in imports_of(path, root):
            if not module or module == "__future__":
                continue
            target = package_of(module)
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if target is not None:
                if target != package and target not in ALLOWED_PROJECT[package]:
                    bad.append(where)
            elif module.split(".")[0] == "inference":
                continue  # the namespace package itself
            elif module.split(".")[0] not in stdlib:
                allowed = ALLOWED_THIRD_PARTY[package]
                if allowed is not None and module.split(".")[0] not in allowed:
                    bad.append(where + " (third-party)")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED_PROJECT))
def test_imports_run_one_way(package):
    bad = violations(package)
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    """The rule would fail: lazy imports of the web server and of Flask inside the runtime are reported."""
    module = tmp_path / "runtime" / "x.py"
    module.parent.mkdir()
    module.write_text("import torch\n\ndef f():\n    from inference.server import app\n    import flask\n")
    assert violations("runtime", tmp_path) == ["runtime/x.py:4 imports inference.server",
                                               "runtime/x.py:5 imports flask (third-party)"]
    assert violations("operations", tmp_path) == []


def test_no_two_modules_share_a_file_name():
    names: dict[str, list[str]] = {}
    for path in source_files():
        if path.name != "__init__.py":
            names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}


def test_tests_mirror_the_packages_and_never_import_each_other():
    tests = ROOT / "tests"
    assert not list(tests.glob("test_*.py")), "test modules live in the subfolder of the package they test"
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in tests.rglob("test_*.py")
                 for line, module in imports_of(path)
                 if module.split(".")[-1].startswith("test_") or module.startswith("tests.")]
    assert offenders == []
