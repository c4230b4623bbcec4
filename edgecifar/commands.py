"""Small informational commands: ``edgecifar models`` and ``edgecifar zoo``."""

from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text


@click.command()
def models() -> None:
    """List the registered architectures with parameters and MACs per image."""
    from edgecifar.errors import require_tensorflow

    require_tensorflow()
    if sys.stderr.isatty():
        click.echo("models: loading TensorFlow and building each registered model to count it (10-20 s)", err=True)
    from edgecifar import models as registry
    from edgecifar.models.stats import count_macs, count_params
    from edgecifar.tables import output_console

    table = Table(title="edgecifar models (input 32x32x3 pixels 0-255, output 10 probabilities)")
    for col in ("name", "family", "parameters", "MMACs/image", "description"):
        table.add_column(col, justify="right" if col in ("parameters", "MMACs/image") else "left")
    for spec in registry.specs():
        kwargs = {"weights": "none"} if spec.family == "mobilenetv2" else {}  # sizes only: no download
        model = spec.build(**kwargs)
        table.add_row(spec.name, spec.family, f"{count_params(model):,}", f"{count_macs(model) / 1e6:.1f}",
                      spec.description)
    output_console().print(table)


@click.command()
@click.option("--markdown", is_flag=True, help="Print every column as a markdown table (the README's zoo table).")
def zoo(markdown: bool) -> None:
    """List the models shipped with the package: accuracy, size and latency, and the CPU that measured them."""
    from edgecifar.tables import FittedTable, output_console
    from edgecifar.zoo import ZOO_DIR, load_manifest

    entries = load_manifest().get("files", [])
    if not entries:
        click.echo(f"no models shipped in {ZOO_DIR}")
        return
    if markdown:
        click.echo(zoo_markdown(entries), nl=False)
        return
    table = FittedTable(zoo_columns(entries), entries, title=f"edgecifar zoo ({ZOO_DIR})", priority=ZOO_PRIORITY,
                        footer=[Text(line) for line in measured_on(entries)])
    output_console().print(table)


#: The optional columns of ``edgecifar zoo``, most useful first: they join while the table fits.
ZOO_PRIORITY = ("precision", "runtime", "95% CI (n)", "thr", "val acc (n)", "params", "model")


def zoo_columns(entries: list[dict]) -> list:
    """The columns of ``edgecifar zoo``, each with the note that says what its figures are."""
    from edgecifar.tables import Column
    from edgecifar.units import size

    def bench(e: dict) -> dict:
        return e.get("bench") or {}

    def test_acc(i, e):
        return f"{bench(e)['accuracy']:.1%}" if bench(e).get("accuracy") is not None else "not benched"

    def test_ci(i, e):
        b = bench(e)
        return f"[{b['ci_low']:.1%}–{b['ci_high']:.1%}] ({b['images']:,})" if b.get("accuracy") is not None else "–"

    def val_acc(i, e):
        v = e.get("validation") or {}
        return f"{v['accuracy']:.1%} ({v['images']:,})" if v.get("accuracy") is not None else "–"

    def bench_value(key, fmt):
        return lambda i, e: format(bench(e)[key], fmt) if bench(e).get(key) is not None else "–"

    return [
        Column("file", lambda i, e: e["file"], keep=True),
        Column("model", lambda i, e: e.get("model", "")),
        Column("precision", lambda i, e: e.get("precision", "")),
        Column("size", lambda i, e: size(e.get("bytes")), "right", keep=True),
        Column("params", lambda i, e: f"{e['parameters']:,}" if e.get("parameters") else "–", "right"),
        Column("val acc (n)", val_acc, "right",
               note="top-1 on (n) held-out training images, checked against the Keras model at export"),
        Column("test acc", test_acc, "right", keep=True,
               note=f"top-1 on the first {_images(entries)} CIFAR-10 test images in the last `edgecifar bench` "
                    "(batch 1) recorded with `python -m edgecifar.zoo BENCH.json`"),
        Column("95% CI (n)", test_ci, "right", note="95% interval of test acc over its (n) test images"),
        Column("latency ms", bench_value("latency_ms", ".3f"), "right", keep=True,
               note="median per image in that bench run"),
        Column("thr", bench_value("threads", "d"), "right", note="threads of that bench run"),
        Column("runtime", lambda i, e: e.get("runtime", "")),
    ]


def zoo_markdown(entries: list[dict]) -> str:
    """The zoo as a markdown table with every column, then each column's note and the machine that measured it:
    the README's copy is this text (tests/test_readme.py checks it is current)."""
    columns = zoo_columns(entries)
    out = ["| " + " | ".join(c.header for c in columns) + " |",
           "| " + " | ".join("---:" if c.justify == "right" else "---" for c in columns) + " |"]
    out += ["| " + " | ".join(str(c.cell(i, e)) for c in columns) + " |" for i, e in enumerate(entries)]
    out.append("")
    out += [f"- {c.header}: {c.note}." for c in columns if c.note]
    out += [f"- {line}" for line in measured_on(entries)]
    return "\n".join(out) + "\n"


def _images(entries: list[dict]) -> str:
    """How many test images the bench figures are on ("1,000", or "500 or 1,000" when runs differ)."""
    counts = sorted({(e.get("bench") or {}).get("images") for e in entries} - {None})
    return " or ".join(f"{n:,}" for n in counts) or "(n)"


def measured_on(entries: list[dict]) -> list[str]:
    """Which machine measured the bench figures (test acc, latency: both depend on the CPU), as one line: each
    CPU and commit, the files it measured named unless it measured all (or all the others)."""
    sources: dict[str, list[str]] = {}
    for e in entries:
        b = e.get("bench")
        if b:
            commit = str(b.get("commit") or "unknown")
            where = (f"{b.get('cpu') or 'a CPU the manifest does not record'} at commit {commit[:7]}"
                     f"{'-dirty' if commit.endswith('-dirty') else ''}")
            sources.setdefault(where, []).append(e["file"])
    if not sources:
        return []
    *named, (most, _) = sorted(sources.items(), key=lambda kv: len(kv[1]))
    parts = [f"on {where} for {', '.join(files)}" for where, files in named]
    parts.append(f"on {most} for {'the other files' if named else 'every benched file'}")
    return [f"bench figures measured {'; '.join(parts)}."]
