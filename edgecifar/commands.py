"""Small informational commands: ``edgecifar models`` and ``edgecifar zoo``."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table


@click.command()
def models() -> None:
    """List the registered architectures with parameters and MACs per image."""
    from edgecifar.errors import require_tensorflow

    require_tensorflow()
    from edgecifar import models as registry
    from edgecifar.models.stats import count_macs, count_params

    table = Table(title="edgecifar models (input 32x32x3 pixels 0-255, output 10 probabilities)")
    for col in ("name", "family", "parameters", "MMACs/image", "description"):
        table.add_column(col, justify="right" if col in ("parameters", "MMACs/image") else "left")
    for spec in registry.specs():
        kwargs = {"weights": "none"} if spec.family == "mobilenetv2" else {}  # sizes only: no download
        model = spec.build(**kwargs)
        table.add_row(spec.name, spec.family, f"{count_params(model):,}", f"{count_macs(model) / 1e6:.1f}",
                      spec.description)
    Console().print(table)


@click.command()
def zoo() -> None:
    """List the models shipped with the package: accuracy, size and latency."""
    from edgecifar.tables import Column, FittedTable
    from edgecifar.units import size
    from edgecifar.zoo import ZOO_DIR, load_manifest

    entries = load_manifest().get("files", [])
    if not entries:
        click.echo(f"no models shipped in {ZOO_DIR}")
        return

    def test_acc(i, e):
        b = e.get("bench") or {}
        return f"{b['accuracy']:.1%}" if b.get("accuracy") is not None else "not benched"

    def test_ci(i, e):
        b = e.get("bench") or {}
        return f"[{b['ci_low']:.1%}–{b['ci_high']:.1%}] ({b['images']:,})" if b.get("accuracy") is not None else "–"

    def val_acc(i, e):
        v = e.get("validation") or {}
        return f"{v['accuracy']:.1%} ({v['images']:,})" if v.get("accuracy") is not None else "–"

    def bench_value(key, fmt):
        return lambda i, e: format(e["bench"][key], fmt) if (e.get("bench") or {}).get(key) is not None else "–"

    columns = [
        Column("file", lambda i, e: e["file"], keep=True),
        Column("model", lambda i, e: e.get("model", "")),
        Column("precision", lambda i, e: e.get("precision", "")),
        Column("size", lambda i, e: size(e.get("bytes")), "right", keep=True),
        Column("params", lambda i, e: f"{e['parameters']:,}" if e.get("parameters") else "–", "right"),
        Column("val acc (n)", val_acc, "right"),
        Column("test acc", test_acc, "right", keep=True),
        Column("95% CI (n)", test_ci, "right"),
        Column("latency ms", bench_value("latency_ms", ".3f"), "right", keep=True),
        Column("thr", bench_value("threads", "d"), "right"),
        Column("runtime", lambda i, e: e.get("runtime", "")),
    ]
    table = FittedTable(columns, entries, title=f"edgecifar zoo ({ZOO_DIR})",
                        priority=("precision", "runtime", "95% CI (n)", "thr", "val acc (n)", "params", "model"))
    Console().print(table)
    click.echo("val acc: held-out training images, against the Keras model at export; test acc and latency: "
               "the last `edgecifar bench` recorded with `python -m edgecifar.zoo BENCH.json` (batch 1).")
