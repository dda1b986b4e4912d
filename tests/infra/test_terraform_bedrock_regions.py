"""Terraform's and the Lambda's rule for where an inference profile may be called from cannot drift apart.

inference/api/describe.py (`profile_callable_from`, used by `loom preflight`) is the source of truth; the API
module's plan refuses the same Region/profile pairs (terraform/modules/api/bedrock.tf, the precondition on
the Lambda's role policy). The rule: a geographic profile is called from a source Region of its geography;
jp. from Tokyo and Osaka only, au. from Sydney and Melbourne only (Seoul and Singapore have apac.), apac.
also from me-central-1, us. not from GovCloud, global. from commercial Regions only (Bedrock user guide,
"Supported Regions and models for inference profiles",
https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html).

Checked here without Terraform: the three tables of bedrock.tf equal describe.py's, the geographies agree,
and every run of terraform/tests/bedrock_regions.tftest.hcl (which `terraform test` executes against the
real expression, tests/infra/test_terraform.py) expects what `profile_callable_from` answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inference.api.describe import (PROFILE_EXCLUDED_PREFIXES, PROFILE_GEOGRAPHIES, PROFILE_SOURCE_PREFIXES,
                                    PROFILE_SOURCE_REGIONS, profile_callable_from)

hcl2 = pytest.importorskip("hcl2", reason="SKIP: python-hcl2 (dev extra) is needed to read the Terraform files")

TF = Path(__file__).resolve().parents[2] / "terraform"
BEDROCK_TF = TF / "modules" / "api" / "bedrock.tf"
TFTEST = TF / "tests" / "bedrock_regions.tftest.hcl"


def _unquote(value):
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    return value


def _locals() -> dict:
    merged: dict = {}
    for block in hcl2.loads(BEDROCK_TF.read_text()).get("locals", []):
        merged.update(block)
    return merged


def _tables() -> tuple[dict, dict, dict]:
    found = _locals()
    return tuple({geo: tuple(regions) for geo, regions in _unquote(found[name]).items()}
                 for name in ("bedrock_source_regions", "bedrock_source_prefixes", "bedrock_excluded_prefixes"))


def test_the_terraform_tables_are_describe_pys():
    regions, prefixes, excluded = _tables()
    assert regions == PROFILE_SOURCE_REGIONS
    assert prefixes == PROFILE_SOURCE_PREFIXES
    assert excluded == PROFILE_EXCLUDED_PREFIXES


def test_the_geographies_are_the_same():
    pattern = re.search(r'bedrock_geo\s*=\s*try\(regex\("\^\(([a-z|-]+)\)', BEDROCK_TF.read_text())
    assert pattern, "bedrock.tf no longer derives bedrock_geo from a regex of the geographies"
    assert set(pattern[1].split("|")) == set(PROFILE_GEOGRAPHIES)
    regions, prefixes, _ = _tables()
    # Every geography but global. has its source Regions or prefixes; global. needs neither.
    assert set(regions) | set(prefixes) | {"global"} == set(PROFILE_GEOGRAPHIES)


def _runs() -> list[tuple[str, str, str, bool]]:
    """(name, region, model id, plan passes) of each run of the Terraform test file."""
    runs = []
    for block in hcl2.loads(TFTEST.read_text()).get("run", []):
        for name, body in block.items():
            region = next(_unquote(o["values"])["name"] for o in body["override_data"]
                          if "aws_region" in str(o["target"]))
            model = _unquote(body["variables"][0]["bedrock_model_id"] if isinstance(body["variables"], list)
                             else body["variables"]["bedrock_model_id"])
            runs.append((_unquote(name), region, model, "expect_failures" not in body))
    return runs


def test_every_terraform_run_expects_what_describe_py_answers():
    runs = _runs()
    assert len(runs) >= 10, runs
    wrong = [(name, region, model, passes) for name, region, model, passes in runs
             if profile_callable_from(model, region) is not passes]
    assert not wrong, f"terraform/tests/bedrock_regions.tftest.hcl disagrees with describe.py: {wrong}"
    covered = {(model.split(".")[0], region) for _, region, model, _ in runs}
    # The Regions the looser prefixes used to admit or miss.
    for pair in [("jp", "ap-northeast-2"), ("au", "ap-southeast-1"), ("apac", "me-central-1"), ("us", "us-gov-west-1")]:
        assert pair in covered, f"no Terraform run for {pair}"
