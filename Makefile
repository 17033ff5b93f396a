# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench load chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/regimen dev

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser tests need a Chromium: found, else fetched or installed (tests/browser/chromium.py),
# else one line saying what to install and no test runs.
test: lint
	$(BIN)/python -m tests.browser.chromium
	$(BIN)/pytest -W error $(PYTEST_ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

# The full load run (bench/bench_load.py): 50 patients through the booking pages for five
# minutes beside the admin API at 10 requests a second; `make bench` runs the same for 60 s.
load: $(VENV)/.installed-bench
	$(BIN)/python -m bench.bench_load --seconds 300 --patients 50 --admin-rate 10

# PostgreSQL stopped (fast, immediate) and started again, and backends killed, under load with
# all three services running: 50 cycles unless CYCLES is given (bench/chaos.py).
CYCLES ?= 50
chaos: $(VENV)/.installed-bench
	$(BIN)/python -m bench.chaos --cycles $(CYCLES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
