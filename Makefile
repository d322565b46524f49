# The README's verbs. `make lab` and `make test` are the only two a fresh machine needs;
# both create .venv on first use and reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp's name carries a hash of pyproject.toml: an edited pyproject reinstalls, nothing else does.
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# nbval options, shared by `make test` and `make nbval`.
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
          --nbval-cell-timeout 900 -p no:cacheprovider

.PHONY: venv lab test lint format pytest nbval notebooks bench checkpoint test-ui clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), \
	  f"ssdlib needs Python >= 3.11, but $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.11 ..."'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name ssdlib --display-name "Python (ssdlib)"
	@rm -f $(VENV)/.installed-*
	@touch $@

## Open the notebooks in JupyterLab (the main job).
lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## Everything CI checks: lint, unit tests, then every notebook against its stored outputs.
test: venv lint pytest nbval

lint: venv
	$(BIN)/ruff check ssdlib tests benchmarks notebooks .ci
	$(BIN)/ruff format --check ssdlib tests benchmarks notebooks .ci

format: venv
	$(BIN)/ruff check --fix ssdlib tests benchmarks notebooks .ci
	$(BIN)/ruff format ssdlib tests benchmarks notebooks .ci

pytest: venv
	$(BIN)/pytest -n 2 --dist loadgroup tests

nbval: venv
	$(BIN)/pytest $(NBVAL) notebooks

## Re-execute every notebook in place, top to bottom, with the committed code.
notebooks: venv
	$(BIN)/python .ci/execute_notebooks.py notebooks/*.ipynb

## Speed and memory against torchvision / pycocotools; writes benchmarks/results/.
bench: venv
	$(BIN)/python -m benchmarks.run

## The small trained model the concept notebooks use (seeded; about 15 minutes on 2 cores).
checkpoint: venv
	$(BIN)/python -m ssdlib train --preset cpu-tiny --dataset shapes --max-minutes 15 \
	  --seed 0 --out runs/cpu-tiny --overwrite
	$(BIN)/python -m ssdlib export --checkpoint runs/cpu-tiny/best.pt --out data/cpu_tiny_shapes.pt

## JupyterLab in headless Chromium: runs notebook 02 and moves a slider.
test-ui: venv
	$(BIN)/pytest -m ui -p no:cacheprovider tests/ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ui-artifacts
