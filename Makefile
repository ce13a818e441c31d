# kitpin — pins KitOps ModelKit references to verified sha256 digests at admission time.
# `make help` lists every target.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
KITPIN_DEV_DIR ?= .dev
export KITPIN_DEV_DIR
# NODE=1 adds a node (kube-scheduler, kubelet, containerd) to dev-up and demo: Pods run
# (docs/node.md; needs root; builds/installs what it needs with `hack/tools.sh node`).
# A plain `make demo` adds one when it can start at once (root, kit, the tools already there);
# NODE=0 never.
NODE ?=
NODE_FLAG = $(if $(filter 1,$(NODE)),--node)
DEMO_NODE_FLAG = --node=$(if $(filter 1,$(NODE)),on,$(if $(filter 0,$(NODE)),off,auto))

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kitpin needs Python >= 3.11")'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with runtime and dev dependencies (reused when present).

.PHONY: tools
tools: ## Build the pinned Go tools (hack/tools.env) into ~/.cache/kitpin/tools (reused when present).
	hack/tools.sh

##@ Development

.PHONY: fmt
fmt: venv ## Format the code (ruff).
	$(VENV)/bin/ruff format controller tests hack harness bench
	$(VENV)/bin/ruff check --fix controller tests hack harness bench

.PHONY: lint
lint: venv ## ruff, mypy --strict and import-linter (the layer contract).
	$(VENV)/bin/ruff check controller tests hack harness bench
	$(VENV)/bin/ruff format --check controller tests hack harness bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: unit
unit: venv ## Fast unit tests only (with the quick, deterministic pass of tests/fuzz).
	$(VENV)/bin/pytest -m 'not integration and not e2e' $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: venv ## Property-based fuzzing (tests/fuzz), deep: >= 100,000 randomized cases, count printed (SEED=n replays a run).
	KITPIN_FUZZ_PROFILE=deep KITPIN_FUZZ_MIN_CASES=100000 $(VENV)/bin/pytest -p no:cacheprovider \
	  tests/fuzz $(if $(SEED),--hypothesis-seed=$(SEED)) $(PYTEST_ARGS)

.PHONY: integration
integration: venv tools ## Integration tests against a real CNCF distribution registry.
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv tools ## End-to-end tests against the real control plane and registry.
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

.PHONY: test
test: venv tools lint verify ## Everything: lint, verify, unit, integration (real registry) and e2e (real control plane).
	$(VENV)/bin/pytest $(PYTEST_ARGS)

##@ Packaging

.PHONY: manifests
manifests: venv tools ## Copy deploy/crds/ into charts/kitpin/crds/, render deploy/ (kustomize base) from the chart and docs/settings.md from the settings code.
	$(PY) -m hack.manifests
	$(PY) -m hack.settingsdoc

.PHONY: verify
verify: venv tools ## Regenerate the chart's CRDs and deploy/ (make manifests); fail if a generated file differs from git or docs/settings.md from the settings code.
	$(PY) -m hack.settingsdoc --check
	$(PY) -m hack.manifests
	@generated="charts/kitpin/crds deploy/kitpin.yaml deploy/kustomization.yaml"; \
	changed=$$(git status --porcelain -- $$generated); \
	if [ -n "$$changed" ]; then \
	  echo "make verify: generated files differ from the committed ones:"; echo "$$changed"; \
	  git --no-pager diff --stat -- $$generated; \
	  echo "run 'make manifests' and commit the result"; exit 1; \
	fi

##@ Local cluster

.PHONY: dev-up
dev-up: venv tools ## Start a local control plane + registry; writes $(KITPIN_DEV_DIR)/env (NODE=1: and a node, Pods run).
	$(PY) -m harness.dev up $(NODE_FLAG)

.PHONY: dev-down
dev-down: venv ## Stop what dev-up started.
	$(PY) -m harness.dev down

.PHONY: dev-status
dev-status: venv ## Is the local cluster up?
	$(PY) -m harness.dev status

.PHONY: run
run: venv ## Run kitpin on 127.0.0.1 against the dev cluster (kopf-managed webhooks; needs dev-up).
	@[ -f $(KITPIN_DEV_DIR)/env ] || { echo "no $(KITPIN_DEV_DIR)/env: run 'make dev-up' first"; exit 1; }
	. $(KITPIN_DEV_DIR)/env && $(VENV)/bin/kitpin run --dev

##@ Benchmarks

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

.PHONY: bench
bench: venv tools $(VENV)/.bench-installed ## Benchmarks -> bench/results/latest.{json,png} (QUICK=1: < 60 s smoke run; PROFILE=1: py-spy).
	$(PY) -m bench.run $(if $(QUICK),--quick) $(if $(PROFILE),--profile)

##@ Demo

.PHONY: demo
demo: venv tools ## The main job on an embedded default: local cluster + registry + ModelKit + kitpin, a pinned workload (its Pods run kit unpack when a node can start: root, kit; NODE=1 insists, NODE=0 never).
	$(PY) -m hack.demo $(DEMO_NODE_FLAG)
