# Two commands get a fresh clone going: `make run` and `make test` (README).
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-faults lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/invoiceiq serve --host 127.0.0.1 --port $(PORT)

test: install
	$(BIN)/python -m pytest

# The 300-flow fault run with `serve` and `worker` processes SIGKILLed at random (tests/faults);
# `make test` runs the 50-flow version without kills. Needs PostgreSQL.
test-faults: install
	FAULT_FLOWS=$${FAULT_FLOWS:-300} FAULT_KILLS=1 $(BIN)/python -m pytest -m faults -k killed tests/faults

# Load and end-to-end benchmarks (README, "Performance"); not part of `make test`.
# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS="ingest --duration 30"`.
bench: install
	bash bench/prepare.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: install
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache invoiceiq.db invoiceiq.db-wal invoiceiq.db-shm
