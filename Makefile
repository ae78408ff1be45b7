# Two commands on a fresh machine: `make run` and `make test`. Each creates .venv and installs
# everything (torch pinned ==2.13.0 in pyproject.toml) the first time, then reuses it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-all test-gpu lint bench ui ui-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)      ## main job on the embedded data: features → backtest → policy → registry → publish
	@# exit 4 = completed with failures (listed at the end of the output): the run published
	$(BIN)/volmargin run || [ $$? -eq 4 ]

test: $(STAMP)     ## the test suite CI runs (everything not marked slow)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP) ## every test, slow ones included
	$(BIN)/python -m pytest -q

test-gpu: $(STAMP) ## the tests that need a CUDA device (skipped where there is none)
	$(BIN)/python -m pytest -m gpu -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)    ## speed figures, see benchmarks/README.md
	$(BIN)/python -m benchmarks.run_all

ui: $(STAMP)       ## MLflow UI on 127.0.0.1:5000 over mlruns/
	$(BIN)/volmargin ui

ui-check: $(STAMP) ## screenshots of the MLflow UI (needs Debian's chromium), see benchmarks/ui_screenshot.py
	$(BIN)/python -m benchmarks.ui_screenshot --out outputs/ui

clean:             ## generated outputs only (keeps .venv)
	rm -rf outputs mlruns/mlflow.db mlruns/artifacts lightning_logs
