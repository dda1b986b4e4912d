# Loom: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loom-installed
TORCH_VERSION := 2.13.0
CHECKOV_VENV := .cache/checkov-venv
SDK_VENV := .cache/sdk-venv
OPS_VENV := .venv-ops
OPS_STAMP := $(OPS_VENV)/.loom-installed
# Extra pip arguments for the torch install, e.g. the CPU-only index on a CI runner (see .github/workflows/ci.yml).
TORCH_PIP_ARGS ?=

# demo inputs: override to run on a real catalog / base model, e.g.
#   make demo CATALOG=/data/fashion BASE_MODEL=Salesforce/blip2-flan-t5-xl DEVICE=cuda
CATALOG ?=
BASE_MODEL ?=
DEMO_ARGS ?=

.PHONY: venv test test-sdk test-fast demo search-demo screenshots bench bench-gpu bench-train loadtest lambda-zip lint checkov-venv clean help

help:
	@echo "make demo        the whole flow offline on a synthetic catalog (creates .venv)"
	@echo "make test        the test suite, static checks and Terraform checks (creates .venv)"
	@echo "make test-sdk    the SageMaker Python SDK path (installs loom[sdk] in .cache/sdk-venv, ~1 GB)"
	@echo "make bench       the model call a request makes vs one generate per question, tiny model on CPU, 3 rounds (last line: speedup <ratio>)"
	@echo "make bench-gpu   real-size served call on a CUDA GPU: N=1/4/16 a call, eager and compiled, floor, profile (< 8 min)"
	@echo "make bench-train training steps: every row through the vision tower vs each photo once (last line: speedup <ratio>)"
	@echo "make loadtest    serve + tiny model on 127.0.0.1, batching off and on in turn, 1/4/16 clients, 3 rounds (last line: batching <ratio>)"
	@echo "make search-demo product search offline: tiny CLIP, index, queries, and the search page on 127.0.0.1"
	@echo "make screenshots docs/images/report.png and search.png from the real pages (headless Chromium; runs the demos first if needed)"
	@echo "make lambda-zip  build/lambda.zip for the API Lambda"
	@echo "make lint        static checks only (terraform fmt/validate, checkov, hadolint, actionlint, shellcheck)"
	@echo "make tf-help     the two-phase AWS deployment targets (docs/deploy.md)"

# torch first and pinned: a bare `torch` requirement pulled in by another package fetches GBs of CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# checkov pins an old boto3 and ships its own hcl2 module: it lives in a virtualenv of its own.
$(CHECKOV_VENV)/bin/checkov:
	@mkdir -p .cache
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check "checkov==3.3.30"

checkov-venv: $(CHECKOV_VENV)/bin/checkov

# The SageMaker Python SDK (loom[sdk]) in a virtualenv of its own: ~126 packages, ~950 MB with mlflow.
$(SDK_VENV)/.installed: pyproject.toml
	@mkdir -p .cache
	@test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[sdk]'
	@touch $@

test: venv checkov-venv
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(BIN)/python -m pytest

# Not part of `make test` (nor CI): the SDK is an optional extra and a 1 GB install.
test-sdk: venv $(SDK_VENV)/.installed
	LOOM_SDK_PYTHON=$(abspath $(SDK_VENV))/bin/python $(BIN)/python -m pytest tests/operations/test_sdk_path.py

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

demo: venv
	$(BIN)/loom demo $(if $(CATALOG),--catalog $(CATALOG)) $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) $(DEMO_ARGS)

bench: venv
	$(BIN)/python scripts/bench.py

# On a machine with one CUDA GPU: the whole real-size run (random bf16 weights, nothing downloaded) in one
# process, cut off at 8 minutes; it starts no new measurement after 400 s (--budget-s).
bench-gpu: venv
	timeout 480 $(BIN)/python scripts/bench.py --real-size --device cuda --compiled --profile --budget-s 400

bench-train: venv
	$(BIN)/python scripts/bench_train.py

search-demo: venv
	$(BIN)/loom search-demo

# The README's pictures: the evaluation report and the search page, taken by Debian's headless Chromium
# (apt-get install chromium) from `loom demo`'s artifact and `loom search-demo`'s cached tiny CLIP.
screenshots: venv
	$(BIN)/python scripts/screenshots.py --out docs/images

loadtest: venv
	$(BIN)/python scripts/loadtest.py

# Plain Python: the zip needs only the standard library and pip (Powertools is installed into it).
lambda-zip:
	$(PYTHON) scripts/package_lambda.py --out build/lambda.zip

lint: venv checkov-venv
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(BIN)/python -m pytest tests/infra/test_static_checks.py tests/infra/test_terraform.py

clean:
	rm -rf build runs .pytest_cache

