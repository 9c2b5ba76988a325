# Two commands a new user types (see README):
#   make demo   set everything up, create the demo host in ./demo, build and publish it
#   make test   set everything up, run the whole test suite
# Both work as root (system packages via apt-get) and as a user (sudo when it
# is there; otherwise the browser and nginx tests say what is missing).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian's python3 keeps venv's pip bootstrap (ensurepip) in python3-venv.
VENV_PACKAGE := $(shell $(PYTHON) -c 'import ensurepip' 2>/dev/null || echo python3-venv)
# fonts-liberation: chromium recommends it; the checks were written against its metrics
APT_PACKAGES := chromium fonts-liberation nginx-light default-jre-headless redis-server wrk $(VENV_PACKAGE)
STAMP := $(VENV)/.render-setup
NODE_STAMP := node_modules/.render-setup

.PHONY: setup system demo test lint bench clean

setup: system $(STAMP) $(NODE_STAMP)

# Checked on every run (a dpkg query), so packages removed or added later are seen.
system:
	@bash scripts/setup-system.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml Makefile | system
	@test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

# npm ci installs exactly package-lock.json (package.json's overrides keep it valid
# when a dependency's "latest" moves); it starts from an empty node_modules.
$(NODE_STAMP): package.json package-lock.json Makefile | system
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

demo: setup
	@test -f demo/render.toml || $(BIN)/render init --demo demo
	cd demo && ../$(BIN)/render nightly
	cd demo && ../$(BIN)/render dashboard
	@echo
	@echo "The demo host is in ./demo. To look at it:"
	@echo "    cd demo && ../$(BIN)/render serve      # then open the address it prints"
	@echo "Its SEO dashboard: demo/.render/dashboard/index.html (open it in a browser),"
	@echo "    or http://127.0.0.1:8000/_dashboard/ while render serve runs."

test: setup
	$(BIN)/ruff check render tests bench scripts
	$(BIN)/ruff format --check render tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check render tests bench scripts
	$(BIN)/ruff format --check render tests bench scripts
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules demo .pytest_cache .mypy_cache
