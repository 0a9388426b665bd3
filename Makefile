# Two commands do all set-up on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
EXPERIMENT ?= experiments/19-thin-stem.toml
# Compiled, the final experiment trains in under 4 minutes on 2 cores (README, Training time);
# `make run TRAIN_FLAGS=` trains without compiling (no C++ compiler needed).
TRAIN_FLAGS ?= --compile

.PHONY: run test lint format fetch bench clean ship report

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

bench: fetch
	$(BIN)/mnistlab bench seed --out results/bench/seed.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# Ship a finished run's weights inside the package (used by `mnistlab predict` and `export`).
SHIP_RUN ?= results/19-thin-stem-2threads-seed1
ship: $(VENV)/.installed
	$(BIN)/python -c "import sys; from mnistlab.ship import ship_model; ship_model(sys.argv[1])" $(SHIP_RUN)

# Regenerate the committed comparison table and report from the committed run directories.
RUNS := results/seed results/seed-cpu results/01-skeleton results/02-batchnorm results/03-gap-dropout \
	results/04-augment results/05-final-seed1 results/05-final-seed2 results/06-tiny \
	results/06-tiny-seed2 results/06-tiny-seed3 \
	results/07-final-seed1 results/08-final-seed1 results/08-final-seed2 results/08-final-seed3 \
	results/09-deep-seed1 results/09-deep-seed2 results/09-deep-seed3 \
	results/10-deep-tiny-seed1 results/10-deep-tiny-seed2 results/10-deep-tiny-seed3 \
	results/11-smooth-seed1 results/11-smooth-seed2 results/11-smooth-seed3 \
	results/12-tiny-smooth-seed1 results/12-tiny-smooth-seed2 results/12-tiny-smooth-seed3 \
	results/13-deep-steps-seed1 results/13-deep-steps-seed2 results/13-deep-steps-seed3 \
	results/14-tiny-steps-seed1 results/14-tiny-steps-seed2 results/14-tiny-steps-seed3 \
	results/15-early-pool-seed1 results/16-strided-seed1 results/17-pool-first-seed1 \
	results/18-strided-deep-seed1 results/19-thin-stem-seed1 results/19-thin-stem-2threads-seed1 \
	results/19-thin-stem-seed2 results/19-thin-stem-seed3 results/20-thin-tiny-seed1 \
	results/21-thin-steps-seed1 results/21-thin-steps-seed2 results/21-thin-steps-seed3
# The final experiment's three seeds, each trained at 2 threads, compiled, alone on the machine.
FINAL_RUNS := results/19-thin-stem-2threads-seed1 results/19-thin-stem-seed2 results/19-thin-stem-seed3
report: $(VENV)/.installed
	$(BIN)/mnistlab compare $(RUNS) --format markdown --out results/compare.md
	$(BIN)/mnistlab compare results/timing --format markdown --out results/timing/compare.md
	$(BIN)/mnistlab compare $(FINAL_RUNS) --format markdown --out results/final-compare.md
	$(BIN)/mnistlab compare results/cuda --format markdown --out results/cuda/compare.md
	$(BIN)/mnistlab summary seed > results/seed-summary.txt
	$(BIN)/mnistlab report $(RUNS) --final results/19-thin-stem-2threads-seed1 --out reports
	$(BIN)/mnistlab predict examples/digits/*.png examples/digits/*.jpg examples/digits/*.gif \
		examples/digits/*.bmp > results/predict-examples.txt
	$(BIN)/python tools/splice_readme.py README.md