# ---------------------------------------------------------------------------------------------
# Deployment to AWS, in two phases (docs/deploy.md walks through it). Nothing here runs in tests.
#   make tf-foundation                      KMS key, bucket, ECR repositories, training + CI roles
#   make images AWS_ACCOUNT=... AWS_REGION=...           build and push the images (tag: commit SHA): training,
#                                           inference (CUDA) and inference <sha>-cpu (Serverless search);
#                                           IMAGES='inference inference-cpu' builds some of them
#   (train: loom launch ..., see docs/deploy.md)
#   make preflight AWS_REGION=...           Bedrock model lifecycle + access, one tiny Converse call, quotas
#   make tf-serving MODEL_DATA_URL=s3://.../model.tar.gz    endpoint, Lambda and HTTP API
#   make tf-destroy
# Optional: GITHUB_REPOSITORY=owner/name (CI role), NAME_PREFIX, TF_VARS='-var x=y ...',
# TF_APPLY_FLAGS=-auto-approve, BEDROCK_MODEL_ID (preflight; pass the same as -var bedrock_model_id),
# PREFLIGHT_FLAGS (e.g. --github, --reserved-concurrency N). Give the same values in every phase.
# ---------------------------------------------------------------------------------------------
TERRAFORM ?= terraform
TF_DIR := terraform
AWS_ACCOUNT ?=
AWS_REGION ?=
NAME_PREFIX ?= loom
GITHUB_REPOSITORY ?=
IMAGES ?=
IMAGE_TAG ?= $(shell git rev-parse HEAD 2>/dev/null)
MODEL_DATA_URL ?=
TF_VARS ?=
TF_APPLY_FLAGS ?=
BEDROCK_MODEL_ID ?=
PREFLIGHT_FLAGS ?=
TF_COMMON_VARS = -var name_prefix=$(NAME_PREFIX) $(if $(AWS_REGION),-var region=$(AWS_REGION)) $(if $(GITHUB_REPOSITORY),-var github_repository=$(GITHUB_REPOSITORY)) $(TF_VARS)
TF_SERVING_VARS = -var model_data_url=$(MODEL_DATA_URL) -var inference_image_tag=$(IMAGE_TAG) -var lambda_zip_path=$(abspath build/lambda.zip)

.PHONY: tf-help tf-init tf-foundation images preflight tf-serving tf-serving-vars tf-outputs tf-destroy

tf-help:
	@sed -n '/^# Deployment to AWS/,/^# ----/p' Makefile | sed 's/^# \{0,1\}//'

tf-init:
	$(TERRAFORM) -chdir=$(TF_DIR) init -input=false

# Phase 1. Refuses to run once phase 2 is deployed: without the serving variables this apply
# would remove the endpoint and the API (use tf-serving from then on, or FORCE=1).
tf-foundation: tf-init
	@if [ -z "$(FORCE)" ] && [ "$$($(TERRAFORM) -chdir=$(TF_DIR) output -raw serving_enabled 2>/dev/null)" = "true" ]; then \
		echo "tf-foundation: the endpoint and API are deployed; this apply would destroy them."; \
		echo "  Use make tf-serving MODEL_DATA_URL=... IMAGE_TAG=..., or FORCE=1 to remove serving."; exit 2; fi
	$(TERRAFORM) -chdir=$(TF_DIR) apply -input=false $(TF_APPLY_FLAGS) $(TF_COMMON_VARS)

images:
	@test -n "$(AWS_ACCOUNT)" -a -n "$(AWS_REGION)" || { echo "images: set AWS_ACCOUNT=<12 digits> AWS_REGION=<region>"; exit 2; }
	LOOM_NAME_PREFIX=$(NAME_PREFIX) $(if $(IMAGES),LOOM_IMAGES="$(IMAGES)") scripts/build_and_push.sh "$(AWS_ACCOUNT)" "$(AWS_REGION)" "$(IMAGE_TAG)"

# Before phase 2, as an administrator: the description model is ACTIVE, this account may use it
# (the first invocation also starts its Marketplace subscription), and the quotas fit.
preflight: $(OPS_STAMP)
	$(OPS_VENV)/bin/loom preflight $(if $(AWS_REGION),--region $(AWS_REGION)) $(if $(BEDROCK_MODEL_ID),--model-id $(BEDROCK_MODEL_ID)) $(PREFLIGHT_FLAGS)

# The operator's commands without the ML stack (`.[ops]`: boto3, tqdm): seconds to install, no torch.
$(OPS_STAMP): pyproject.toml
	@test -x $(OPS_VENV)/bin/python || $(PYTHON) -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[ops]'
	@touch $(OPS_STAMP)

# Phase 2 (and every later change): needs the trained artifact and a pushed inference image.
# The variables are checked before anything is initialised or built.
tf-serving: tf-serving-vars tf-init lambda-zip
	$(TERRAFORM) -chdir=$(TF_DIR) apply -input=false $(TF_APPLY_FLAGS) $(TF_COMMON_VARS) $(TF_SERVING_VARS)

tf-serving-vars:
	@test -n "$(MODEL_DATA_URL)" || { echo "tf-serving: set MODEL_DATA_URL=s3://<bucket>/models/<job>/output/model.tar.gz"; exit 2; }
	@test -n "$(IMAGE_TAG)" || { echo "tf-serving: set IMAGE_TAG=<tag of the pushed inference image>"; exit 2; }

tf-outputs:
	$(TERRAFORM) -chdir=$(TF_DIR) output

# Buckets and repositories that still hold objects or images are kept unless the stack was
# applied with TF_VARS='-var force_destroy=true' first (docs/deploy.md, "Tearing down").
tf-destroy: tf-init
	$(TERRAFORM) -chdir=$(TF_DIR) destroy -input=false $(TF_COMMON_VARS) $(if $(MODEL_DATA_URL),$(TF_SERVING_VARS))
