"""The run list: every training run behind research/results/, one row each (group, recipe, seed, epochs, folder).

Both sides read it: ``make -C research GROUP`` trains a group's runs (``python -m research.runs train GROUP``:
skipped when finished, resumed from a checkpoint, one at a time), and the table makers summarise the same
folders (``python -m research.ladder --group ladder``, ``python -m research.ablations --group ablations``), naming
each run by the recipe this list gives it. Folders are relative to ``$EDGECIFAR_RUNS`` (default ~/edgecifar-runs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TRAIN_ONCE = Path(__file__).with_name("train_once.sh")


@dataclass(frozen=True)
class Run:
    group: str                 # the make target and the table the run belongs to
    recipe: str                # what the run is (research/recipes.py or the shipped table)
    folder: str                # under the runs root
    seed: int = 0
    epochs: int | None = None  # None: the recipe's
    val_size: int = 2000

    def flags(self) -> list[str]:
        epochs = ["--epochs", str(self.epochs)] if self.epochs else []
        return ["--seed", str(self.seed), "--val-size", str(self.val_size), *epochs]


_RUNGS = ("baseline", "deeper", "bn_gap", "l2", "early_stop", "augment")
_SOUND = (*(f"{r}_sound" for r in _RUNGS), "augment_light_sound", "augment_e20_sound")
_ZOO = ("edge_nano_kd160", "edge_micro_kd", "edge_fast_kd160_e60", "edge_best")
_KD160_PROBES = ("edge_nano_kd160_e120", "edge_nano_kd160_ls0", "edge_nano_kd160_res", "edge_nano_kd160_cutout",
                 "edge_fast_relu_kd160", "edge_nano_kd160_ema")
_STUDENTS = ("edge_micro", "edge_nano", "edge_nano_kd", "edge_nano_kd128", "edge_fast_wema", "edge_fast_kd128",
             "edge_fast_kd160")

RUNS: tuple[Run, ...] = (
    # The seed ladder, both protocols, three seeds (5,000 validation images, as the notebook's split).
    *(Run("ladder", r, f"ladder/{r}-seed{s}", s, val_size=5000) for s in (0, 1, 2) for r in (*_RUNGS, *_SOUND)
      if r != "augment_sound"),
    *(Run("ladder", r, f"ladder/{r}-seed0", val_size=5000) for r in ("mnv2_dense128", "mnv2_dropout", "mnv2_dropout_b64")),
    # Issue 28: the augmentation rung at 60 epochs, and l2 at 60 epochs as its control.
    *(Run("ladder", "augment_sound", f"ladder28/augment_sound_e60-seed{s}", s, val_size=5000) for s in (0, 1)),
    *(Run("ladder", "l2_e60_sound", f"ladder28/l2_sound_e60-seed{s}", s, val_size=5000) for s in (0, 1)),
    # MobileNetV2 0.35 fine-tuned (train/finetune.py).
    *(Run("finetune", r, f"mnv2/{r}-seed0") for r in ("mnv2_ft96", "mnv2_ft96_bnfrozen", "mnv2_ft96_top", "mnv2_ft128",
                                                      "mnv2_ft160")),
    # The zoo's models, and the ablations around them (the students' teachers, settings one step away, seeds).
    *(Run("zoo", r, f"zoo/{r}") for r in _ZOO),
    *(Run("ablations", r, f"zoo/{r}") for r in (*_STUDENTS, *_KD160_PROBES)),
    Run("ablations", "edge_nano_kd160", "zoo/edge_nano_kd160-seed1", 1),
    Run("ablations", "edge_fast_kd160_e60", "zoo/edge_fast_kd160_e60-seed1", 1),
    Run("ablations", "edge_nano_kd160_res", "zoo/edge_nano_kd160_res-seed1", 1),
    *(Run("ablations", "edge_nano_kd160_cutout", f"zoo/edge_nano_kd160_cutout-seed{s}", s) for s in (1, 2)),
    # Issue 28: consistent teaching (8 teacher-labelled views) on the tiny model; the best model at the seed's cost.
    *(Run("ablations", "edge_nano_kd160_v8", f"kd28/edge_nano_kd160_v8-seed{s}", s) for s in (0, 1)),
    *(Run("ablations", "edge_nano_kd160_stem32", f"kd28/edge_nano_kd160_stem32-seed{s}", s) for s in (0, 1)),
    *(Run("finetune", "mnv2_ft160_kd", f"mnv2/mnv2_ft160_kd-seed{s}", s) for s in (0, 1)),
    # ... and consistent teaching on the fast model (its seeds' views are the tiny model's: teacher.npz can be copied).
    *(Run("ablations", "edge_fast_kd160_e60_v8", f"kd28/edge_fast_kd160_e60_v8-seed{s}", s) for s in (0, 1)),
    # Airbench's pieces on edge_fast at a 10-epoch schedule.
    *(Run("ablations", r, f"ablations/{r}-e10-seed{s}", s, epochs=10)
      for s in (0, 1) for r in ("edge_fast", "edge_fast_wema", "edge_fast_air")),
)
GROUPS = tuple(dict.fromkeys(r.group for r in RUNS))


def runs_root() -> Path:
    """Where run folders live: ``$EDGECIFAR_RUNS``, else ~/edgecifar-runs (outside the work tree, which is laid anew)."""
    return Path(os.environ.get("EDGECIFAR_RUNS") or "~/edgecifar-runs").expanduser()


def _check(runs: tuple[Run, ...]) -> None:
    """One folder per run, and every recipe registered (refused at import, before hours of training)."""
    import research.recipes  # noqa: F401
    from edgecifar.train.recipes import RECIPES

    folders = [r.folder for r in runs]
    if len(set(folders)) != len(folders):
        raise ValueError(f"run list: a folder is listed twice: {sorted(f for f in folders if folders.count(f) > 1)}")
    unknown = sorted({r.recipe for r in runs} - set(RECIPES))
    if unknown:
        raise ValueError(f"run list: unknown recipes {unknown}")


_check(RUNS)


def group(name: str, zoo_too: bool = False) -> list[Run]:
    """The runs of group ``name`` (the ablations table also shows the zoo's runs)."""
    if name not in GROUPS:
        raise SystemExit(f"unknown group {name!r}; known: {', '.join(GROUPS)}")
    return [r for r in RUNS if r.group == name or (zoo_too and r.group == "zoo")]


def finished(runs: list[Run], root: Path | None = None) -> list[tuple[Run, Path]]:
    """The runs whose folder holds a metrics.json (a finished run), with that folder."""
    root = root or runs_root()
    return [(r, root / r.folder) for r in runs if (root / r.folder / "metrics.json").exists()]


def train(runs: list[Run], root: Path | None = None) -> None:
    """Train each run unless finished; resume a checkpointed one (research/train_once.sh). Stops at a failure."""
    root = root or runs_root()
    for r in runs:
        subprocess.run([str(TRAIN_ONCE), r.recipe, str(root / r.folder), *r.flags()], check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a group of the run list, list its runs, or name its recipes.")
    ap.add_argument("action", choices=["train", "list", "names"])
    ap.add_argument("group", choices=GROUPS)
    args = ap.parse_args(argv)
    runs = group(args.group)
    if args.action == "train":
        try:
            train(runs)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"training failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd))}")
    elif args.action == "names":
        print(" ".join(dict.fromkeys(r.recipe for r in runs)))
    else:
        for r in runs:
            print(f"{r.recipe}\t{r.seed}\t{r.epochs or '-'}\t{runs_root() / r.folder}")


if __name__ == "__main__":  # pragma: no cover
    main()
