# Two entry points, both self-installing on a fresh machine:
#   make demo   build the embedded phantom dataset and run the whole pipeline on it
#   make test   run the test suite (unit tests and the tiny end-to-end run)
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# The CPU build of torch is installed first so that pip does not pull a CUDA
# build; on a GPU machine set TORCH to the CUDA wheel you want.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint restore clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) all

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/snakemake --lint

# On a fresh clone: fetch the versioned data and outputs, then mark them up to
# date in DAG order so that Snakemake reuses them (docs/versioning.md).
# Pass the run's config as SNAKEMAKE_ARGS="--configfile myconfig.yaml".
restore: install
	$(BIN)/dvc pull
	$(BIN)/snakemake --touch --cores 1 all $(SNAKEMAKE_ARGS)

clean:
	rm -rf results resources logs .test/results .test/resources .test/logs
