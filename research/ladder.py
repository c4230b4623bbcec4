"""Summarise training runs of the seed ladder beside the seed notebook's published numbers.

``python -m research.ladder RUNS_DIR... [--out FILE.md] [--csv FILE.csv]`` reads every
``RUNS_DIR/*/metrics.json`` and writes, per rung and protocol (``notebook``: the notebook's way; ``sound``: a
decaying rate and the best validation epoch, recipes ``RUNG_sound``, train/recipes.py): seeds, test accuracy
mean and spread (min-max), validation accuracy, its range over the last epochs (``history.csv``: how much the
final-epoch figure owes to luck), epochs actually run and the test image count, with the reference figure.
Rows already in the ``--csv`` file whose runs are not in RUNS_DIR are kept as they are, so a table can grow
by a protocol on a machine that no longer holds the earlier runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from edgecifar.fileio import write_table
from edgecifar.train.recipes import PROTOCOLS, ladder_protocol

#: The reference notebook's figures (full official test set, 10,000 images; backbone width 1.0).
SEED_NOTEBOOK: dict[str, float] = {
    "baseline": 0.689, "deeper": 0.734, "bn_gap": 0.731, "l2": 0.725, "early_stop": 0.729, "augment": 0.769,
    "mnv2_dense128": 0.866, "mnv2_dropout": 0.856, "mnv2_dropout_b64": 0.856,
}
#: Rungs trained with one technique done differently (train/recipes.py), each shown right after the rung it varies
#: and beside that rung's notebook figure: ``augment_light`` is ``augment`` with flip + 2-pixel translation,
#: ``augment_e20`` the rung at the ladder's 20 epochs, ``l2_e60`` the l2 rung at augment's 60 (its control).
VARIANT_OF: dict[str, str] = {"l2_e60": "l2", "augment_e20": "augment", "augment_light": "augment"}
ORDER = [name for rung in SEED_NOTEBOOK for name in (rung, *(v for v, of in VARIANT_OF.items() if of == rung))]
LAST_EPOCHS = 5   # the validation range column covers this many final epochs of every seed


@dataclass(frozen=True)
class LadderRow:
    recipe: str                   # the rung (``bn_gap``), its protocol apart
    protocol: str
    seeds: tuple[int, ...]
    test_mean: float
    test_min: float
    test_max: float
    val_mean: float
    val_last_min: float | None    # lowest / highest validation accuracy over the last epochs of every seed
    val_last_max: float | None
    epochs: tuple[int, ...]
    test_images: int
    train_images: int
    train_minutes: float
    reference: float | None


def load_run(folder: Path, recipe: str | None = None) -> dict:
    """A run's metrics, with ``val_history`` (validation accuracy per epoch) from its history.csv; ``recipe``
    (the run list's name for it) replaces the recorded one: ``l2_sound --epochs 60`` is ``l2_e60_sound``."""
    m = json.loads((folder / "metrics.json").read_text())
    history = folder / "history.csv"
    if history.exists():
        m["val_history"] = [float(r["val_accuracy"]) for r in csv.DictReader(history.read_text().splitlines())]
    return {**m, "recipe": recipe or m["recipe"]}


def load_runs(root: Path) -> list[dict]:
    """Every run's metrics under ``root`` (one folder per run)."""
    return [load_run(path.parent) for path in sorted(Path(root).glob("*/metrics.json"))]


def ordered(rows: list[LadderRow]) -> list[LadderRow]:
    """Ladder order first, then the others by name; within a rung, the protocols in their table's order."""
    rank = lambda r: (ORDER.index(r.recipe) if r.recipe in ORDER else len(ORDER), r.recipe,  # noqa: E731
                      list(PROTOCOLS).index(r.protocol) if r.protocol in PROTOCOLS else len(PROTOCOLS))
    return sorted(rows, key=rank)


def summarise(runs: list[dict]) -> list[LadderRow]:
    """One row per rung and protocol, aggregating seeds."""
    by_recipe: dict[tuple[str, str], list[dict]] = {}
    for m in runs:
        rung, protocol = ladder_protocol(m["recipe"])
        protocol = protocol if rung in ORDER or protocol != "notebook" else "—"  # a recipe of its own
        by_recipe.setdefault((rung, protocol), []).append(m)
    rows = []
    for (name, protocol), ms in by_recipe.items():
        ms = sorted(ms, key=lambda m: m["seed"])
        tests = [m["test_accuracy"] for m in ms]
        last = [v for m in ms for v in m.get("val_history", [])[-LAST_EPOCHS:]]
        rows.append(LadderRow(name, protocol, tuple(m["seed"] for m in ms), statistics.fmean(tests), min(tests), max(tests),
                              statistics.fmean(m["val_accuracy"] for m in ms),
                              min(last) if last else None, max(last) if last else None, tuple(m["epochs"] for m in ms),
                              ms[0]["test_images"], ms[0].get("train_images", 0),
                              statistics.fmean(m.get("train_seconds", 0.0) for m in ms) / 60,
                              SEED_NOTEBOOK.get(VARIANT_OF.get(name, name))))
    return ordered(rows)


def markdown(rows: list[LadderRow]) -> str:
    """The table, then one line naming the data behind it (the notebook used the official 50,000/10,000)."""
    out = ["| recipe | protocol | seeds | test accuracy, mean (min–max) | test images | validation accuracy | "
           f"validation, last {LAST_EPOCHS} epochs (min–max) | epochs run | training, min (mean) | "
           "seed notebook (10,000 images) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ref = f"{r.reference:.1%}" if r.reference is not None else "—"
        last = f"{r.val_last_min:.1%}–{r.val_last_max:.1%}" if r.val_last_min is not None else "—"
        out.append(f"| `{r.recipe}` | {r.protocol} | {len(r.seeds)} | {r.test_mean:.1%} ({r.test_min:.1%}–{r.test_max:.1%}) | "
                   f"{r.test_images:,} | {r.val_mean:.1%} | {last} | {', '.join(map(str, r.epochs))} | "
                   f"{r.train_minutes:.1f} | {ref} |")
    trained = sorted({r.train_images for r in rows})
    out += ["", f"Training images per run: {', '.join(f'{n:,}' for n in trained)}; test images as in the table."]
    return "\n".join(out) + "\n"


def to_csv(rows: list[LadderRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe", "protocol", "seeds", "test_mean", "test_min", "test_max", "test_images", "val_mean", "val_last_min",
                "val_last_max", "epochs", "train_images", "train_minutes", "seed_notebook"])
    opt = lambda v: f"{v:.4f}" if v is not None else ""  # noqa: E731
    for r in rows:
        w.writerow([r.recipe, r.protocol, " ".join(map(str, r.seeds)), f"{r.test_mean:.4f}", f"{r.test_min:.4f}",
                    f"{r.test_max:.4f}", r.test_images, f"{r.val_mean:.4f}", opt(r.val_last_min), opt(r.val_last_max),
                    " ".join(map(str, r.epochs)),
                    r.train_images, f"{r.train_minutes:.2f}", r.reference if r.reference is not None else ""])
    return buf.getvalue()


def from_csv(text: str) -> list[LadderRow]:
    """Rows written by ``to_csv``; a file from before the protocol column holds ``notebook`` rows."""
    num = lambda v: float(v) if v != "" else None  # noqa: E731
    ints = lambda v: tuple(int(x) for x in v.split())  # noqa: E731
    return [LadderRow(r["recipe"], r.get("protocol") or "notebook", ints(r["seeds"]), float(r["test_mean"]),
                      float(r["test_min"]), float(r["test_max"]), float(r["val_mean"]), num(r["val_last_min"]),
                      num(r["val_last_max"]), ints(r["epochs"]), int(r["test_images"]), int(r["train_images"]),
                      float(r["train_minutes"]), num(r["seed_notebook"]))
            for r in csv.DictReader(io.StringIO(text))]


def merge(kept: list[LadderRow], fresh: list[LadderRow]) -> list[LadderRow]:
    """``fresh`` rows, plus the ``kept`` rows of rungs and protocols that ``fresh`` does not cover."""
    covered = {(r.recipe, r.protocol) for r in fresh}
    return ordered(fresh + [r for r in kept if (r.recipe, r.protocol) not in covered])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="*", help="folders holding one run folder each")
    ap.add_argument("--group", help="the finished runs of this group of the run list (research/runs.py)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--csv", type=Path, help="also read back: its rows without runs here are kept")
    args = ap.parse_args(argv)
    listed = []
    if args.group:
        from research import runs

        listed = [load_run(folder, run.recipe) for run, folder in runs.finished(runs.group(args.group))]
    rows = summarise(listed + [m for root in args.runs for m in load_runs(root)])
    if args.csv and args.csv.exists():
        try:
            rows = merge(from_csv(args.csv.read_text()), rows)
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"{args.csv}: not a ladder table written by this command ({type(exc).__name__}: {exc})")
    write_table(markdown(rows), to_csv(rows), args.out, args.csv)


if __name__ == "__main__":  # pragma: no cover
    main()
