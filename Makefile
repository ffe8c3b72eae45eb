# Set-up in two commands: `make report` (the equivalence report on this package's model) and `make test` (the
# layers check and the property suite, as CI runs them: .ci/run calls these targets). Each first installs into a
# virtual environment of its own (`make install`: .ci/install, again only when pyproject.toml, constraints.txt or
# the script changed). GNU make; needs only a Python 3.10+ with venv and pip.
#
#   make report                          # python -m reference.report --device cpu
#   make test                            # lint-imports, then python -m pytest -n 2
#   CI=true make test                    # ... with Hypothesis' derandomized ci profile, exactly as .ci/run
#   make test PYTEST_ARGS="-m smoke"     # any pytest arguments instead of -n 2
#   make report VENV=/tmp/env PYTHON=python3.12
#   make report TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu   # torch's CPU wheels (no CUDA download)

VENV ?= .venv
PYTHON ?= python3
TORCH_INDEX_URL ?=
REPORT_ARGS ?= --device cpu
PYTEST_ARGS ?= -n 2

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Bytecode caching on, whatever the machine's default: the suite starts ~30 Python processes (the meta-tests'
# sessions, xdist workers) that import the same modules; with PYTHONDONTWRITEBYTECODE=1 each recompiles them and
# pytest re-rewrites ~80 test modules' asserts, 1.1-1.5 s more per process (docs/performance.md). __pycache__ is
# git-ignored.
unexport PYTHONDONTWRITEBYTECODE

.DEFAULT_GOAL := help
.PHONY: help install report test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

install: $(STAMP)  ## create or refresh the environment (VENV, default .venv; only when pyproject.toml, constraints.txt or .ci/install changed)

$(STAMP): pyproject.toml constraints.txt .ci/install
	PYTHON="$(PYTHON)" TORCH_INDEX_URL="$(TORCH_INDEX_URL)" .ci/install "$(VENV)"
	@touch $@

report: install  ## the equivalence report on this package's model (REPORT_ARGS, default --device cpu)
	$(BIN)/python -m reference.report $(REPORT_ARGS)

test: install  ## reference/'s layers (lint-imports), then the property suite (PYTEST_ARGS, default -n 2)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:  ## remove the environment (VENV)
	rm -rf $(VENV)
