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
    from edgecifar.zoo import ZOO_DIR, load_manifest

    entries = load_manifest().get("files", [])
    if not entries:
        click.echo(f"no models shipped in {ZOO_DIR}")
        return
    table = Table(title=f"edgecifar zoo ({ZOO_DIR})")
    for col in ("file", "model", "precision", "size", "params", "val acc (n)", "test acc [95% CI] (n)",
                "latency ms", "runtime"):
        table.add_column(col, justify="left" if col in ("file", "model", "precision", "runtime") else "right")
    for e in entries:
        v, b = e.get("validation") or {}, e.get("bench") or {}
        val = f"{v['accuracy']:.1%} ({v['images']:,})" if v.get("accuracy") is not None else "–"
        test = (f"{b['accuracy']:.1%} [{b['ci_low']:.1%}–{b['ci_high']:.1%}] ({b['images']:,})"
                if b.get("accuracy") is not None else "not benched")
        lat = f"{b['latency_ms']:.3f} ({b['threads']} thr)" if b.get("latency_ms") is not None else "–"
        table.add_row(e["file"], e.get("model", ""), e.get("precision", ""), f"{e.get('bytes', 0) / 1e3:,.0f} kB",
                      f"{e['parameters']:,}" if e.get("parameters") else "–", val, test, lat, e.get("runtime", ""))
    Console().print(table)
    click.echo("val acc: held-out training images, against the Keras model at export; test acc and latency: "
               "the last `edgecifar bench` recorded with `python -m edgecifar.zoo BENCH.json` (batch 1).")
