# fwcluster: every target installs what it needs and is safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps

.PHONY: all deps venv demo test test-unit test-netns lint typecheck fmt clean down

all: test

$(STAMPS):
	mkdir -p $(STAMPS)

# Debian packages (kernel tools, nginx, redis, headers); re-checked every run, installs only what is missing.
deps:
	@scripts/install-system.sh

# The virtualenv with the pinned Python dependencies; rebuilt when the pins or the package metadata change.
$(STAMPS)/venv: requirements.lock pyproject.toml | $(STAMPS)
	@scripts/install-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: deps $(STAMPS)/venv

# The main job: testbed up, allowed and blocked traffic with real clients, summary, testbed down.
demo: venv
	$(BIN)/fwcluster demo

# The whole suite: lint, types, fast unit tests, then the root + namespace tier.
test: venv lint typecheck test-unit test-netns

test-unit: venv
	$(BIN)/pytest -m "not netns" -q

test-netns: venv
	$(BIN)/pytest -m netns -q

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: venv
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

down: venv
	$(BIN)/fwcluster testbed down

clean:
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
