# ganray: one-command set-up, demo and tests on a fresh machine.
#   make demo   set up, then run the quickstart on local Ray + local storage (./runs)
#   make test   set up, then lint and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNS ?= ./runs
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data demo test lint unit integration bench clean

setup: $(VENV)/.installed data

# Real Fashion-MNIST from Debian (no download at run time). Skipped where apt is missing.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi
	@[ -f $(FMNIST) ] || echo "warning: Fashion-MNIST not found at $(FMNIST); set data.uri"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) -m ganray.tune --space tune_spaces/quickstart.yaml --storage $(RUNS)
	$(PY) -m ganray.pull $(RUNS)/quickstart --dest $(RUNS)/quickstart-best
	$(PY) -m ganray.generate --checkpoint $(RUNS)/quickstart-best --n 64 --out $(RUNS)/quickstart-best/grid.png

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
