# Two entry points: `make serve` (lean install, serves the committed models) and `make test`.
#
# PYTHON chooses the interpreter of every target (`make serve PYTHON=python3.13`). The versions that work are
# pyproject.toml's requires-python, read here, and make checks PYTHON against them before it creates anything.
# A venv belongs to one Python version: when PYTHON is another version, make says so, deletes the venv and
# makes it again with PYTHON (so .venv/bin/python is always the Python last asked for).
PYTHON ?= python3
VENV   ?= .venv
LEAN   ?= .venv-lean
PORT   ?= 3000
BIN     = $(VENV)/bin
export BENTOML_DO_NOT_TRACK = true

# The supported Pythons, from requires-python (e.g. ">=3.11,<3.15"): PY_RANGE reads "3.11 to 3.14".
comma := ,
REQUIRES_PYTHON := $(subst $(comma), ,$(shell sed -n 's/^requires-python *= *"\(.*\)"/\1/p' pyproject.toml))
PY_LOWEST := $(patsubst >=%,%,$(filter >=%,$(REQUIRES_PYTHON)))
PY_BEYOND := $(patsubst <%,%,$(filter <%,$(REQUIRES_PYTHON)))
PY_RANGE  := $(PY_LOWEST)$(if $(PY_BEYOND), to $(shell echo $(PY_BEYOND) | awk -F. '{ print $$1 "." $$2 - 1 }'), or newer)
# PYTHON's major.minor version, empty when it does not run; each venv holds a marker file named after the version that made it.
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PY_SUPPORTED := $(shell echo $(PY_VERSION) $(PY_LOWEST) $(or $(PY_BEYOND),999.0) | \
                  awk '{ split($$1, v, "."); split($$2, lo, "."); split($$3, hi, "."); n = v[1] * 1000 + v[2]; \
                         print (n >= lo[1] * 1000 + lo[2] && n < hi[1] * 1000 + hi[2]) ? "yes" : "" }')
EXAMPLE_GOAL = $(or $(firstword $(MAKECMDGOALS)),serve)

.PHONY: serve test test-full test-lean setup-serve setup-dev browser haproxy prometheus check-python train-temperature train-mnist container clean

# Stops make, in one sentence, when PYTHON does not run or is outside requires-python.
check-python:
ifeq ($(PY_VERSION),)
	@echo "make: PYTHON=$(PYTHON) does not run here; give PYTHON= the name or full path of an installed Python $(PY_RANGE) (with pyenv: PYTHON=\$$(pyenv root)/versions/<version>/bin/python)." >&2; exit 1
else ifeq ($(PY_SUPPORTED),)
	@echo "make: PYTHON=$(PYTHON) is Python $(PY_VERSION), but this project needs Python $(PY_RANGE) (pyproject.toml's requires-python); choose one with PYTHON=, e.g. make $(EXAMPLE_GOAL) PYTHON=python$(PY_LOWEST)." >&2; exit 1
endif

# $(call venv,DIR): makes DIR a venv of PYTHON, first deleting one that another Python version made.
define venv
	@if [ -d $(1) ] && ! grep -qx "version *= *$(PY_VERSION)\(\.[0-9a-z]*\)*" $(1)/pyvenv.cfg 2>/dev/null; then \
	  echo "make: $(1) was made by another Python version ($$(sed -n 's/^version *= *//p' $(1)/pyvenv.cfg 2>/dev/null)); making it again with Python $(PY_VERSION) ($(PYTHON))"; \
	  rm -rf $(1); fi
	@[ -x $(1)/bin/python ] || { echo "$(PYTHON) -m venv $(1)"; $(PYTHON) -m venv $(1) && $(1)/bin/pip install -q --upgrade pip; }
	@touch $(1)/.python-$(PY_VERSION)
endef

$(VENV)/.python-$(PY_VERSION): | check-python
	$(call venv,$(VENV))

