# Every target builds what it needs on a fresh machine: a virtualenv in .venv,
# the project with its extras, and (for tests) Debian's chromium.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: up test lint bench install system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Chromium drives the UI tests; Debian ships it, Playwright cannot download its own here.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium; UI tests will skip"; \
	fi

up: $(STAMP)
	$(BIN)/python examples/demo-app/run_with_dashfrog.py

test: $(STAMP) system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# import-linter reads packages from disk as they are laid out when installed
# (client/ is dashfrog, storage/ is dashfrog.storage, ...): build/importlinter
# mirrors that layout with symlinks. Contracts: [tool.importlinter] in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check client runtime schemas streams storage web tests benchmarks examples
	$(BIN)/mypy client runtime schemas streams storage web
	@rm -rf build/importlinter && mkdir -p build/importlinter/dashfrog
	@ln -s $(CURDIR)/client/* build/importlinter/dashfrog/
	@for pkg in runtime schemas storage streams web; do ln -s $(CURDIR)/$$pkg build/importlinter/dashfrog/$$pkg; done
	PYTHONPATH=build/importlinter $(BIN)/lint-imports --no-cache --no-logo

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .dashfrog .pytest_cache .mypy_cache .ruff_cache
