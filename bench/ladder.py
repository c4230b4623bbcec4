"""Summarise training runs of the seed ladder beside the seed notebook's published numbers.

``python -m edgecifar.bench.ladder RUNS_DIR [--out FILE.md] [--csv FILE.csv]`` reads every
``RUNS_DIR/*/metrics.json`` and writes, per recipe: seeds, test accuracy mean and spread (min-max),
validation accuracy, its range over the last epochs (``history.csv``: how much the final-epoch figure owes
to luck), epochs actually run and the test image count, with the reference figure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from edgecifar.fileio import write_text

#: The reference notebook's figures (full official test set, 10,000 images; backbone width 1.0).
SEED_NOTEBOOK: dict[str, float] = {
    "baseline": 0.689, "deeper": 0.734, "bn_gap": 0.731, "l2": 0.725, "early_stop": 0.729, "augment": 0.769,
    "mnv2_dense128": 0.866, "mnv2_dropout": 0.856, "mnv2_dropout_b64": 0.856,
}
ORDER = list(SEED_NOTEBOOK)
LAST_EPOCHS = 5   # the validation range column covers this many final epochs of every seed


@dataclass(frozen=True)
class LadderRow:
    recipe: str
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


def load_runs(root: Path) -> list[dict]:
    """Every run's metrics, with ``val_history`` (validation accuracy per epoch) from its history.csv."""
    runs = []
    for path in sorted(Path(root).glob("*/metrics.json")):
        m = json.loads(path.read_text())
        history = path.with_name("history.csv")
        if history.exists():
            m["val_history"] = [float(r["val_accuracy"]) for r in csv.DictReader(history.read_text().splitlines())]
        runs.append(m)
    return runs


def summarise(runs: list[dict]) -> list[LadderRow]:
    """One row per recipe (ladder order first), aggregating seeds."""
    by_recipe: dict[str, list[dict]] = {}
    for m in runs:
        by_recipe.setdefault(m["recipe"], []).append(m)
    names = [n for n in ORDER if n in by_recipe] + sorted(n for n in by_recipe if n not in ORDER)
    rows = []
    for name in names:
        ms = sorted(by_recipe[name], key=lambda m: m["seed"])
        tests = [m["test_accuracy"] for m in ms]
        last = [v for m in ms for v in m.get("val_history", [])[-LAST_EPOCHS:]]
        rows.append(LadderRow(name, tuple(m["seed"] for m in ms), statistics.fmean(tests), min(tests), max(tests),
                              statistics.fmean(m["val_accuracy"] for m in ms),
                              min(last) if last else None, max(last) if last else None, tuple(m["epochs"] for m in ms),
                              ms[0]["test_images"], ms[0].get("train_images", 0),
                              statistics.fmean(m.get("train_seconds", 0.0) for m in ms) / 60, SEED_NOTEBOOK.get(name)))
    return rows


def markdown(rows: list[LadderRow]) -> str:
    """The table, then one line naming the data behind it (the notebook used the official 50,000/10,000)."""
    out = ["| recipe | seeds | test accuracy, mean (min–max) | test images | validation accuracy | "
           f"validation, last {LAST_EPOCHS} epochs (min–max) | epochs run | training, min (mean) | "
           "seed notebook (10,000 images) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ref = f"{r.reference:.1%}" if r.reference is not None else "—"
        last = f"{r.val_last_min:.1%}–{r.val_last_max:.1%}" if r.val_last_min is not None else "—"
        out.append(f"| `{r.recipe}` | {len(r.seeds)} | {r.test_mean:.1%} ({r.test_min:.1%}–{r.test_max:.1%}) | "
                   f"{r.test_images:,} | {r.val_mean:.1%} | {last} | {', '.join(map(str, r.epochs))} | "
                   f"{r.train_minutes:.1f} | {ref} |")
    trained = sorted({r.train_images for r in rows})
    out += ["", f"Training images per run: {', '.join(f'{n:,}' for n in trained)}; test images as in the table."]
    return "\n".join(out) + "\n"


def to_csv(rows: list[LadderRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe", "seeds", "test_mean", "test_min", "test_max", "test_images", "val_mean", "val_last_min",
                "val_last_max", "epochs", "train_images", "train_minutes", "seed_notebook"])
    opt = lambda v: f"{v:.4f}" if v is not None else ""  # noqa: E731
    for r in rows:
        w.writerow([r.recipe, " ".join(map(str, r.seeds)), f"{r.test_mean:.4f}", f"{r.test_min:.4f}",
                    f"{r.test_max:.4f}", r.test_images, f"{r.val_mean:.4f}", opt(r.val_last_min), opt(r.val_last_max),
                    " ".join(map(str, r.epochs)),
                    r.train_images, f"{r.train_minutes:.2f}", r.reference if r.reference is not None else ""])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    rows = summarise(load_runs(args.runs))
    text = markdown(rows)
    if args.out:
        write_text(args.out, text)
    if args.csv:
        write_text(args.csv, to_csv(rows))
    print(text, end="")


if __name__ == "__main__":  # pragma: no cover
    main()
