# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared

# Point the project at the shared data and weights when they sit beside the checkout.
ifneq ($(wildcard $(SHARED)/data/cifar-10-python.tar.gz),)
export EDGECIFAR_DATA ?= $(abspath $(SHARED)/data/cifar-10-python.tar.gz)
endif
ifneq ($(wildcard $(SHARED)/weights/*.h5),)
export EDGECIFAR_WEIGHTS ?= $(abspath $(SHARED)/weights)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/edgecifar train baseline --epochs 1 --out runs/demo-baseline --overwrite

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info runs .pytest_cache .hypothesis

# ---------------------------------------------------------------- model zoo and ladder (hours of CPU)
# Each run is skipped when its metrics.json exists and resumed when it has a checkpoint.
SEEDS  ?= 0 1 2
LADDER ?= baseline deeper bn_gap l2 early_stop augment
HEADS  ?= mnv2_dense128 mnv2_dropout mnv2_dropout_b64
ZOO    ?= edge_tiny edge_fast edge_best

.PHONY: ladder zoo-train
ladder: install
	for s in $(SEEDS); do for r in $(LADDER); do bench/train_once.sh $$r runs/ladder/$$r-seed$$s --seed $$s || exit 1; done; done
	for r in $(HEADS); do bench/train_once.sh $$r runs/ladder/$$r-seed0 --seed 0 || exit 1; done
	$(BIN)/python -m edgecifar.bench.ladder runs/ladder --out bench/results/ladder.md --csv bench/results/ladder.csv

zoo-train: install
	for r in $(ZOO); do bench/train_once.sh $$r runs/zoo/$$r --val-size 2000 || exit 1; done