$(LEAN)/.python-$(PY_VERSION): | check-python
	$(call venv,$(LEAN))

# Serving needs no torch: ONNX Runtime runs the exported models.
$(VENV)/.serve: pyproject.toml $(VENV)/.python-$(PY_VERSION) | check-python
	$(BIN)/pip install -q -e .
	touch $@

# Training, TorchScript and the tests need torch (pip, not uv: pip finds the local wheels).
$(VENV)/.dev: pyproject.toml $(VENV)/.python-$(PY_VERSION) | check-python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.serve

# The lean tier: the serving dependencies plus the test tools, no torch (what the lean image runs).
$(LEAN)/.test: pyproject.toml $(LEAN)/.python-$(PY_VERSION) | check-python
	$(LEAN)/bin/pip install -q -e ".[test]"
	touch $@

setup-serve: $(VENV)/.serve
setup-dev: $(VENV)/.dev

serve: $(VENV)/.serve
	$(BIN)/bentoml serve --port $(PORT)

# tests/test_browser.py drives Debian's chromium (Playwright cannot download its browsers here), at
# /usr/bin/chromium or CHROMIUM. Installed when missing and apt-get can (as root); the package lists are
# fetched only when apt cannot install it without them (missing, as on a fresh machine, or stale).
browser:
	@chromium=$${CHROMIUM:-/usr/bin/chromium}; \
	if [ ! -x "$$chromium" ] && [ -z "$$CHROMIUM" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make: installing Debian's chromium for tests/test_browser.py (apt-get install chromium)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	fi; \
	[ -x "$$chromium" ] || { echo "make: the browser tests need Chromium at $$chromium: install Debian's chromium (sudo apt-get install chromium) or point CHROMIUM= at a Chromium or Chrome binary, e.g. make test CHROMIUM=/path/to/chromium." >&2; exit 1; }

# tests/needs_torch/test_rollout.py puts Debian's haproxy in front of two replicas; installed the same way.
haproxy:
	@if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make: installing Debian's haproxy for tests/needs_torch/test_rollout.py (apt-get install haproxy)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1 \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }; \
	fi; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { echo "make: the rollout test needs HAProxy: install Debian's haproxy (sudo apt-get install haproxy)." >&2; exit 1; }

# tests/prometheus/ checks deploy/prometheus/rules.yml with Debian's promtool and runs it in Debian's prometheus against
# a real server; the package holds both. Installed the same way.
prometheus:
	@if { ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; } && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make: installing Debian's prometheus for tests/prometheus/ (apt-get install prometheus)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1 \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }; \
	fi; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || { echo "make: the alert-rule tests need Prometheus and promtool: install Debian's prometheus (sudo apt-get install prometheus)." >&2; exit 1; }

# Everything with torch installed, then the service's tests again in the lean environment, where torch is absent.
test: test-full test-lean

test-full: check-python browser haproxy prometheus $(VENV)/.dev
	$(BIN)/python -m pytest

# Also the way to run the service's tests on another Python: `make test-lean PYTHON=python3.13`. The alert rules
# (tests/prometheus/, about 1.5 minutes) are the full tier's: they test the rules, not the Python.
test-lean: check-python browser $(LEAN)/.test
	@$(LEAN)/bin/python -c "import importlib.util, sys; sys.exit('torch is installed in $(LEAN)' if importlib.util.find_spec('torch') else 0)"
	$(LEAN)/bin/python -m pytest tests --ignore=tests/needs_torch --ignore=tests/prometheus

MNIST_DATA_ROOT ?= data
train-temperature: $(VENV)/.dev
	$(BIN)/python -m training temperature

train-mnist: $(VENV)/.dev
	$(BIN)/python -m training mnist --profile committee --cache-dir build/mnist-members --data-root $(MNIST_DATA_ROOT)

container: $(VENV)/.serve
	deploy/container.sh

clean:
	rm -rf $(VENV) $(LEAN) *.egg-info .pytest_cache
