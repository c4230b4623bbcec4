"""Bench rows as a rich table, JSON and CSV (atomic writes); how each device's rows are shown (:func:`view`)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgecifar.bench import mcu
from edgecifar.bench.core import fields, finite, measured
from edgecifar.bench.pareto import pareto_front
from edgecifar import units
from edgecifar.fileio import portable_path, write_json, write_text


def _num(value, fmt: str, empty: str = "–") -> str:
    return format(value, fmt) if finite(value) else empty


def _size(nbytes) -> str:
    return units.size(nbytes)


def _count(value) -> str:
    if not finite(value):
        return "–"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def _short_error(row: dict) -> str:
    """The row's error without its own file path in front (the file name is shown with it)."""
    text = row.get("error") or "error"
    prefix = f"{row.get('file')}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def front_indices(rows: list[dict]) -> set[int]:
    """Rows on the accuracy/latency Pareto front."""
    points = [(r.get("latency_ms") if r.get("status") == "ok" else math.nan,
               r.get("accuracy") if r.get("status") == "ok" else math.nan) for r in rows]
    points = [(lat if finite(lat) else math.nan, acc if finite(acc) else math.nan) for lat, acc in points]
    return set(pareto_front(points))


def _ok(row: dict, key: str) -> bool:
    """Whether the row has a measured figure ``key`` (a row that mismatches its manifest shows its figures)."""
    return measured(row) and finite(row.get(key))


#: The column of latency as a fraction of the reference file's (``--reference``).
REF = "× ref"

#: Fields in the JSON only: a list has no clean CSV cell, and the CSV has the latency they summarize.
JSON_ONLY = ("round_medians_ms",)


def _has_reference(rows: list[dict]) -> bool:
    return any("vs_reference" in r for r in rows)


def reference_legend(name: str) -> str:
    """What the "× ref" column means, naming the file it is a fraction of."""
    return (f"{REF} = latency as a fraction of {name}'s: the median over rounds of each round's ratio "
            "(round median / the reference's round median, same round, same thread count).")


def table(rows: list[dict], title: str = "edgecifar bench"):
    """A terminal table that fits: one line per file x threads. File, size, top-1 and latency are always
    shown whole; the others (status first) fold away on narrow terminals (they are all in --json/--csv).
    Failed rows say "error" and their one-line errors follow the table, at any width."""
    from rich.text import Text

    from edgecifar.tables import Column, FittedTable

    front = front_indices(rows)
    names = display_names(rows)
    batches = {r.get("batch") for r in rows if _ok(r, "throughput_ips")}
    throughput = f"img/s @{batches.pop()}" if len(batches) == 1 else "img/s"   # the batch that ran

    def status(i, r):
        if r.get("status") != "ok":
            return Text(r.get("status") if measured(r) else "error", style="red")
        return "ok *" if i in front else "ok"

    def ci(i, r):
        return (f"[{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}] ({r['images']})"
                if _ok(r, "ci_low") and finite(r.get("ci_high")) else "–")

    def spread(i, r):
        return (f"{r['spread_lo_ms']:.3f}–{r['spread_hi_ms']:.3f}"
                if _ok(r, "spread_lo_ms") and finite(r.get("spread_hi_ms")) else "–")

    columns = [
        Column("file", lambda i, r: names[i], keep=True),
        Column("fmt", lambda i, r: r.get("format") or ""),
        Column("prec", lambda i, r: r.get("precision") or ""),
        Column("runtime", lambda i, r: r.get("runtime") or ""),
        Column("thr", lambda i, r: str(r.get("threads", "")), "right"),
        Column("size", lambda i, r: _size(r.get("bytes")), "right", keep=True),
        Column("params", lambda i, r: _count(r.get("parameters")), "right"),
        Column("MACs", lambda i, r: _count(r.get("macs")), "right"),
        Column("top-1", lambda i, r: f"{100 * r['accuracy']:.1f}%" if _ok(r, "accuracy") else "–", "right",
               keep=True),
        Column("95% CI (n)", ci, "right"),
        Column("lat ms", lambda i, r: _num(r.get("latency_ms"), ".3f"), "right", keep=True),
        *([Column(REF, lambda i, r: _num(r.get("vs_reference"), ".3f"), "right")] if _has_reference(rows) else []),
        Column("spread ms", spread, "right"),
        Column("p90", lambda i, r: _num(r.get("p90_ms"), ".3f"), "right"),
        Column("p99", lambda i, r: _num(r.get("p99_ms"), ".3f"), "right"),
        Column(throughput, lambda i, r: _num(r.get("throughput_ips"), ",.0f"), "right"),
        Column("load ms", lambda i, r: _num(r.get("load_ms"), ".1f"), "right"),
        Column("peak MiB", lambda i, r: _num(r.get("peak_rss_mb"), ".1f"), "right"),
        Column("status", status),
    ]
    priority = (*((REF,) if _has_reference(rows) else ()), "status", "95% CI (n)", "thr", "prec", "runtime",
                "peak MiB", throughput, "MACs", "params", "p99", "fmt", "spread ms", "p90", "load ms")
    errors = [Text(f"{name}: {_short_error(r)}", style="red")
              for name, r in zip(names, rows) if r.get("status") != "ok"]
    return FittedTable(columns, rows, title=title, priority=priority, footer=errors)


def plain_rows(rows: list[dict]) -> list[dict]:
    """Rows with the report's fields only (no per-image predictions), for JSON/CSV; files named as a report that
    travels should name them (relative to the working directory, else ``~/...``), not by one machine's home."""
    out = []
    for r in rows:
        d = {k: r.get(k) for k in fields(rows)}
        d["file"] = portable_path(r["file"])
        if r.get("note"):
            d["note"] = r["note"]
        out.append(d)
    return out


