"""Write the inputs and outputs of terraform/ and of every module under terraform/modules/ into
terraform/README.md, between the GENERATED markers, from the modules' own variables.tf and outputs.tf.

    python scripts/terraform_readme.py          # rewrite the section
    python scripts/terraform_readme.py --check  # exit 1 if the README is out of date (tests do this)

Needs python-hcl2 (the `dev` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "terraform"
README = TF_DIR / "README.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/terraform_readme.py -->"
END = "<!-- END GENERATED -->"


def _blocks(path: Path, kind: str) -> list[tuple[str, dict]]:
    import hcl2

    if not path.is_file():
        return []
    found = []
    for block in hcl2.loads(path.read_text()).get(kind, []):
        for quoted_name, body in block.items():
            found.append((quoted_name.strip('"'), body))
    return found


def _cell(text: object) -> str:
    text = str(text or "").strip().strip('"')
    text = text.replace("\\n", " ").replace("\n", " ").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _type(body: dict) -> str:
    kind = str(body.get("type", "")).strip('"')
    if kind.startswith("${") and kind.endswith("}"):
        kind = kind[2:-1]
    kind = " ".join(kind.split())
    return kind if len(kind) <= 40 else kind.split("(")[0] + "(...)"


def module_dirs() -> list[Path]:
    return [TF_DIR, *sorted(p for p in (TF_DIR / "modules").iterdir() if (p / "variables.tf").is_file())]


def section() -> str:
    lines = [BEGIN, ""]
    for directory in module_dirs():
        name = "root module (`terraform/`)" if directory == TF_DIR else f"`modules/{directory.name}`"
        lines += [f"### Inputs and outputs of the {name}", ""]
        variables = _blocks(directory / "variables.tf", "variable")
        lines += ["| input | type | required | description |", "| --- | --- | --- | --- |"]
        for var_name, body in variables:
            required = "yes" if "default" not in body else "no"
            lines.append(f"| `{var_name}` | `{_cell(_type(body))}` | {required} | {_cell(body.get('description'))} |")
        outputs = _blocks(directory / "outputs.tf", "output")
        lines += ["", "| output | description |", "| --- | --- |"]
        for out_name, body in outputs:
            lines.append(f"| `{out_name}` | {_cell(body.get('description'))} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def render(text: str) -> str:
    if BEGIN not in text or END not in text:
        return text.rstrip("\n") + "\n\n" + section() + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + section() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if terraform/README.md is out of date")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if current != wanted:
            print("terraform_readme: terraform/README.md is out of date: run python scripts/terraform_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
