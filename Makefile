# `make run` serves the registry on :5000 with data under ./data; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench soak image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/registry serve --port 5000 --data-dir ./data

test: $(VENV)/.test-installed
	scripts/test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy registry storage
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy registry storage

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.test-installed
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q -e '.[test,bench]'
	bench/deps.sh
	$(BIN)/python -m bench.run

# The 30-minute soak alone (also the last workload of `make bench`): worker RSS under mixed load, judged flat.
soak: $(VENV)/.test-installed
	$(BIN)/python -m bench.soak

# The container image of deploy/Dockerfile, installed from wheels built here (BASE: the image to build on).
BASE ?= python:3.11-slim
image: $(BIN)/python
	PYTHON=$(BIN)/python deploy/wheelhouse.sh
	docker build -f deploy/Dockerfile --build-arg BASE=$(BASE) -t registry .

clean:
	rm -rf $(VENV) data
