# The two commands a newcomer needs:  `make run`  and  `make test`.
# Each creates .venv on first use (Python 3.11+), installs what it needs, then runs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test system-deps lint typecheck unit install install-dev clean fixtures-flyte2

run: $(VENV)/.installed  ## install and start the daemon with the bundled connectors
	$(BIN)/connector-service serve $(ARGS)

test: system-deps $(VENV)/.installed-dev lint typecheck unit  ## install and run the whole suite

system-deps:  ## Debian packages the end-to-end tests need (Slurm, munge, sshd, PostgreSQL); a no-op once there
	bash .ci/install-system-deps

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

# The Flyte 2 SDK's pins clash with flytekit's, so the script installs it in a venv of its own
# (under ~/.cache/flyte-connector-service), never in $(VENV); it is a tool, not a dependency.
fixtures-flyte2:  ## regenerate tests/fixtures/flyte2 with the real Flyte 2 SDK (flyte 2.12.1)
	$(PYTHON) tests/fixtures/make_flyte2_fixtures.py

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