def _json_safe(value):
    """NaN/inf are not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json_report(path: str | Path, rows: list[dict], meta: dict) -> Path:
    front = sorted(front_indices(rows))
    doc = {"meta": meta, "rows": plain_rows(rows),
           "pareto_front": [{"file": portable_path(rows[i]["file"]), "threads": rows[i].get("threads")} for i in front]}
    return write_json(path, _json_safe(doc))


def write_csv_report(path: str | Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    names = [f for f in fields(rows) if f not in JSON_ONLY]
    writer = csv.DictWriter(buf, fieldnames=[*names, "note"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in plain_rows(rows):
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v))
                             else json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    return write_text(path, buf.getvalue())


def display_names(rows: list[dict]) -> list[str]:
    """File names, where different files share a name prefixed by as many of their folders as it takes to
    tell them apart (``export/`` skipped: the run folder above it names the run, as for ladder seeds)."""
    files = list(dict.fromkeys(r["file"] for r in rows))
    chains = {f: [Path(f).name] + [d for d in reversed(Path(os.path.abspath(f)).parent.parts[1:]) if d != "export"]
              for f in files}
    shown = {}
    for name in {chain[0] for chain in chains.values()}:
        group = [f for f in files if chains[f][0] == name]
        depth = 1
        while len({"/".join(reversed(chains[f][:depth])) for f in group}) < len(group) \
                and any(len(chains[f]) > depth for f in group):
            depth += 1
        shown.update({f: "/".join(reversed(chains[f][:depth])) for f in group})
    return [shown[r["file"]] for r in rows]


def markdown(rows: list[dict], meta: dict) -> str:
    """A GitHub table of the rows (``*`` marks the Pareto front), headed by what was measured and how."""
    front = front_indices(rows)
    rounds = meta.get("rounds") or 1
    latency = (f"median of {meta.get('blocks')} block medians of {meta.get('runs')} runs after "
               f"{meta.get('warmup')} warm-up")
    if rounds > 1:
        latency = (f"median over {rounds} interleaved rounds of each round's {latency}; spread = min–max of the "
                   "round medians")
    head = (f"{meta.get('images')} test images from {Path(str(meta.get('data'))).name}; device {meta.get('device')}; "
            f"batch-1 latency = {latency}; throughput at batch {meta.get('batch')}; commit {meta.get('commit')}.")
    if meta.get("reference"):
        head += " " + reference_legend(Path(meta["reference"]).name)
    ref = _has_reference(rows)
    cols = ["file", "prec", "runtime", "thr", "size", "params", "MACs", "top-1 [95% CI]", "lat ms (spread)",
            *([REF] if ref else []), "p99 ms", "img/s", "peak MiB", "status"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, (r, shown) in enumerate(zip(rows, display_names(rows))):
        ok = measured(r)
        acc = (f"{100 * r['accuracy']:.1f}% [{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}]"
               if ok and finite(r.get("accuracy")) else "–")
        lat = (f"{r['latency_ms']:.3f} ({r['spread_lo_ms']:.3f}–{r['spread_hi_ms']:.3f})"
               if ok and finite(r.get("latency_ms")) else "–")
        status = ("ok" + (" *" if i in front else "")) if r.get("status") == "ok" else \
            (r.get("error") or "error").replace("|", "/")
        lines.append("| " + " | ".join([
            shown, r.get("precision") or "", r.get("runtime") or "", str(r.get("threads", "")),
            _size(r.get("bytes")), _count(r.get("parameters")), _count(r.get("macs")), acc, lat,
            *([_num(r.get("vs_reference"), ".3f")] if ref else []), _num(r.get("p99_ms"), ".3f"),
            _num(r.get("throughput_ips"), ",.0f"), _num(r.get("peak_rss_mb"), ".0f"), status]) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_report(path: str | Path, rows: list[dict], meta: dict) -> Path:
    return write_text(path, markdown(rows, meta))


def legend(runs: int, blocks: int, rounds: int = 1) -> list[str]:
    """What the bench table's latency columns mean, for this many runs, blocks and rounds."""
    if rounds == 1:
        return [f"lat ms = median of {blocks} block medians of {runs} batch-1 runs; spread = min–max of the "
                "block medians (wide spread = a noisy machine); p90/p99 pooled; * = on the Pareto front."]
    return [f"lat ms = median over {rounds} interleaved rounds of each round's median of {blocks} block medians "
            f"of {runs} batch-1 runs; spread = min–max of the round medians (wide spread = a drifting "
            "machine); p90/p99 pooled within a round, they and throughput the median over rounds; load and memory "
            "from round 1; * = on the Pareto front."]


# --------------------------------------------------------------------------- how each device's rows are shown

@dataclass(frozen=True)
class View:
    """A device's table, Markdown and legend lines (``legend(runs, blocks, rounds)``)."""

    table: Callable[[list[dict], str], Any]
    markdown: Callable[[list[dict], dict], str]
    legend: Callable[[int, int, int], list[str]]


BENCH = View(table, markdown, legend)
#: Devices whose rows have figures of their own, by scheme (:data:`edgecifar.bench.devices.DEVICES`); the
#: others get :data:`BENCH`. The mcu times nothing: its legend is the chips it checks against.
VIEWS: dict[str, View] = {"mcu": View(mcu.table, mcu.markdown, lambda runs, blocks, rounds=1: mcu.legend())}


def view(scheme: str) -> View:
    """How the rows of a device of ``scheme`` are shown."""
    return VIEWS.get(scheme, BENCH)
