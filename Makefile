# Two commands do everything on a fresh machine:
#   make notebooks   set up .venv, run every notebook headless (papermill), regenerate figures/ and results/
#   make test        set up .venv, run ruff, pytest on tests/ and nbval on notebooks/
# Options: SCALE=small|full  SEED=0  SEEDS="0 1 2" (several seeds, summarised in results/seeds/)  DEVICE=auto|cpu|cuda
#          NB=03 (only notebooks whose name starts with it)
#          PARAMS="SOURCE_STEPS=20000 FINETUNE_STEPS=5000" (a notebook's own parameters, checked before it runs; a
#          run that overrides a preset value or gives a local file is recorded with its overrides, under its own name)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a looser spec lets pip pick a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
SCALE ?= small
SEED ?= 0
SEEDS ?= $(SEED)
DEVICE ?= auto
NB ?=
PARAMS ?=
NOTEBOOKS := $(sort $(wildcard notebooks/$(NB)*.ipynb))
KERNEL := workbench

export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: setup notebooks test lint bench clean-executed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC) -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (workbench)" > /dev/null
	@touch $@

setup: $(VENV)/.installed

notebooks: setup
	@if [ -n "$(NB)" ] && [ -z "$(NOTEBOOKS)" ]; then echo "no notebook matches NB=$(NB)"; exit 1; fi
	@mkdir -p build/executed
	@params=(); for pair in $(PARAMS); do params+=(-p "$${pair%%=*}" "$${pair#*=}"); done; \
	for nb in $(NOTEBOOKS); do for seed in $(SEEDS); do \
	  run=$$($(PY) -m helpers.config run-name "$$(basename $$nb .ipynb)" $(SCALE) $$seed $(PARAMS)) || exit 1; \
	  echo "== $$nb (SCALE=$(SCALE) SEED=$$seed DEVICE=$(DEVICE) $(PARAMS)) -> $$run"; \
	  $(PY) -m papermill "$$nb" "build/executed/$$run.ipynb" \
	    -k $(KERNEL) --cwd notebooks \
	    -p SCALE $(SCALE) -p SEED $$seed -p DEVICE $(DEVICE) "$${params[@]}" || exit 1; \
	done; done
	$(PY) -m helpers.results README.md

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  --sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1800 -p no:cacheprovider

bench: setup
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) "$$script" || exit 1; done

clean-executed:
	rm -rf build/executed
