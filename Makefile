# ransomeye.ops: every entry point an operator or CI uses. `make demo` and `make test`
# set up everything they need themselves (venv, dependencies, collection link).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
# The ecosystem's checkers (galaxy-importer, ansible-lint, antsibull-*) pin what the test venv must not get.
LINT_VENV := $(CURDIR)/.venv-lint
LINT_BIN := $(LINT_VENV)/bin
BUILD := $(CURDIR)/.build
COLLECTIONS := $(BUILD)/collections
COLL_LINK := $(COLLECTIONS)/ansible_collections/ransomeye/ops
# ansible-test needs a real copy of the collection, outside this git checkout: inside it,
# .gitignore would hide the copy and ansible-test would skip every target.
ANSIBLE_TEST_ROOT := $(or $(TMPDIR),/tmp)/ransomeye-ops-ansible-test-$(shell id -u)-$(shell echo $(CURDIR) | cksum | cut -d' ' -f1)
SANITY_COLL := $(ANSIBLE_TEST_ROOT)/sanity/ansible_collections/ransomeye/ops
DEMO_DIR ?= $(CURDIR)/.demo
PYTEST_WORKERS ?= 2

export LC_ALL := C.UTF-8
export LANG := C.UTF-8
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export PYTHONPATH := $(COLLECTIONS):$(CURDIR)
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup demo-setup demo-sysdeps sysdeps venv lint-venv collection demo demo-clean test lint sanity units integration molecule bench bench-peers build offline-bundle clean

help:
	@echo "make demo        build the demo RansomEye host and run the DR drill against it"
	@echo "make demo-clean  stop the demo services and remove $(DEMO_DIR)"
	@echo "make test        lint + sanity + unit + integration tests (what CI runs)"
	@echo "make lint        galaxy-importer, antsibull-docs, ansible-lint, antsibull-changelog (offline, ~2 min)"
	@echo "make sanity | units | integration | bench | build | offline-bundle"

setup: sysdeps venv collection
demo-setup: demo-sysdeps venv collection

sysdeps:
	@bash tools/sysdeps.sh test

demo-sysdeps:
	@bash tools/sysdeps.sh demo

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -c "import ansible, cryptography, psycopg2, psutil, zstandard, pytest, xdist, supervisor, gunicorn"
	@touch $@

venv: $(BIN)/.installed

$(LINT_BIN)/.installed: requirements-lint.txt
	@test -x $(LINT_BIN)/python || $(PYTHON) -m venv $(LINT_VENV)
	@$(LINT_BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(LINT_BIN)/python -m pip install -q -r requirements-lint.txt 2>&1 | grep -v "is ignored" || true
	@$(LINT_BIN)/python -c "import galaxy_importer, ansiblelint, antsibull_docs, antsibull_changelog"
	@touch $@

lint-venv: $(LINT_BIN)/.installed

collection:
	@mkdir -p $(dir $(COLL_LINK))
	@test -L $(COLL_LINK) || ln -s $(CURDIR) $(COLL_LINK)

demo: demo-setup
	$(BIN)/python -m tests.harness.demo up --dir $(DEMO_DIR)
	$(BIN)/python -m tests.harness.demo play --dir $(DEMO_DIR)
	@$(BIN)/python -m tests.harness.demo info --dir $(DEMO_DIR)

demo-clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tests.harness.demo down --dir $(DEMO_DIR) || true; fi
	@# a cluster that had to live outside DEMO_DIR (the postgres user could not reach it) goes too
	@if [ -L $(DEMO_DIR)/pg ]; then rm -rf "$$(readlink -f $(DEMO_DIR)/pg)"; fi
	rm -rf $(DEMO_DIR)

test: setup lint sanity units integration

# Offline: the tools come from .venv-lint (installed above), the collection is checked as a release ships it.
lint: setup lint-venv
	@bash tools/lint.sh $(LINT_BIN)

sanity: setup
	@bash tools/ansible_test.sh sanity $(SANITY_COLL)

units: setup
	$(BIN)/python -m pytest -q tests/unit -n $(PYTEST_WORKERS)

integration: setup
	$(BIN)/python -m pytest -q tests/integration -n $(PYTEST_WORKERS) --dist loadfile
	@bash tools/ansible_test.sh integration $(ANSIBLE_TEST_ROOT)/integration/ansible_collections/ransomeye/ops

bench: setup bench-peers
	@set -e; for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; done

# restic and borg are baselines of bench/bench_repo.py only, never runtime dependencies (Debian packages)
bench-peers:
	@if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y restic borgbackup; \
	  else echo "bench_repo.py compares with restic and borg: run 'apt-get install -y restic borgbackup' as root"; fi; fi

build: setup
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD)/dist .

offline-bundle: setup
	@bash tools/offline_bundle.sh $(BUILD)/offline

clean: demo-clean
	rm -rf $(BUILD) .pytest_cache $(ANSIBLE_TEST_ROOT) $(LINT_VENV)
