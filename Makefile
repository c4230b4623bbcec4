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

# The main job on built-in defaults: benchmark the shipped models on this CPU.
demo: install
	$(BIN)/edgecifar bench

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info runs .pytest_cache .hypothesis

# ---------------------------------------------------------------- model zoo and ladder (hours of CPU)
# Each run is skipped when its metrics.json exists and resumed when it has a checkpoint. Run folders live
# outside the work tree (RUNS), so a fresh checkout keeps the machine's trained runs.
RUNS   ?= $(HOME)/edgecifar-runs
SEEDS  ?= 0 1 2
LADDER ?= baseline deeper bn_gap l2 early_stop augment
HEADS  ?= mnv2_dense128 mnv2_dropout mnv2_dropout_b64
SOUND  ?= $(addsuffix _sound,$(LADDER) augment_light)
FINETUNE ?= mnv2_ft96 mnv2_ft96_top mnv2_ft128 mnv2_ft160
# The kd160 students distil from the zoo's mnv2_ft160_tta6_int8.tflite (committed; `make finetune zoo-finetune` remakes it).
ZOO    ?= edge_nano_kd160 edge_micro_kd edge_fast_kd160_e60 edge_best

.PHONY: ladder zoo-train finetune
# The ladder under both protocols (notebook: RUNG, sound: RUNG_sound); the table keeps rows whose runs are gone.
ladder: install
	for s in $(SEEDS); do for r in $(LADDER) $(SOUND); do bench/train_once.sh $$r $(RUNS)/ladder/$$r-seed$$s --seed $$s || exit 1; done; done
	for r in $(HEADS); do bench/train_once.sh $$r $(RUNS)/ladder/$$r-seed0 --seed 0 || exit 1; done
	$(BIN)/python -m edgecifar.bench.ladder $(RUNS)/ladder --out bench/results/ladder.md --csv bench/results/ladder.csv

# MobileNetV2 0.35 fine-tuned at 96, 128 and 160 (train/finetune.py; 33 and 46 min on one shared core, 160 on both
# cores), then their int8 and fp32 files (96: full-integer int8 and flip TTA; 128 and 160: int8 with a float stem,
# plain, flip TTA and six-view TTA).
FT := $(RUNS)/mnv2
finetune: install
	for r in $(FINETUNE); do bench/train_once.sh $$r $(RUNS)/mnv2/$$r-seed0 --val-size 2000 || exit 1; done
	[ ! -f $(FT)/mnv2_ft96-seed0/model.keras ] || [ -f $(FT)/mnv2_ft96-seed0/export/edgecifar.json ] || \
	  { $(BIN)/edgecifar export $(FT)/mnv2_ft96-seed0 --int8 --fp32 && \
	    $(BIN)/edgecifar export $(FT)/mnv2_ft96-seed0 --int8 --fp32 --tta; }
	for d in $(FT)/mnv2_ft128-seed0 $(FT)/mnv2_ft160-seed0; do [ ! -f $$d/model.keras ] || [ -f $$d/export/edgecifar.json ] || \
	  { $(BIN)/edgecifar export $$d --int8 --int8-float-ops 13 --fp32 && \
	    $(BIN)/edgecifar export $$d --int8 --int8-float-ops 13 --tta && \
	    $(BIN)/edgecifar export $$d --int8 --int8-float-ops 13 --tta crops; } || exit 1; done
	$(BIN)/python -m edgecifar.bench.ladder $(FT) --out $(RESULTS)/finetune.md --csv $(RESULTS)/finetune.csv

zoo-train: install
	for r in $(ZOO); do bench/train_once.sh $$r $(RUNS)/zoo/$$r --val-size 2000 || exit 1; done

