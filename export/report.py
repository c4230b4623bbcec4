"""The results table, in the manner of Ultralytics' benchmark: one row per file, Keras as the reference."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from edgecifar.export.pipeline import Outcome, Report
from edgecifar.export.validate import AGREEMENT, DROP, FAILED
from edgecifar.units import percent, size

COLUMNS = ("file", "size", "accuracy", "drop", "agree", "max diff", "status", "TFLite Micro")
#: The columns when the data has no labels that name the model's classes: agreement with Keras, not accuracy.
AGREEMENT_COLUMNS = ("file", "size", "agreement with Keras", "max diff", "status", "TFLite Micro")
LEFT = ("file", "status", "TFLite Micro")


def status_text(outcome: Outcome, threshold: float) -> str:
    v = outcome.validation
    if v.status == FAILED:
        return f"[red]failed: {v.error}[/]"
    if v.status == DROP and v.measure == AGREEMENT:
        return f"[yellow]exported, disagrees with Keras on {v.drop:.2f}% of the images, above threshold {threshold:g}[/]"
    if v.status == DROP:
        return f"[yellow]exported, accuracy drop {v.drop:.2f} pts above threshold {threshold:g}[/]"
    return "[green]passed[/]"


def micro_text(outcome: Outcome) -> str:
    """The arena it runs in, the ops that stop it, or why it was not checked; empty for other formats."""
    m = outcome.micro
    if not m:
        return ""
    if m.get("runs"):
        return f"[green]runs, arena {m['arena_bytes']:,} B[/]"
    if m.get("unsupported_ops"):
        return f"[yellow]no: lacks {', '.join(m['unsupported_ops'])}[/]"
    return f"[yellow]{escape(str(m.get('summary')))}[/]"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cells(o: Outcome, threshold: float) -> dict[str, str]:
    """Every column's text for one file (a table shows the columns of its measure)."""
    v = o.validation
    return {"file": o.path.name, "size": size(o.path.stat().st_size) if o.written else "-",
            "accuracy": percent(v.accuracy, 2, "-"), "drop": _num(v.drop, "+.2f"),
            "agree": percent(v.agreement, 2, "-"), "agreement with Keras": percent(v.agreement, 2, "-"),
            "max diff": _num(v.max_abs_diff, ".1e"), "status": status_text(o, threshold), "TFLite Micro": micro_text(o)}


def table(report: Report, threshold: float) -> Table:
    """Size (KiB, edgecifar.units), accuracy on the validation images in percent, drop in points against
    Keras, top-1 agreement with Keras in percent, largest absolute difference of any probability, status.
    Without labels that name the model's classes: agreement with Keras in place of accuracy, drop and agree."""
    agreement = report.measure == AGREEMENT
    columns = AGREEMENT_COLUMNS if agreement else COLUMNS
    said = "; no labels: agreement with Keras" if agreement else ""
    t = Table(title=f"{report.name} -> {report.out} ({report.images:,} validation images{said})",
              box=box.SIMPLE_HEAD, title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in LEFT else "right", no_wrap=col not in ("status", "TFLite Micro"))
    keras_row = {"file": report.reference, "accuracy": percent(report.keras_accuracy, 2),
                 "status": "Keras reference"}
    t.add_row(*(keras_row.get(col, "") for col in columns))
    for o in report.outcomes:
        cells = _cells(o, threshold)
        t.add_row(*(cells[col] for col in columns))
    return t
