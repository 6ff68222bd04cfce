# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment on first use, so a fresh machine needs only python3 (3.11+) and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench bench-models bench-index bench-pipeline bench-track-rules clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lfr demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

bench: bench-models bench-index bench-pipeline bench-track-rules

bench-models: $(STAMP)
	$(BIN)/python loadtest/bench_models.py

bench-index: $(STAMP)
	$(BIN)/python loadtest/bench_index.py

bench-pipeline: $(STAMP)
	$(BIN)/python loadtest/bench_pipeline.py

bench-track-rules: $(STAMP)
	$(BIN)/python loadtest/bench_track_rules.py --seed 0 1 2 --sizes 20 24 28 32 48

clean:
	rm -rf $(VENV) .lfr .pytest_cache .mypy_cache .ruff_cache