# Ablations (bench/results/ablations.md): the tiny and fast models' full runs (make zoo-train ZOO=...), second
# seeds of edge_nano_kd160 and edge_fast_kd160_e60, the kd160 students' probes, and airbench's pieces on edge_fast
# at a 10-epoch schedule, two seeds, one core (~13 min each).
ABLATE ?= edge_fast edge_fast_wema edge_fast_air
ABLATE_SEEDS ?= 0 1
# One setting away from the kd160 students (train/recipes.py): longer schedules, no label smoothing, skip
# connections, cutout, ReLU for GELU.
KD160_PROBES := edge_nano_kd160_e120 edge_nano_kd160_ls0 edge_nano_kd160_res edge_nano_kd160_cutout edge_fast_relu_kd160
.PHONY: ablations
ablations: install
	for s in $(ABLATE_SEEDS); do for r in $(ABLATE); do \
	  bench/train_once.sh $$r $(RUNS)/ablations/$$r-e10-seed$$s --val-size 2000 --epochs 10 --seed $$s || exit 1; done; done
	bench/train_once.sh edge_nano_kd160 $(RUNS)/zoo/edge_nano_kd160-seed1 --val-size 2000 --seed 1   # a second seed of the teacher's gain
	bench/train_once.sh edge_fast_kd160_e60 $(RUNS)/zoo/edge_fast_kd160_e60-seed1 --val-size 2000 --seed 1   # and of the shipped fast model
	bench/train_once.sh edge_nano_kd160_res $(RUNS)/zoo/edge_nano_kd160_res-seed1 --val-size 2000 --seed 1
	bench/train_once.sh edge_nano_kd160_cutout $(RUNS)/zoo/edge_nano_kd160_cutout-seed1 --val-size 2000 --seed 1
	bench/train_once.sh edge_nano_kd160_cutout $(RUNS)/zoo/edge_nano_kd160_cutout-seed2 --val-size 2000 --seed 2
	for r in $(KD160_PROBES); do bench/train_once.sh $$r $(RUNS)/zoo/$$r --val-size 2000 || exit 1; done
	$(BIN)/python -m edgecifar.bench.ablations $(wildcard $(addprefix $(RUNS)/zoo/,edge_micro edge_micro_kd edge_nano edge_nano_kd edge_nano_kd128 edge_nano_kd160 edge_nano_kd160-seed1 edge_nano_kd160_ema $(KD160_PROBES) edge_nano_kd160_res-seed1 edge_nano_kd160_cutout-seed1 edge_nano_kd160_cutout-seed2 edge_fast_wema edge_fast_kd128 edge_fast_kd160 edge_fast_kd160_e60 edge_fast_kd160_e60-seed1)) \
	  $(wildcard $(foreach s,$(ABLATE_SEEDS),$(foreach r,$(ABLATE),$(RUNS)/ablations/$(r)-e10-seed$(s)))) \
	  --out $(RESULTS)/ablations.md --csv $(RESULTS)/ablations.csv

# Ship the zoo (edgecifar/zoo, <= 5 MB: int8 for all, ONNX int8 for edge_micro_kd, flip-TTA int8 where it
# pays), then publish one bench run over the zoo, the zoo's float models ($(RUNS)/zoo/*/export, not shipped: they
# show what int8 costs), the ladder, the MobileNetV2 heads and the seed's MobileNetV2 1.0 @96 reference.
ZOOFLAGS_edge_nano_kd160 := --int8
ZOOFLAGS_edge_micro_kd := --int8 --onnx-int8
ZOOFLAGS_edge_fast_kd160_e60 := --int8
ZOOFLAGS_edge_best := --int8
ZOOTTA := edge_fast_kd160_e60
# Float twins of the shipped int8 files that the zoo does not ship itself: "plain" and/or "tta" (fp32).
FLOATS_edge_nano_kd160 := plain
FLOATS_edge_micro_kd := plain
FLOATS_edge_fast_kd160_e60 := plain tta
FLOATS_edge_best := plain
RESULTS := bench/results

.PHONY: zoo zoo-finetune results float-%
zoo: $(foreach r,$(ZOO),zoo-$(r)) zoo-finetune

# The fine-tuned MobileNetV2s ship as int8 with their first 13 operators (stem to block_2_add) in float: fully int8
# the 96 model lost 1.35 points on validation, this way 0.35 (export/tflite.py). mnv2_ft128 ships plain (no TTA;
# the kd128 students' teacher); BEST_FT ships with the six-view TTA inside as the zoo's best point and the kd160
# students' teacher.
BEST_FT ?= mnv2_ft160
zoo-finetune: install
	@[ ! -f $(FT)/mnv2_ft128-seed0/model.keras ] || \
	  $(BIN)/edgecifar export $(FT)/mnv2_ft128-seed0 --int8 --int8-float-ops 13 --out edgecifar/zoo
	@[ ! -f $(FT)/$(BEST_FT)-seed0/model.keras ] || \
	  $(BIN)/edgecifar export $(FT)/$(BEST_FT)-seed0 --int8 --int8-float-ops 13 --tta crops --out edgecifar/zoo

