# Two commands do all set-up on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The final model is the one shipped in the package: src/mnistlab/weights/final.json names its
# experiment and run (`make ship SHIP_RUN=...` rewrites it), and everything below follows it.
FINAL_JSON := src/mnistlab/weights/final.json
final = $(shell $(PYTHON) -c "import json, sys; print(json.load(open(sys.argv[1]))['$(1)'])" $(FINAL_JSON))
EXPERIMENT ?= experiments/$(call final,experiment).toml
# Compiled, the final experiment trains in under 4 minutes on 2 cores (docs/performance.md);
# `make run TRAIN_FLAGS=` trains without compiling (no C++ compiler needed).
TRAIN_FLAGS ?= --compile

.PHONY: run test lint format fetch bench clean ship report serve notebook

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

fetch: $(VENV)/.installed
	$(BIN)/mnistlab data fetch

run: fetch
	$(BIN)/mnistlab train $(EXPERIMENT) $(TRAIN_FLAGS)

test: $(VENV)/.installed-dev
	@# The search tests start a PostgreSQL server of their own; on CI, install one if missing.
	@if [ "$$CI" = true ] && ! command -v initdb >/dev/null && \
		! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mnistlab data fetch
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The drawing page on http://127.0.0.1:8000/ (SERVE_FLAGS="--port 8080" to change).
serve: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[web]'
	$(BIN)/mnistlab serve $(SERVE_FLAGS)

bench: fetch
	$(BIN)/mnistlab bench seed --out results/bench/seed.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# Ship a finished run's weights inside the package (used by `mnistlab predict` and `export`).
SHIP_RUN ?= $(call final,run)
ship: $(VENV)/.installed
	$(BIN)/python -c "import sys; from mnistlab.runs.ship import ship_model; ship_model(sys.argv[1])" $(SHIP_RUN)

# Regenerate the committed tables, report and pages from the committed run directories:
# the seed's runs, then every drill-down run, results/<experiment>/<setting>/seed<N>.
RUNS = $(sort $(wildcard results/seed/*/seed*)) $(sort $(wildcard results/[0-9]*/*/seed*))
# The final experiment's seeds in the shipped run's setting (results/<experiment>/<setting>/).
FINAL_RUNS = $(sort $(wildcard $(dir $(SHIP_RUN))seed*))
# The README's table: narrow enough for its 100-character lines.
FINAL_COLUMNS := 'params,MACs,RF,best test,last test,last-3 test,first ≥99.4,train s'
# The Fashion-MNIST drill (docs/fashion.md): its runs shared the machine, so no timings.
FASHION_RUNS = $(sort $(wildcard results/fashion-*/*/seed*))
FASHION_COLUMNS := 'params,MACs,RF,best test,last test,last-3 test,best train,gap,first ≥90'
FASHION_FINAL = results/fashion-02-wide/cpu-2t-compiled/seed2
report: $(VENV)/.installed
	$(BIN)/mnistlab compare $(RUNS) --format markdown --out results/compare.md
	$(BIN)/mnistlab compare results/timing --format markdown --out results/timing/compare.md
	$(BIN)/mnistlab compare $(FINAL_RUNS) --format markdown --columns $(FINAL_COLUMNS) \
		--out results/final-compare.md
	$(BIN)/mnistlab compare results/cuda --format markdown --out results/cuda/compare.md
	$(BIN)/mnistlab compare $(FASHION_RUNS) --format markdown --columns $(FASHION_COLUMNS) \
		--out results/fashion-compare.md
	$(BIN)/mnistlab report $(FASHION_RUNS) --final $(FASHION_FINAL) --out results/fashion-report
	$(BIN)/mnistlab summary seed > results/seed-summary.txt
	$(BIN)/mnistlab report $(RUNS) --final $(SHIP_RUN) --out reports
	$(BIN)/mnistlab predict examples/digits/*.png examples/digits/*.jpg examples/digits/*.gif \
		examples/digits/*.bmp > results/predict-examples.txt
	$(BIN)/python tools/splice_readme.py README.md docs/*.md

# Execute the notebooks and keep their outputs (about a minute each on 2 cores).
notebook: fetch $(VENV)/.installed-dev
	$(BIN)/python tools/execute_notebook.py examples/drill-down.ipynb
	$(BIN)/python tools/execute_notebook.py examples/own-model.ipynb
