# The two commands of the README. Everything installs into .venv beside this file.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all lint

$(BIN)/colorize: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build, never a CUDA download
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/colorize

demo: setup
	$(BIN)/colorize demo --out demo-out

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=20

test-all: lint
	$(BIN)/python -m pytest -q
