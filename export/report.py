"""The results table, in the manner of Ultralytics' benchmark: one row per file, Keras as the reference."""

from __future__ import annotations

import math

from rich import box
from rich.markup import escape
from rich.table import Table

from edgecifar.export.doctor import SHOWN, Explanation, Search
from edgecifar.export.pipeline import Outcome, Report
from edgecifar.export.validate import AGREEMENT, DROP, FAILED
from edgecifar.units import percent, plural, size

COLUMNS = ("file", "size", "accuracy", "drop", "agree", "max diff", "status", "TFLite Micro")
#: The columns when the data has no labels that name the model's classes: agreement with Keras, not accuracy.
AGREEMENT_COLUMNS = ("file", "size", "agreement with Keras", "max diff", "status", "TFLite Micro")
LEFT = ("file", "status", "TFLite Micro")
#: Shown after "size" when the doctor timed some files (--max-drop: the mixed file and full int8).
LATENCY = "latency"


def status_text(outcome: Outcome, threshold: float) -> str:
    text = _status(outcome, threshold)
    return f"{text}; {escape(outcome.note)}" if outcome.note else text


def _status(outcome: Outcome, threshold: float) -> str:
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
            "max diff": _num(v.max_abs_diff, ".1e"), "status": status_text(o, threshold), "TFLite Micro": micro_text(o),
            LATENCY: _num(o.latency_ms, ".2f") + (" ms" if o.latency_ms is not None else "")}


def table(report: Report, threshold: float) -> Table:
    """Size (KiB, edgecifar.units), accuracy on the validation images in percent, drop in points against
    Keras, top-1 agreement with Keras in percent, largest absolute difference of any probability, status.
    Without labels that name the model's classes: agreement with Keras in place of accuracy, drop and agree."""
    agreement = report.measure == AGREEMENT
    columns = AGREEMENT_COLUMNS if agreement else COLUMNS
    if any(o.latency_ms is not None for o in report.outcomes):
        columns = (*columns[:2], LATENCY, *columns[2:])
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


def offenders(explanation: Explanation, shown: int = SHOWN) -> Table:
    """The doctor's top offenders of one int8 format: what int8 does to each layer's output (SQNR, dB: the lower of
    whole-tensor and median channel for TFLite; error in quantization steps), and the accuracy when that layer is
    kept in float. The whole report is in --json."""
    full = explanation.full
    t = Table(title=f"{explanation.title}: the layers int8 hurts most, of {len(explanation.layers)} "
                    f"({explanation.file}, drop {_num(full.drop, '.2f')} points; statistics on "
                    f"{plural(explanation.images, 'validation image')})", box=box.SIMPLE_HEAD, title_justify="left")
    metrics = explanation.columns
    for col in ("#", "layer", "op", *(header for header, _, _ in metrics), "kept in float", "recovers"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right", no_wrap=col != "layer")
    for i, layer in enumerate(explanation.offenders(shown)):
        kept = (percent(layer.accuracy, 2, "-") if layer.error is None else f"[red]{escape(layer.error)}[/]")
        values = (_num(_finite(layer.metrics.get(key)), fmt) for _, key, fmt in metrics)
        t.add_row(str(i + 1), escape(layer.name), layer.op, *values, kept, _num(layer.recovered, "+.2f"))
    return t


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def search_line(search: Search, report: Report) -> str:
    """One line: what --max-drop chose, against full int8 (accuracy, size, latency), or that nothing met it."""
    int8 = next(o for o in report.outcomes if o.fmt.key == "int8")
    mixed = next((o for o in report.outcomes if o.fmt.key == "mixed_int8" and o.written), None)
    budget = f"--max-drop {search.budget:g}"
    if search.chosen is None and search.met:
        return (f"{budget}: {int8.path.name} drops {search.full.drop:.2f} points, within the budget: no layer "
                "needs float")
    if mixed is None:
        return (f"{budget}: no file beats full int8 ({int8.path.name}, drop {_num(search.full.drop, '.2f')} "
                f"points) after {plural(len(search.trials), 'file')} tried")
    v = mixed.validation
    verdict = ("within the budget" if search.met
               else f"[yellow]the closest of {plural(len(search.trials), 'file')} tried, above the budget[/]")
    kept = report.diagnosis.kept_summary()
    return (f"{budget}: {mixed.path.name} keeps {kept} in float, drop {_num(v.drop, '.2f')} "
            f"points ({verdict}) against full int8's {_num(search.full.drop, '.2f')}; "
            f"{size(mixed.path.stat().st_size)} vs {size(int8.path.stat().st_size)}, "
            f"{_num(mixed.latency_ms, '.2f')} ms vs {_num(int8.latency_ms, '.2f')} ms (1 thread, batch 1)")
