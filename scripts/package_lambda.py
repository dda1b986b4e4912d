"""Build the API Lambda's zip: the handler modules, the schema module and aws-lambda-powertools.

    python scripts/package_lambda.py --out build/lambda.zip [--wheelhouse DIR]

boto3 is in the Lambda runtime and is not bundled; torch, transformers, Pillow and Flask never enter
(the zip is checked for them). `--wheelhouse` installs from a folder of wheels with no index (offline).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POWERTOOLS = "aws-lambda-powertools==3.37.0"
# The Lambda's own package and the contract it shares; nothing else of the repository enters the zip.
PACKAGES = ("inference/api", "loom")
FORBIDDEN = ("torch", "transformers", "PIL", "flask", "boto3", "botocore")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # the same inputs give the same zip, byte for byte


def install_dependencies(target: Path, wheelhouse: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--only-binary=:all:", "--target", str(target), POWERTOOLS]  # fmt: skip
    if wheelhouse:
        cmd += ["--no-index", "--find-links", str(wheelhouse)]
    subprocess.run(cmd, check=True)
    for junk in ("bin",):
        shutil.rmtree(target / junk, ignore_errors=True)


def package_files() -> list[Path]:
    """The repository files the zip carries: the API package, its parent's __init__ and the contract."""
    files = [ROOT / "inference" / "__init__.py"]
    for package in PACKAGES:
        files += sorted(p for p in (ROOT / package).rglob("*")
                        if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts)
    return files


def build(out: Path, wheelhouse: Path | None = None) -> Path:
    """Write the zip to `out` and return it."""
    with tempfile.TemporaryDirectory(prefix="loom-lambda-") as tmp:
        stage = Path(tmp)
        install_dependencies(stage, wheelhouse)
        for source in package_files():
            target = stage / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        files = sorted(p for p in stage.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        bad = sorted({p.relative_to(stage).parts[0] for p in files} & set(FORBIDDEN))
        if bad:
            raise SystemExit(f"refusing to package {bad}: the Lambda must not carry them")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path in files:
                info = zipfile.ZipInfo(str(path.relative_to(stage)), FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "lambda.zip")
    parser.add_argument("--wheelhouse", type=Path, help="install from these wheels only (no package index)")
    args = parser.parse_args(argv)
    out = build(args.out, args.wheelhouse)
    size = out.stat().st_size
    print(f"{out}: {size} bytes ({size / 1e6:.2f} MB), handler inference.api.handler.handler")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
