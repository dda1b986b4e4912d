# Loom: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loom-installed
TORCH_VERSION := 2.13.0
CHECKOV_VENV := .cache/checkov-venv

# demo inputs: override to run on a real catalog / base model, e.g.
#   make demo CATALOG=/data/fashion BASE_MODEL=Salesforce/blip2-flan-t5-xl DEVICE=cuda
CATALOG ?=
BASE_MODEL ?=
DEMO_ARGS ?=

.PHONY: venv test test-fast demo bench loadtest lambda-zip lint checkov-venv clean help

help:
	@echo "make demo        the whole flow offline on a synthetic catalog (creates .venv)"
	@echo "make test        the test suite, static checks and Terraform checks (creates .venv)"
	@echo "make bench       encode-once vs per-question inference benchmark (last line: speedup <ratio>)"
	@echo "make loadtest    concurrent clients against gunicorn + the tiny model on 127.0.0.1"
	@echo "make lambda-zip  build/lambda.zip for the API Lambda"
	@echo "make lint        static checks only (terraform fmt/validate, checkov, hadolint, actionlint, shellcheck)"

# torch first and pinned: a bare `torch` requirement pulled in by another package fetches GBs of CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# checkov pins an old boto3 and ships its own hcl2 module: it lives in a virtualenv of its own.
$(CHECKOV_VENV)/bin/checkov:
	@mkdir -p .cache
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check "checkov==3.3.30"

checkov-venv: $(CHECKOV_VENV)/bin/checkov

test: venv checkov-venv
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

demo: venv
	$(BIN)/python scripts/demo.py $(if $(CATALOG),--catalog $(CATALOG)) $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) $(DEMO_ARGS)

bench: venv
	$(BIN)/python scripts/bench.py

loadtest: venv
	$(BIN)/python scripts/loadtest.py

lambda-zip: venv
	$(BIN)/python scripts/package_lambda.py --out build/lambda.zip

lint: venv checkov-venv
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(BIN)/python -m pytest tests/test_static_checks.py tests/test_terraform.py

clean:
	rm -rf build runs .pytest_cache
