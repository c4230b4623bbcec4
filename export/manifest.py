"""``edgecifar.json`` beside the exported files: what each file is, its contract and how it validated.

The bench stage reads it. Re-exporting into the same folder merges by file name: entries for files
written now replace the old ones, entries for other files that still exist are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecifar import __version__
from edgecifar.export.formats import Format
from edgecifar.export.job import ExportJob
from edgecifar.export.validate import Validation
from edgecifar.fileio import sha256, write_json
from edgecifar.manifest import MANIFEST



def _quant(q) -> tuple[str, float | None, int | None]:
    """(dtype, scale, zero point) of a runtime.Quant; float tensors have no scale (null)."""
    if q is None:
        return "float32", None, None
    if not q.scale:
        return str(q.dtype), None, None
    return str(q.dtype), float(q.scale), int(q.zero_point)


def file_entry(fmt: Format, path: Path, job: ExportJob, source: dict, result: Validation, loaded,
               options: dict[str, Any] | None = None) -> dict:
    """One ``files`` item: format, the options it was written with (formats that declare any), contract read
    back from the file as loaded, and its validation."""
    in_dtype, in_scale, in_zp = _quant(getattr(loaded, "input_quant", None))
    out_dtype, out_scale, out_zp = _quant(getattr(loaded, "output_quant", None))
    labels = list(job.labels)
    return {
        "file": path.name, "model": job.name, "format": fmt.format, "precision": fmt.precision,
        "runtime": fmt.runtime, **({"options": dict(options or {})} if fmt.options else {}),
        "bytes": path.stat().st_size, "sha256": sha256(path),
        "input": {**job.input_contract(), "dtype": in_dtype, "scale": in_scale, "zero_point": in_zp},
        "output": {"dtype": out_dtype, "scale": out_scale, "zero_point": out_zp, "meaning": "probabilities",
                   "labels": labels},
        "labels": labels, "parameters": source.get("parameters"), "macs": source.get("macs"),
        "source_sha256": source.get("sha256"),
        "validation": result.to_dict(),
    }


def header(source: dict, calibration: dict, validation: dict) -> dict[str, Any]:
    return {"edgecifar_version": __version__, "source": source, "calibration": calibration,
            "validation": validation}


def merge(old: dict | None, head: dict, entries: list[dict], folder: Path) -> dict:
    """New header; old entries whose file still exists, replaced in place by new ones of the same name."""
    new = {e["file"]: e for e in entries}
    files = [new.pop(e["file"], e) for e in (old or {}).get("files", [])
             if isinstance(e, dict) and "file" in e and (e["file"] in new or (folder / e["file"]).exists())]
    return {**head, "files": files + list(new.values())}


def write(folder: Path, manifest: dict) -> Path:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    return write_json(folder / MANIFEST, manifest)
