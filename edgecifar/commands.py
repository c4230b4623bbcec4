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
    from edgecifar.zoo import load_manifest

    manifest = load_manifest()
    table = Table(title="edgecifar zoo")
    for col in ("file", "format", "precision", "bytes", "accuracy", "images", "latency ms"):
        table.add_column(col)
    for entry in manifest.get("files", []):
        v = entry.get("validation", {})
        b = entry.get("bench", {})
        table.add_row(entry["file"], entry.get("format", ""), entry.get("precision", ""), f"{entry.get('bytes', 0):,}",
                      f"{v.get('accuracy', float('nan')):.4f}" if v else "", str(v.get("images", "")),
                      f"{b['latency_ms']:.3f}" if b.get("latency_ms") else "")
    Console().print(table)
