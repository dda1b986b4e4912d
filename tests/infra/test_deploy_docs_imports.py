"""The `terraform import` commands in docs/deploy.md against the modules: each address must name a
module and a resource that exist, with the index their `count` / `for_each` gives them, and each id must
fit the resource's name. A renamed resource or module otherwise leaves the upgrade note pointing at
nothing (`terraform import` then fails with "Configuration for import target does not exist").

Why the notes exist: CloudWatch Logs CreateLogGroup fails with ResourceAlreadyExistsException when the
group exists (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html),
and Terraform fails a plan whose `import` block names an object that does not exist
(https://developer.hashicorp.com/terraform/language/import), so stacks that already have the group adopt it
once by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
DEPLOY = ROOT / "docs" / "deploy.md"

hcl2 = pytest.importorskip("hcl2", reason="SKIP: python-hcl2 (dev extra) is needed to read the modules")

# Log groups that Terraform took over from SageMaker in an upgrade: a deployed stack may already have them.
ADOPTED_GROUPS = {
    "module.search[0].aws_cloudwatch_log_group.clip",
    "module.endpoint[0].aws_cloudwatch_log_group.async[0]",
}

ADDRESS = re.compile(r"^module\.(\w+)(\[0\])?\.(\w+)\.(\w+)(?:\[(\d+|\"[^\"]+\")\])?$")
IMPORT = re.compile(r"'(module\.[^']+)'\s+(/[^\s`]+)")


def _strip(value: object) -> object:
    return value.strip('"') if isinstance(value, str) else value


def _parse(directory: Path) -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, blocks in hcl2.loads(path.read_text()).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def _module(name: str) -> tuple[dict, Path]:
    for block in _parse(TF_DIR).get("module", []):
        for key, body in block.items():
            if _strip(key) == name:
                return body, (TF_DIR / _strip(body["source"])).resolve()
    raise AssertionError(f"docs/deploy.md names module.{name}, which terraform/main.tf does not declare")


def _resource(parsed: dict, rtype: str, rname: str) -> dict | None:
    for block in parsed.get("resource", []):
        for key, bodies in block.items():
            if _strip(key) == rtype:
                for name, body in bodies.items():
                    if _strip(name) == rname:
                        return body
    return None


def _name_pattern(expression: str, locals_: dict, depth: int = 0) -> str:
    """A regular expression for the strings a name expression can give (locals resolved, the rest any text)."""
    out, pos = "", 0
    for match in re.finditer(r"\$\{([^}]*)\}", expression):
        out += re.escape(expression[pos:match.start()])
        ref = match.group(1).strip()
        if ref.startswith("local.") and ref[6:] in locals_ and depth < 5:
            out += _name_pattern(str(_strip(locals_[ref[6:]])), locals_, depth + 1)
        else:
            out += ".+"
        pos = match.end()
    return out + re.escape(expression[pos:])


def _imports() -> list[tuple[str, str]]:
    return IMPORT.findall(DEPLOY.read_text())


def test_deploy_docs_tell_how_to_adopt_each_group_terraform_took_over() -> None:
    named = {address for address, _ in _imports()}
    missing = ADOPTED_GROUPS - named
    assert not missing, f"docs/deploy.md has no `terraform import` for {sorted(missing)}"


@pytest.mark.parametrize("address,identifier", _imports())
def test_each_documented_import_names_a_real_resource(address: str, identifier: str) -> None:
    match = ADDRESS.match(address)
    assert match, f"not a module resource address: {address}"
    module_name, module_index, rtype, rname, index = match.groups()
    call, source = _module(module_name)
    assert bool(module_index) == ("count" in call), (
        f"{address}: module.{module_name} {'has' if 'count' in call else 'has no'} count, so the address "
        f"{'needs' if 'count' in call else 'takes no'} [0]")
    parsed = _parse(source)
    body = _resource(parsed, rtype, rname)
    assert body is not None, f"{address}: {source.relative_to(ROOT)} declares no {rtype}.{rname}"
    if index is None:
        assert "count" not in body and "for_each" not in body, f"{address}: the resource is repeated, give its index"
    elif index.startswith('"'):
        assert "for_each" in body, f"{address}: [\"key\"] needs a for_each resource"
    else:
        assert "count" in body, f"{address}: [{index}] needs a count resource"
    locals_ = {k: v for block in parsed.get("locals", []) for k, v in block.items()}
    pattern = _name_pattern(str(_strip(body["name"])), locals_)
    generic = re.sub(r"<[^>]+>", "x", identifier)
    assert re.fullmatch(pattern, generic), f"{address}: the id {identifier} does not fit the group's name {pattern}"
