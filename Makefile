# Two commands a new user types (see README):
#   make demo   set everything up, create the demo host in ./demo, build and publish it
#   make test   set everything up, run the whole test suite
# Both work as root (system packages via apt-get) and as a user (sudo when it
# is there; otherwise the browser and nginx tests say what is missing).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := chromium nginx-light default-jre-headless
STAMP := $(VENV)/.render-setup

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml package.json package-lock.json
	@bash scripts/setup-system.sh $(APT_PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	npm install --no-audit --no-fund --loglevel=error
	@touch $(STAMP)

demo: setup
	@test -f demo/render.toml || $(BIN)/render init --demo demo
	cd demo && ../$(BIN)/render nightly
	@echo
	@echo "The demo host is in ./demo. To look at it:"
	@echo "    cd demo && ../$(BIN)/render serve      # then open the address it prints"

test: setup
	$(BIN)/ruff check render tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check render tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules demo .pytest_cache .mypy_cache
