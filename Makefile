# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment on first use, so a fresh machine needs only python3 (3.11+) and make.

PYTHON ?= python3
VENV ?= .venv
# The ONNX Runtime build: cpu (onnxruntime) or gpu (onnxruntime-gpu, for a CUDA host).
# `make RUNTIME=gpu test` on a GPU host; switching swaps one for the other in the venv.
RUNTIME ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(RUNTIME)-stamp
OTHER_RUNTIME := $(if $(filter gpu,$(RUNTIME)),onnxruntime,onnxruntime-gpu)

ifeq ($(filter cpu gpu,$(RUNTIME)),)
$(error RUNTIME must be cpu or gpu, not '$(RUNTIME)')
endif

.PHONY: demo test lint typecheck bench bench-models bench-index bench-pipeline bench-track-rules bench-detectors clean

# Both runtimes write the same `onnxruntime` module: if the other one is installed, both
# go before the wanted one is installed again (removing one alone would break the other).
$(STAMP): pyproject.toml
	@echo "installing lfr_actors and its dependencies into $(VENV) (first run, about a minute) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	if $(BIN)/python -m pip show --quiet $(OTHER_RUNTIME) >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall --quiet --yes onnxruntime onnxruntime-gpu; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(RUNTIME),dev]'
	rm -f $(VENV)/.installed-*-stamp
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lfr demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers, each taking whole test modules (module fixtures start one deployment for
# several tests); the slowest 25 are listed for whoever makes the suite faster next.
PYTEST_WORKERS ?= 2

test: lint typecheck
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

bench: bench-models bench-index bench-pipeline bench-track-rules bench-detectors

bench-models: $(STAMP)
	$(BIN)/python loadtest/bench_models.py

bench-index: $(STAMP)
	$(BIN)/python loadtest/bench_index.py

bench-pipeline: $(STAMP)
	$(BIN)/python loadtest/bench_pipeline.py

bench-track-rules: $(STAMP)
	$(BIN)/python loadtest/bench_track_rules.py --seed 0 1 2 --sizes 20 24 28 32 48

bench-detectors: $(STAMP)
	$(BIN)/python loadtest/bench_detectors.py

clean:
	rm -rf $(VENV) .lfr .pytest_cache .mypy_cache .ruff_cache