zoo-%: install
	@[ ! -f $(RUNS)/zoo/$*/model.keras ] || $(BIN)/edgecifar export $(RUNS)/zoo/$* $(ZOOFLAGS_$*) --out edgecifar/zoo
	@[ ! -f $(RUNS)/zoo/$*/model.keras ] || [ -z "$(filter $*,$(ZOOTTA))" ] || \
	  $(BIN)/edgecifar export $(RUNS)/zoo/$* --int8 --tta --out edgecifar/zoo

float-%: install
	@[ ! -f $(RUNS)/zoo/$*/model.keras ] || { rm -rf $(RUNS)/zoo/$*/export && \
	  $(if $(filter plain,$(FLOATS_$*)),$(BIN)/edgecifar export $(RUNS)/zoo/$* --fp32 &&) \
	  $(if $(filter tta,$(FLOATS_$*)),$(BIN)/edgecifar export $(RUNS)/zoo/$* --fp32 --tta &&) true; }

# Ladder rungs are benched at seed 0 only: their seeds' accuracies are in ladder.md, and their costs are one model's.
results: install $(foreach r,$(ZOO),float-$(r))
	[ -f $(RUNS)/reference/export/edgecifar.json ] || { $(BIN)/python -m edgecifar.bench.reference $(RUNS)/reference && \
	  $(BIN)/edgecifar export $(RUNS)/reference/mnv2_w1.0_96_random.keras --int8 --out $(RUNS)/reference/export; }
	for d in $(RUNS)/ladder/*-seed0/; do [ -f $$d/export/edgecifar.json ] || [ ! -f $$d/model.keras ] || \
	  $(BIN)/edgecifar export $$d --int8 --fp32 || exit 1; done
	$(BIN)/edgecifar bench edgecifar/zoo $$(ls -d $(RUNS)/zoo/*/export $(RUNS)/ladder/*-seed0/export $(RUNS)/mnv2/*/export 2>/dev/null) $(RUNS)/reference/export \
	  --threads 1 --rounds 3 --reference $(RUNS)/reference/export/mnv2_w1.0_96_random_int8.tflite \
	  --markdown $(RESULTS)/bench.md --csv $(RESULTS)/bench.csv --json $(RESULTS)/bench.json --plot $(RESULTS)/pareto.png
	$(BIN)/python -m edgecifar.zoo $(RESULTS)/bench.json

# Untrained int8 latency of candidate architectures as fractions of the reference, one LiteRT thread (bench/probe.py).
.PHONY: probe
probe: install
	$(BIN)/python -m edgecifar.bench.probe edge_fast edge_fast:act=relu edge_nano \
	  --reference $(RUNS)/reference/export/mnv2_w1.0_96_random_int8.tflite --out $(RUNS)/probes/latency \
	  --markdown $(RESULTS)/probe.md

# Every zoo file in TensorFlow Lite Micro's interpreter (reference kernels, on this CPU): ops, smallest arena, top-1
# on the first 1,000 test images, agreement with LiteRT, fit against the chip table (bench/mcu.py). The files TFLite
# Micro cannot run are rows with their reason, and make their exit status 1: the table is still written, so ignored.
.PHONY: mcu-results
mcu-results: install
	-$(BIN)/edgecifar bench --device mcu edgecifar/zoo \
	  --markdown $(RESULTS)/mcu.md --json $(RESULTS)/mcu.json --csv $(RESULTS)/mcu.csv

# ---------------------------------------------------------------- an ARM64 board under QEMU (minutes, ~700 MB)
# bench/board/arm64.sh: a Debian arm64 root (default ~/edgecifar-runs/arm64-root, EDGECIFAR_ARM64_ROOT) with
# this checkout's wheel (base install) in /opt/venv, its sshd on 127.0.0.1:2222 (EDGECIFAR_ARM64_PORT), run
# under QEMU user mode with QEMU_CPU=cortex-a76. Needs root. `bench/board/arm64.sh stop` stops it.
ARM64 := bench/board/arm64.sh

.PHONY: arm64-board arm64-results
arm64-board:
	$(ARM64) build
	$(ARM64) start

# Every zoo file here and on the board, on the same test images: accuracy and top-1 agreement (no emulated
# timings). Re-runnable: the board gets this checkout's wheel again first.
arm64-results: install arm64-board
	$(BIN)/python -m edgecifar.bench.agreement edgecifar/zoo $$($(ARM64) url) \
	  --markdown $(RESULTS)/arm64.md --json $(RESULTS)/arm64.json --csv $(RESULTS)/arm64.csv
