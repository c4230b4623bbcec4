"""The models shipped with the package: int8/fp32 TFLite, ONNX and their manifest ``edgecifar.json``.

The manifest is the export stage's (one entry per file, with its validation against Keras); after a
bench run, ``python -m edgecifar.zoo BENCH.json`` records each file's measured test accuracy and
latency in its entry, so ``edgecifar zoo`` can show them without running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecifar.manifest import MANIFEST

ZOO_DIR = Path(__file__).resolve().parent
BENCH_KEYS = ("accuracy", "images", "ci_low", "ci_high", "latency_ms", "vs_reference", "spread_lo_ms", "spread_hi_ms",
              "p99_ms", "throughput_ips", "peak_rss_mb", "threads", "rounds", "runtime")


def load_manifest(folder: Path = ZOO_DIR) -> dict:
    """The zoo's manifest, or an empty one when nothing is shipped yet."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"files": []}


def files(folder: Path = ZOO_DIR) -> list[Path]:
    """Shipped model files, in manifest order."""
    return [folder / e["file"] for e in load_manifest(folder).get("files", []) if (folder / e["file"]).exists()]


def record_bench(report: dict, folder: Path = ZOO_DIR) -> int:
    """Copy one-thread bench figures of the zoo's files from a ``bench --json`` report into the manifest.

    Returns how many entries were updated. Rows of other files, failed rows and other thread counts are
    ignored, so a report over the ladder and the zoo together can be recorded as it is.
    """
    from edgecifar.fileio import write_json

    manifest = load_manifest(folder)
    meta = report.get("meta", {})
    rows = {Path(r["file"]).name: r for r in report.get("rows", [])
            if r.get("status") == "ok" and r.get("threads") == 1 and Path(r["file"]).resolve().parent == folder}
    updated = 0
    for entry in manifest.get("files", []):
        row = rows.get(entry["file"])
        if row:
            entry["bench"] = {**{k: row.get(k) for k in BENCH_KEYS}, "device": meta.get("device"),
                              "data": Path(str(meta.get("data"))).name, "commit": meta.get("commit"),
                              "cpu": meta.get("cpu"), "cpu_features": meta.get("cpu_features")}
            updated += 1
    write_json(folder / MANIFEST, manifest)
    return updated
