# ganray: one-command set-up, demo and tests on a fresh machine.
#   make demo   set up, then run the quickstart on local Ray + local storage (./runs), then its report
#   make test   set up, then lint and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNS ?= ./runs
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data demo test lint unit integration bench clean

setup: $(VENV)/.installed data

# Debian packages: real Fashion-MNIST (no download at run time) and Chromium (the report's
# browser test). Only what is missing is installed; skipped where apt is missing.
APT_NEEDED = $(if $(wildcard $(FMNIST)),,dataset-fashion-mnist) $(if $(shell command -v chromium),,chromium)

data:
	@if [ -n "$(strip $(APT_NEEDED))" ] && command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_NEEDED); fi
	@[ -f $(FMNIST) ] || echo "warning: Fashion-MNIST not found at $(FMNIST); set data.uri"
	@command -v chromium >/dev/null || echo "warning: chromium not found; the report's browser test will fail"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) -m ganray.tune --space tune_spaces/quickstart.yaml --storage $(RUNS)
	$(PY) -m ganray.pull $(RUNS)/quickstart --dest $(RUNS)/quickstart-best
	$(PY) -m ganray.generate --checkpoint $(RUNS)/quickstart-best --n 64 --out $(RUNS)/quickstart-best/grid.png
	@echo "report of the search:"
	$(PY) -m ganray.analyze $(RUNS)/quickstart --out $(RUNS)/quickstart-report

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q

unit: setup
	$(VENV)/bin/pytest -q -m "not integration"

bench: setup
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache
