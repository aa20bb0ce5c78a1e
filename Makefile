# Every target creates or reuses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCENARIO ?= baseline-delivered
PORT   ?= 0
PYTEST_ARGS ?=

.PHONY: venv test lint serve bench clean readme-table

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fakes scenarios tests benchmarks conftest.py
	$(BIN)/ruff format --check fakes scenarios
	$(BIN)/mypy fakes scenarios

serve: $(STAMP)
	$(BIN)/mailfakes serve $(SCENARIO) --port $(PORT)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_start.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

readme-table: $(STAMP)
	$(BIN)/python -m scenarios README.md
