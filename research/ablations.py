"""One row per training run, with the settings an ablation varies: what each recipe piece is worth.

``python -m research.ablations RUN_DIR... [--out FILE.md] [--csv FILE.csv]`` reads each run's
``metrics.json`` and writes its recipe, epochs, the varied settings (teacher and its weight, label smoothing,
model options such as the activation, whitening stem, weight averaging, BatchNorm, augmentation), validation
accuracy (what choices are made on; two decimals, as 2,000 images step by 0.05 points), test
accuracy (reported, never tuned on), training minutes, images/s and the CPU they were measured on. Rows keep
the order given; rows already in the ``--csv`` file keep their place (replaced when their run is read again), so
the table keeps runs whose folders are gone.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from edgecifar.fileio import write_table


@dataclass(frozen=True)
class AblationRow:
    run: str
    recipe: str
    seed: int
    epochs: int
    distill: str
    label_smoothing: float
    model_options: str
    whiten_stem: bool
    ema: float | None
    batchnorm: str
    augment: str
    val_accuracy: float
    val_images: int
    test_accuracy: float
    test_images: int
    train_minutes: float
    images_per_s: float
    cpu: str


def row(run_dir: Path) -> AblationRow:
    m = json.loads((run_dir / "metrics.json").read_text())
    s = m.get("recipe_settings", {})
    teacher = s.get("distill")
    return AblationRow(run_dir.name, m["recipe"], m["seed"], m["epochs"],
                       f"{Path(teacher).name} × {s.get('distill_alpha')}"
                       f"{', ' + str(s['distill_views']) + ' views' if s.get('distill_views') else ''}" if teacher else "—",
                       s.get("label_smoothing", 0.0), model_options(s),
                       bool(s.get("whiten_stem")), s.get("ema"), batchnorm(s), s.get("augment", "—"),
                       m["val_accuracy"], m["val_images"],
                       m["test_accuracy"], m["test_images"], m.get("train_seconds", 0.0) / 60,
                       m.get("images_per_s", 0.0), m.get("cpu") or "not recorded")


def batchnorm(settings: dict) -> str:
    """``scale+shift`` or ``bias only`` (model_kwargs ``bn_scale``), with the recipe's momentum when it sets one."""
    kind = "bias only" if settings.get("model_kwargs", {}).get("bn_scale") is False else "scale+shift"
    momentum = settings.get("bn_momentum")
    return f"{kind}, momentum {momentum}" if momentum is not None else kind


def model_options(settings: dict) -> str:
    """The recipe's model options (``act=relu``), but BatchNorm's, which have their own column; ``—`` when none."""
    kw = {k: v for k, v in settings.get("model_kwargs", {}).items() if k != "bn_scale"}
    return ", ".join(f"{k}={v}" for k, v in kw.items()) or "—"


def markdown(rows: list[AblationRow]) -> str:
    out = ["| run | recipe | seed | epochs | distillation (teacher × weight, views) | label smoothing | model options | "
           "whitening stem | EMA | BatchNorm | augment | validation accuracy | test accuracy | training min | img/s | CPU |",
           "|" + " --- |" * 16]
    for r in rows:
        out.append(f"| {r.run} | `{r.recipe}` | {r.seed} | {r.epochs} | {r.distill} | {r.label_smoothing:g} | "
                   f"{r.model_options} | {'yes' if r.whiten_stem else 'no'} | "
                   f"{r.ema if r.ema else '—'} | {r.batchnorm} | {r.augment} | "
                   f"{r.val_accuracy:.2%} ({r.val_images:,}) | "
                   f"{r.test_accuracy:.1%} ({r.test_images:,}) | {r.train_minutes:.1f} | {r.images_per_s:,.0f} | {r.cpu} |")
    return "\n".join(out) + "\n"


def to_csv(rows: list[AblationRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(AblationRow.__dataclass_fields__))
    for r in rows:
        w.writerow([getattr(r, f) for f in AblationRow.__dataclass_fields__])
    return buf.getvalue()


def from_csv(text: str) -> list[AblationRow]:
    """Rows written by :func:`to_csv`, each field read back as its type (an empty optional one as None)."""
    import typing

    hints = typing.get_type_hints(AblationRow)

    def value(field: str, raw: str):
        kind = hints[field]
        if kind is bool:
            return raw == "True"
        if kind in (int, float):
            return kind(raw)
        if float in typing.get_args(kind):    # float | None
            return float(raw) if raw else None
        return raw
    return [AblationRow(**{f: value(f, r[f]) for f in AblationRow.__dataclass_fields__})
            for r in csv.DictReader(io.StringIO(text))]


def merge(kept: list[AblationRow], fresh: list[AblationRow]) -> list[AblationRow]:
    """The ``kept`` rows in their order, each replaced by the ``fresh`` row of the same run; then the other fresh
    rows. A table keeps the runs whose folders are gone (run folders live outside the work tree)."""
    by_run = {r.run: r for r in fresh}
    rows = [by_run.pop(r.run, r) for r in kept]
    return rows + [r for r in fresh if r.run in by_run]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="*", help="run folders")
    ap.add_argument("--group", help="the finished runs of this group of the run list (research/runs.py), after the "
                                    "zoo's runs")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--csv", type=Path, help="also read back: its rows without runs here are kept")
    args = ap.parse_args(argv)
    folders = list(args.runs)
    if args.group:
        from research import runs

        folders += [folder for _, folder in runs.finished(runs.group(args.group, zoo_too=True))]
    rows = [row(d) for d in folders if (d / "metrics.json").exists()]
    if args.csv and args.csv.exists():
        try:
            rows = merge(from_csv(args.csv.read_text()), rows)
        except (KeyError, ValueError, TypeError) as exc:
            raise SystemExit(f"{args.csv}: not an ablations table written by this command ({type(exc).__name__}: {exc})")
    write_table(markdown(rows), to_csv(rows), args.out, args.csv)


if __name__ == "__main__":  # pragma: no cover
    main()
