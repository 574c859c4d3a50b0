# Two entry points: `make serve` (lean install, serves the committed models) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
LEAN   ?= .venv-lean
PORT   ?= 3000
BIN     = $(VENV)/bin
export BENTOML_DO_NOT_TRACK = true

.PHONY: serve test test-full test-lean setup-serve setup-dev train-temperature train-mnist container clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving needs no torch: ONNX Runtime runs the exported models.
$(VENV)/.serve: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Training, TorchScript and the tests need torch (pip, not uv: pip finds the local wheels).
$(VENV)/.dev: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.serve

# The lean tier: the serving dependencies plus the test tools, no torch (what the lean image runs).
$(LEAN)/.test: pyproject.toml
	$(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/pip install -q --upgrade pip
	$(LEAN)/bin/pip install -q -e ".[test]"
	touch $@

setup-serve: $(VENV)/.serve
setup-dev: $(VENV)/.dev

serve: $(VENV)/.serve
	$(BIN)/bentoml serve --port $(PORT)

# Everything with torch installed, then the service's tests again in the lean environment, where torch is absent.
test: test-full test-lean

test-full: $(VENV)/.dev
	$(BIN)/python -m pytest

test-lean: $(LEAN)/.test
	@$(LEAN)/bin/python -c "import importlib.util, sys; sys.exit('torch is installed in $(LEAN)' if importlib.util.find_spec('torch') else 0)"
	$(LEAN)/bin/python -m pytest tests --ignore=tests/needs_torch

MNIST_DATA_ROOT ?= data
train-temperature: $(VENV)/.dev
	$(BIN)/python -m training temperature

train-mnist: $(VENV)/.dev
	$(BIN)/python -m training mnist --profile committee --cache-dir build/mnist-members --data-root $(MNIST_DATA_ROOT)

container: $(VENV)/.serve
	deploy/container.sh

clean:
	rm -rf $(VENV) $(LEAN) *.egg-info .pytest_cache
