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

.PHONY: venv lab test lint format pytest nbval notebooks bench checkpoint checkpoint-ssd300 \
        gpu-check gpu-wheels test-ui clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), \
	  f"ssdlib needs Python >= 3.11, but $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.11 ..."'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools' "Editable installation" banner is advice for packagers; a newcomer reads it as a failure
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name ssdlib --display-name "Python (ssdlib)"
	@rm -f $(VENV)/.installed-*
	@touch $@

## Open the notebooks in JupyterLab (the main job).
## It opens on the start page, with one kernel in the Launcher and no news pop-up.
lab: venv
	@install -D -m 644 .jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --notebook-dir=notebooks --LabApp.default_url=/lab/tree/00_start_here.ipynb \
	  --KernelSpecManager.allowed_kernelspecs=ssdlib --MappingKernelManager.default_kernel_name=ssdlib \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

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

## The shipped SSD300 (8732 default boxes, an eighth of VGG16's width): seeded, 3000 steps,
## about an hour on 2 CPU cores.
checkpoint-ssd300: venv
	$(BIN)/python -m ssdlib train --preset ssd300-cpu --dataset shapes --seed 0 \
	  --out runs/ssd300-cpu --overwrite
	$(BIN)/python -m ssdlib export --checkpoint runs/ssd300-cpu/best.pt \
	  --out data/ssd300_cpu_shapes.pt

## The one prepared GPU check (on a CUDA machine; no venv, the machine's own torch): the
## ssd300-gpu preset for its 5 minutes, the 500 val images, the GPU bench rows; within 9 minutes.
GPU_OUT    ?= gpu-check
GPU_WHEELS ?= gpu-wheels
gpu-check:
	$(PYTHON) -m benchmarks.gpu_check --out $(GPU_OUT) --wheels $(GPU_WHEELS)

## Wheels for what the GPU machine may lack (Python 3.12, x86_64), fetched here from the index.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --only-binary=:all: --python-version 3.12 \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d $(GPU_WHEELS) numpy pillow tqdm matplotlib pycocotools

## JupyterLab in headless Chromium: runs notebook 02 and moves a slider.
test-ui: venv
	$(BIN)/pytest -m ui -p no:cacheprovider tests/ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ui-artifacts
