"""The results table, in the manner of Ultralytics' benchmark: one row per file, Keras as the reference."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from edgecifar.export.pipeline import Outcome, Report
from edgecifar.export.validate import DROP, FAILED
from edgecifar.units import percent, size

COLUMNS = ("file", "size", "accuracy", "drop", "agree", "max diff", "status", "TFLite Micro")


def status_text(outcome: Outcome, threshold: float) -> str:
    v = outcome.validation
    if v.status == FAILED:
        return f"[red]failed: {v.error}[/]"
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


def table(report: Report, threshold: float) -> Table:
    """Size (KiB, edgecifar.units), accuracy on the validation images in percent, drop in points against
    Keras, top-1 agreement with Keras in percent, largest absolute difference of any probability, status."""
    t = Table(title=f"{report.name} -> {report.out} ({report.images:,} validation images)",
              box=box.SIMPLE_HEAD, title_justify="left")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("file", "status", "TFLite Micro") else "right",
                     no_wrap=col not in ("status", "TFLite Micro"))
    t.add_row("model.keras", "", percent(report.keras_accuracy, 2), "", "", "", "Keras reference", "")
    for o in report.outcomes:
        v = o.validation
        t.add_row(o.path.name, size(o.path.stat().st_size) if o.written else "-",
                  percent(v.accuracy, 2, "-"), _num(v.drop, "+.2f"), percent(v.agreement, 2, "-"),
                  _num(v.max_abs_diff, ".1e"), status_text(o, threshold), micro_text(o))
    return t
