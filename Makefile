# Every target creates or reuses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCENARIO ?= baseline-delivered
LANG_DEMO ?= en
DEMO_ARGS ?=
PORT   ?= 0
PYTEST_ARGS ?=

.PHONY: venv test lint demo serve bench bench-start bench-plugin bench-catalogue bench-dns bench-memory bench-throughput bench-rate-limit clean readme-table

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fakes scenarios tests benchmarks examples conftest.py
	$(BIN)/ruff format --check fakes scenarios
	$(BIN)/mypy fakes

# The training tour: one scenario per code, played with the reference client.
demo: $(STAMP)
	$(BIN)/mailfakes demo --lang $(LANG_DEMO) $(DEMO_ARGS)

serve: $(STAMP)
	$(BIN)/mailfakes serve $(SCENARIO) --port $(PORT)

BENCH_ARGS ?=

# Start-up figures (issue 2), the plugin against smtpdfix and a bare aiosmtpd
# Controller, and the whole catalogue through the reference client (issue 3).
# bench-plugin installs smtpdfix into .bench/site the first time (needs PyPI).
bench: bench-start bench-plugin bench-catalogue bench-dns bench-memory bench-throughput bench-rate-limit

bench-start: $(STAMP)
	$(BIN)/python benchmarks/bench_start.py --commands $(BENCH_ARGS)

bench-plugin: $(STAMP)
	$(BIN)/python benchmarks/bench_plugin.py $(BENCH_ARGS)

bench-catalogue: $(STAMP)
	$(BIN)/python benchmarks/bench_catalogue.py $(BENCH_ARGS)

bench-dns: $(STAMP)
	$(BIN)/python benchmarks/bench_dns.py $(BENCH_ARGS)

# Retained memory per session beside bare aiosmtpd, then 100,000 sessions at the default limits.
bench-memory: $(STAMP)
	$(BIN)/python benchmarks/bench_memory.py $(BENCH_ARGS)

# Messages per second under 50 concurrent clients, beside bare aiosmtpd (--profile: where the time goes).
bench-throughput: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py $(BENCH_ARGS)

# 50 concurrent clients against limits-rate-421, per connections and per messages: exact 421 counts.
bench-rate-limit: $(STAMP)
	$(BIN)/python benchmarks/bench_rate_limit.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache *.egg-info

readme-table: $(STAMP)
	$(BIN)/python -m mailfakes.markdown README.md
