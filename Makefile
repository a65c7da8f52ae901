# Two commands do everything on a fresh machine:
#   make notebooks   set up .venv, run every notebook headless (papermill), regenerate figures/ and results/
#   make test        set up .venv, run ruff, pytest on tests/ and nbval on notebooks/ (results and figures go to
#                    build/test-outputs/), then compare them with the committed results/ and figures/
#   make gpu-smoke   every notebook at SCALE=full on CUDA with shortened schedules (outputs in build/gpu-smoke/)
# Options: SCALE=small|full  SEED=0  SEEDS="0 1 2" (several seeds, summarised in results/seeds/)  DEVICE=auto|cpu|cuda
#          ALLOW_CPU_FULL=1 (SCALE=full on a CPU: hours to days; refused without it)
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
ALLOW_CPU_FULL ?=
NB ?=
PARAMS ?=
NOTEBOOKS := $(sort $(wildcard notebooks/$(NB)*.ipynb))
KERNEL := workbench
TEST_OUTPUT := build/test-outputs
# gpu-smoke: each notebook's schedules shortened so that all four run in minutes on one GPU (recorded as override
# runs under build/gpu-smoke/, never as full results). SMOKE_SCALE=small SMOKE_DEVICE=cpu checks the plumbing on a CPU.
SMOKE_SCALE ?= full
SMOKE_DEVICE ?= cuda
SMOKE_OUTPUT := build/gpu-smoke
SMOKE_PARAMS_01 := VAE_STEPS=200 GENERATOR_STEPS=200 SSL_STEPS=200 HEAD_EPOCHS=2
SMOKE_PARAMS_02 := VAE_STEPS=200 GENERATOR_STEPS=200 MAP_STEPS=200
SMOKE_PARAMS_03 := SOURCE_STEPS=200 FINETUNE_STEPS=50
SMOKE_PARAMS_04 := STAGE1_STEPS=200 SEPARATOR_STEPS=200

export HF_HUB_OFFLINE := 1
# Notebooks run headless here: text progress bars (helpers.progress), not widgets no one sees
export WORKBENCH_HEADLESS := 1
export PYTHONHASHSEED := 0
# No MPLBACKEND here: a notebook kernel must keep matplotlib's inline backend, or the executed notebooks (and the
# book) hold no figures. The saved PNGs are byte-identical under either backend; tests set Agg in tests/conftest.py.

.PHONY: setup notebooks test lint bench gpu-smoke clean-executed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt $(TORCH_SPEC) -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (workbench)" > /dev/null
	@touch $@

setup: $(VENV)/.installed

notebooks: setup
	@if [ -n "$(NB)" ] && [ -z "$(NOTEBOOKS)" ]; then echo "no notebook matches NB=$(NB)"; exit 1; fi
	@mkdir -p build/executed
	@plan=$$($(PY) -m helpers.preflight $(SCALE) "$(SEEDS)" $(DEVICE) "$(ALLOW_CPU_FULL)" $(NOTEBOOKS) -- $(PARAMS)) \
	  || exit 1; \
	params=(); for pair in $(PARAMS); do params+=(-p "$${pair%%=*}" "$${pair#*=}"); done; \
	while read -r nb seed run; do \
	  echo "== $$nb (SCALE=$(SCALE) SEED=$$seed DEVICE=$(DEVICE) $(PARAMS)) -> $$run"; \
	  env -u MPLBACKEND $(PY) -m papermill "$$nb" "build/executed/.$$run.running.ipynb" \
	    -k $(KERNEL) --cwd notebooks \
	    -p SCALE $(SCALE) -p SEED $$seed -p DEVICE $(DEVICE) "$${params[@]}" < /dev/null \
	    || { mv "build/executed/.$$run.running.ipynb" "build/executed/$$run.failed.ipynb" 2>/dev/null; \
	         echo "$$nb failed: its executed copy is build/executed/$$run.failed.ipynb"; exit 1; }; \
	  $(PY) -m helpers.executed "build/executed/.$$run.running.ipynb" "build/executed/$$run.ipynb" || exit 1; \
	done <<< "$$plan"
	$(PY) -m helpers.results README.md

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	rm -rf $(TEST_OUTPUT)
	WORKBENCH_OUTPUT=$(TEST_OUTPUT) $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  --sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1800 -p no:cacheprovider
	$(PY) -m helpers.freshness compare $(TEST_OUTPUT) .

gpu-smoke: setup
	@mkdir -p $(SMOKE_OUTPUT)/executed
	@for nb in $(NOTEBOOKS); do \
	  num=$$(basename $$nb | cut -c1-2); \
	  case $$num in 01) p="$(SMOKE_PARAMS_01)";; 02) p="$(SMOKE_PARAMS_02)";; 03) p="$(SMOKE_PARAMS_03)";; \
	    04) p="$(SMOKE_PARAMS_04)";; *) echo "gpu-smoke: no shortened schedule for $$nb"; exit 1;; esac; \
	  params=(); for pair in $$p; do params+=(-p "$${pair%%=*}" "$${pair#*=}"); done; \
	  run=$$($(PY) -m helpers.preflight $(SMOKE_SCALE) 0 $(SMOKE_DEVICE) 1 $$nb -- $$p | cut -d' ' -f3) \
	    && [ -n "$$run" ] || exit 1; \
	  echo "== $$nb (SCALE=$(SMOKE_SCALE) DEVICE=$(SMOKE_DEVICE) $$p) -> $(SMOKE_OUTPUT)/executed/$$run.ipynb"; \
	  start=$$(date +%s); \
	  env -u MPLBACKEND WORKBENCH_OUTPUT=$(SMOKE_OUTPUT) $(PY) -m papermill "$$nb" \
	    "$(SMOKE_OUTPUT)/executed/.$$run.running.ipynb" \
	    -k $(KERNEL) --cwd notebooks -p SCALE $(SMOKE_SCALE) -p SEED 0 -p DEVICE $(SMOKE_DEVICE) "$${params[@]}" \
	    || { mv "$(SMOKE_OUTPUT)/executed/.$$run.running.ipynb" "$(SMOKE_OUTPUT)/executed/$$run.failed.ipynb" \
	           2>/dev/null; echo "$$nb failed: its executed copy is $(SMOKE_OUTPUT)/executed/$$run.failed.ipynb"; \
	         exit 1; }; \
	  $(PY) -m helpers.executed "$(SMOKE_OUTPUT)/executed/.$$run.running.ipynb" "$(SMOKE_OUTPUT)/executed/$$run.ipynb" \
	    || exit 1; \
	  echo "== $$nb finished in $$(( $$(date +%s) - start )) s"; \
	done

bench: setup
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) "$$script" || exit 1; done

clean-executed:
	rm -rf build/executed

# make book: a static HTML book of the executed notebooks (build/executed/<notebook>.ipynb, written by make notebooks)
# with their outputs and figures, each with its reading notes, and the results table: build/book/html/index.html.
# Nothing is re-executed; Sphinx, MyST-NB and sphinx-book-theme come with the main install (setup).
.PHONY: book
book: setup
	$(PY) -m book.build
