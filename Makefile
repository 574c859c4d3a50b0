# Two entry points: `make serve` (lean install, serves the committed models) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 3000
BIN     = $(VENV)/bin
export BENTOML_DO_NOT_TRACK = true

.PHONY: serve test setup-serve setup-dev train-temperature train-mnist container clean

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

setup-serve: $(VENV)/.serve
setup-dev: $(VENV)/.dev

serve: $(VENV)/.serve
	$(BIN)/bentoml serve --port $(PORT)

test: $(VENV)/.dev
	$(BIN)/python -m pytest

MNIST_DATA_ROOT ?= data
train-temperature: $(VENV)/.dev
	$(BIN)/python -m training temperature

train-mnist: $(VENV)/.dev
	$(BIN)/python -m training mnist --profile best --data-root $(MNIST_DATA_ROOT)

container: $(VENV)/.serve
	deploy/container.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
