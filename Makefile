# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Point the project at the shared data and weights when they sit beside the checkout.
include env.mk

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	@echo "install: edgecifar with its train and dev extras into $(VENV) (TensorFlow and friends, about 2 GB:" \
	      "a few minutes the first time, seconds from pip's cache)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

install: $(VENV)/.installed

# The main job on built-in defaults: benchmark the shipped models on this CPU.
demo: install
	$(BIN)/edgecifar bench

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info runs .pytest_cache .hypothesis

# The lab (training the zoo, the ladder, ablations, published results; hours of CPU): research/Makefile,
# `make -C research help`.
