"""The bench's plumbing: which files, what the manifests say about them, one row per file x threads.

No TensorFlow and no runtime here: measurements happen in :mod:`edgecifar.bench.worker` processes,
started by a device (:mod:`edgecifar.bench.devices`).
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edgecifar import LABELS
from edgecifar.bench.devices import Device, Job
from edgecifar.bench.rounds import over_rounds, round_robin, vs_reference
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import is_temporary, resolved, sha256
from edgecifar.manifest import MANIFEST
from edgecifar.manifest import read as read_manifest
from edgecifar.metrics import wilson_interval
from edgecifar.runtime import LOADERS, locate

FORMATS = {".tflite": "tflite", ".onnx": "onnx"}
#: A row whose accuracy falls outside the interval of the figure its manifest records for the same images: measured
#: (its figures are shown) but not "ok" (bench exits 1).
MISMATCH = "mismatch"
MEASURED = ("ok", MISMATCH)

#: Row fields in report order (``predictions`` travels alongside for the confusion matrices only).
FIELDS = ("file", "model", "format", "precision", "runtime", "device", "threads", "bytes", "parameters", "macs",
          "images", "correct", "accuracy", "ci_low", "ci_high", "latency_ms", "vs_reference", "spread_lo_ms",
          "spread_hi_ms", "round_medians_ms", "p90_ms", "p99_ms", "runs", "blocks", "rounds", "throughput_ips",
          "batch", "load_ms", "peak_rss_mb", "tensorflow_imported", "status", "error")
#: Timing fields measured in every round: with --rounds above 1, a row reports the median over rounds. Load time
#: and memory stay round 1's: the only round that also runs the accuracy pass, so its peak memory is the file's.
PER_ROUND = ("p90_ms", "p99_ms", "throughput_ips")
#: Fields reported only when a row has them: with --reference, and with --rounds above 1.
OPTIONAL = ("vs_reference", "round_medians_ms")


# --------------------------------------------------------------------------- which files

def newest_export_dir(root: Path) -> Path | None:
    """The most recently written ``runs/*/export/`` folder that holds a model file, or None."""
    candidates = [d for d in root.glob("*/export") if d.is_dir() and model_files_in(d)]
    if not candidates:
        return None
    return max(candidates, key=lambda d: max(f.stat().st_mtime for f in model_files_in(d)))


def model_files_in(folder: Path) -> list[Path]:
    """The model files in ``folder``: not hidden files, so never an export's temporary (``.x_int8.tflite.yc38oavx
    .tflite``: still being written, or left by a killed export, and never validated), nor a link that leads
    nowhere (:func:`broken_links_in`)."""
    return sorted(p for p in _candidates(folder) if p.is_file())


def broken_links_in(folder: Path) -> list[Path]:
    """Model-named links in ``folder`` that lead to no file (a loop, a deleted target): rows that say so."""
    return sorted(p for p in _candidates(folder) if p.is_symlink() and not p.exists())


def _candidates(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.suffix.lower() in LOADERS and not p.name.startswith(".") and not is_temporary(p)]


def _missing(path: Path) -> str:
    """Why ``path`` (which does not exist as a file) cannot be benched, in the row's words."""
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{path}: symlink loop"
        return f"{path}: broken symlink (to {os.readlink(path)})"
    return f"{path}: no such file"


def default_paths(runs_root: Path) -> list[Path]:
    """The shipped models plus the newest export; an error saying what to pass when there are none."""
    from edgecifar import zoo

    paths = list(zoo.files())
    export = newest_export_dir(runs_root)
    if export is not None:
        paths += model_files_in(export)
    if not paths:
        raise EdgeCifarError(f"nothing to bench: no shipped models yet and no model files in {runs_root}/*/export/; "
                             "pass model files or folders (edgecifar bench PATH ...)")
    return paths


def expand(paths: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """Model files from files and folders, in order, each with an error when it cannot be benched.

    A zoo file may be named as ``edgecifar zoo`` lists it; a run folder stands for its ``export/``."""
    out: list[tuple[Path, str | None]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = locate(raw)
        if path.is_dir() and not model_files_in(path) and (path / "export").is_dir():
            path = path / "export"   # a run folder, as export takes it
        if path.is_dir():
            files, broken = model_files_in(path), broken_links_in(path)
            if not files and not broken:
                out.append((path, f"{path}: no {' or '.join(LOADERS)} files in this folder"))
            items = [(f, None) for f in files] + [(f, _missing(f)) for f in broken]
        elif not path.exists():
            items = [(path, _missing(path))]
        elif path.suffix.lower() not in LOADERS:
            items = [(path, f"{path}: not a model file (expected {', '.join(LOADERS)})")]
        else:
            items = [(path, None)]
        for f, err in items:
            key = resolved(f)
            if key not in seen:
                seen.add(key)
                out.append((f, err))
    return out


def find_reference(files: list[tuple[Path, str | None]], wanted: Path) -> Path:
    """The benched file ``--reference`` names: the same file (resolved), or for a bare file name the one file
    of that name. An error before anything runs when it names none, several, or a file that cannot run (its
    problem in ``files``: a device's plan puts its refusals there)."""
    wanted = Path(wanted)
    matches = [p for p, _ in files if resolved(p) == resolved(wanted)]
    if not matches and wanted.name == str(wanted):
        matches = [p for p, _ in files if p.name == wanted.name]
    if not matches:
        raise EdgeCifarError(f"--reference {wanted}: not among the benched files (name it among the PATHs too)")
    if len(matches) > 1:
        raise EdgeCifarError(f"--reference {wanted}: {len(matches)} benched files have that name; give its path")
    problem = dict(files)[matches[0]]
    if problem:
        raise EdgeCifarError(f"--reference {wanted}: {problem}")
    return matches[0]


# --------------------------------------------------------------------------- what we know about a file

def _entry(data: dict | None, name: str) -> dict | None:
    return next((e for e in (data or {}).get("files", []) if isinstance(e, dict) and e.get("file") == name), None)


def manifest_entry(path: Path) -> dict:
    """The entry for ``path`` in the ``edgecifar.json`` beside it (with the source's figures), or {}."""
    data = read_manifest(path.parent)
    entry = _entry(data, path.name)
    if entry is None:
        return {}
    source = data.get("source", {}) if isinstance(data.get("source"), dict) else {}
    return {"parameters": source.get("parameters"), "macs": source.get("macs"),
            "model": source.get("model"), **{k: v for k, v in entry.items() if v is not None}}


@lru_cache(maxsize=256)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A file's sha256, once per version of it (size and mtime in the key): every thread count and round of a
    file asks."""
    return sha256(path)


def _matches(path: Path, entry: dict) -> bool | None:
    """Whether ``path`` is the file ``entry`` describes by its sha256 (None: the entry records none)."""
    recorded = entry.get("sha256")
    if not isinstance(recorded, str):
        return None
    try:
        st = path.stat()
        return _sha256(path, st.st_size, st.st_mtime_ns) == recorded
    except OSError:
        return None


def unvalidated_note(path: Path) -> str | None:
    """One line when ``path`` sits beside an ``edgecifar.json`` that does not vouch for it: no entry (an export
    killed after writing it, a file copied in) or a different sha256 (replaced since). None otherwise, and
    for a folder with no manifest (model files from anywhere: nothing claims they were validated)."""
    data = read_manifest(path.parent)
    if data is None:
        return None
    entry = _entry(data, path.name)
    if entry is None:
        return f"{path}: no entry in the {MANIFEST} beside it: not validated by an export"
    if _matches(path, entry) is False:
        return f"{path}: not the file its {MANIFEST} entry validated (sha256 differs)"
    return None


def recorded_accuracy(path: Path) -> dict | None:
    """The test accuracy ``path``'s manifest records from a bench run (entry ``bench``: accuracy, images, data
    name, data fingerprint), or None. Not the ``validation`` figure: that is on held-out training images, never
    the images bench measures on. Not for a file whose sha256 differs from its entry's.

    A ``bench`` figure without a data fingerprint (``python -m edgecifar.zoo`` records the data's name only)
    takes the fingerprint the same manifest records for data of that name (its validation or calibration data):
    the name alone is no proof (any archive is called cifar-10-python.tar.gz), but within one manifest it
    names one copy. Without any fingerprint the figure is not compared."""
    data = read_manifest(path.parent)
    entry = _entry(data, path.name)
    bench = entry.get("bench") if entry else None
    if not isinstance(bench, dict) or _matches(path, entry) is False:
        return None
    acc, images, name = bench.get("accuracy"), bench.get("images"), bench.get("data")
    if not finite(acc) or not isinstance(images, int) or images < 1 or not isinstance(name, str):
        return None
    fingerprint = bench.get("data_fingerprint") or next(
        (h.get("data_fingerprint") for h in (data.get("validation"), data.get("calibration"))
         if isinstance(h, dict) and h.get("data") == name and h.get("data_fingerprint")), None)
    if not fingerprint:
        return None
    return {**bench, "data_fingerprint": fingerprint}


def accuracy_mismatch(row: dict, recorded: dict | None, data: str, fingerprint: str, where: str) -> str | None:
    """The row's one error line when its accuracy, measured on the same images as ``recorded`` (same data name
    and fingerprint, same count: bench takes the first N test images), falls outside the 95% interval of the
    recorded figure; None when it is inside, or when the images differ (nothing to compare). ``where`` names
    this machine's CPU features: int8 kernels differ between CPUs (onnxruntime's without VNNI saturate)."""
    if (not recorded or row.get("status") != "ok" or not finite(row.get("accuracy"))
            or (recorded["data"], recorded["data_fingerprint"], recorded["images"])
            != (data, fingerprint, row.get("images"))):
        return None
    n, claimed = recorded["images"], recorded["accuracy"]
    low, high = wilson_interval(round(claimed * n), n)
    if low <= row["accuracy"] <= high:
        return None
    there = [f"{key} {recorded[key]}" for key in ("device", "runtime")   # only where they differ
             if recorded.get(key, row.get(key)) != row.get(key)]
    if isinstance(recorded.get("cpu_features"), list):
        there.append(f"CPU features: {', '.join(map(str, recorded['cpu_features'])) or 'none'}")
    recorded_on = f" ({'; '.join(there)})" if there else ""
    return (f"{row['file']}: top-1 {100 * row['accuracy']:.1f}% is outside {100 * low:.1f}–{100 * high:.1f}%, "
            f"the 95% interval of the {100 * claimed:.1f}% its {MANIFEST} records for the same {n:,} test images"
            f"{recorded_on}; measured {where}")


def check_recorded_accuracy(rows: list[dict], data: str, fingerprint: str, where: str) -> list[dict]:
    """``rows`` with those whose accuracy contradicts their manifest's figure for the same images marked
    :data:`MISMATCH`, with the line saying so as their error (figures kept: they are what ran here)."""
    out = []
    for row in rows:
        problem = accuracy_mismatch(row, recorded_accuracy(Path(row["file"])), data, fingerprint, where)
        out.append({**row, "status": MISMATCH, "error": problem} if problem else row)
    return out


def measured(row: dict) -> bool:
    """Whether the row's figures were measured (``ok``, or a :data:`MISMATCH` with its manifest)."""
    return row.get("status") in MEASURED


def base_row(path: Path, device: str, threads: int) -> dict:
    entry = manifest_entry(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return {
        "file": str(path), "model": entry.get("model") or path.stem,
        "format": entry.get("format") or FORMATS.get(path.suffix.lower(), path.suffix.lstrip(".")),
        "precision": entry.get("precision"), "runtime": None, "device": device, "threads": threads,
        "bytes": size, "parameters": entry.get("parameters"), "macs": entry.get("macs"),
    }


def merge(row: dict, result: dict) -> dict:
    """Fold a worker/device result into a row."""
    lat = result.get("latency") or {}
    row = dict(row)
    row.update(
        runtime=result.get("runtime") or row.get("runtime"),
        precision=row.get("precision") or result.get("precision_guess"),
        images=result.get("images"), correct=result.get("correct"), accuracy=result.get("accuracy"),
        ci_low=result.get("ci_low"), ci_high=result.get("ci_high"),
        latency_ms=lat.get("median_ms"), spread_lo_ms=lat.get("spread_lo_ms"), spread_hi_ms=lat.get("spread_hi_ms"),
        p90_ms=lat.get("p90_ms"), p99_ms=lat.get("p99_ms"), runs=lat.get("runs"), blocks=lat.get("blocks"),
        throughput_ips=result.get("throughput_ips"), batch=result.get("batch"), load_ms=result.get("load_ms"),
        peak_rss_mb=result.get("peak_rss_mb"), tensorflow_imported=result.get("tensorflow_imported"),
        status=result.get("status", "error"), error=result.get("error"),
    )
    if result.get("note"):
        row["note"] = result["note"]
    if result.get("versions"):  # the device's runtime versions, as its worker found them
        row["versions"] = result["versions"]
    if result.get("contract"):  # what the file took and gave: its input size, range, where that was read
        row["contract"] = result["contract"]
    for key, value in (result.get("figures") or {}).items():  # a device's own fields (the mcu's arena...)
        if row.get(key) is None:
            row[key] = value
    if result.get("predictions") is not None:
        row["predictions"] = result["predictions"]
    if row["status"] == "ok" and row.get("tensorflow_imported"):
        row.update(status="error", error="TensorFlow was imported by the runtime-only worker")
    return row


# --------------------------------------------------------------------------- the run

def run_bench(files: list[tuple[Path, str | None]], images: np.ndarray, labels: np.ndarray, device: Device,
              threads: list[int], job: Job, on_row: Callable[[dict, int], None] | None = None, rounds: int = 1,
              reference: Path | None = None, data_labels: tuple[str, ...] = LABELS,
              model_labels: tuple[str, ...] | None = None,
              input_range: tuple[float, float] | None = None) -> list[dict]:
    """One row per (file, thread count), each measured in its own worker process on ``device``.

    Which files at which thread counts is the device's plan (:meth:`Device.plan`, as for files the user named):
    a file it cannot run gets an error row saying why. ``rounds`` above 1 measures the whole list
    that many times, round-robin, so drift hits every file alike (:mod:`edgecifar.bench.rounds`): accuracy
    in round 1 only, latency the median of the round medians; a row that fails is not measured again.
    ``reference`` (one of the files) gives every row its ``vs_reference``. ``on_row(row, round)`` sees each
    measurement as it ends. ``data_labels`` names the classes of ``labels``; ``model_labels`` and ``input_range``
    (``--labels``, ``--input-range``) replace what the files' contracts say (edgecifar.contract)."""
    plan = device.plan(files, threads, named=True)
    checked, threads = plan.files, plan.threads
    notes = {path: unvalidated_note(path) for path, problem in checked if not problem}
    cells = [(path, problem, t) for path, problem in checked for t in threads]
    rows: dict[int, dict] = {}            # cell -> its row from round 1 (an error row if a round failed)
    medians: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    laps: dict[int, list[dict]] = {i: [] for i in range(len(cells))}   # cell -> each round's PER_ROUND fields
    with tempfile.TemporaryDirectory(prefix="edgecifar-bench-") as tmp:
        npz = Path(tmp) / "test.npz"
        np.savez(npz, x=np.ascontiguousarray(images, dtype=np.uint8), y=np.asarray(labels, dtype=np.int64),
                 names=np.asarray(data_labels, dtype=str), model_labels=np.asarray(model_labels or (), dtype=str),
                 input_range=np.asarray(input_range or (), dtype=np.float64))
        try:
            for r, i in round_robin(range(len(cells)), rounds):
                path, problem, t = cells[i]
                if r > 1 and rows[i]["status"] != "ok":
                    continue  # an error row is made once, not once per round
                if problem:
                    result = {"status": "error", "error": problem}
                else:
                    result = device.run(replace(job, file=path, images=npz, threads=t, accuracy=r == 1))
                row = with_note(merge(base_row(path, device.name, t), result), notes.get(path))
                if on_row:
                    on_row(row, r)
                if r == 1:
                    rows[i] = row
                elif row["status"] != "ok":
                    rows[i] = {**rows[i], "status": "error", "error": f"round {r}: {row['error']}"}
                medians[i].append(row["latency_ms"])
                laps[i].append({k: row.get(k) for k in PER_ROUND})
        finally:
            device.close()
    out = [with_rounds(rows[i], medians[i], rounds, laps[i]) for i in range(len(cells))]
    if reference is not None:
        ref = {t: i for i, (path, _, t) in enumerate(cells) if path == reference and out[i]["status"] == "ok"}
        for i, (_, _, t) in enumerate(cells):
            ok = out[i]["status"] == "ok" and t in ref
            out[i]["vs_reference"] = vs_reference(medians[i], medians[ref[t]]) if ok else None
    return out


def with_note(row: dict, note: str | None) -> dict:
    """``row`` with ``note`` added to the one it may already have (a device's)."""
    if not note:
        return row
    return {**row, "note": f"{row['note']}; {note}" if row.get("note") else note}


def with_rounds(row: dict, medians: list[float], rounds: int, laps: Sequence[dict] = ()) -> dict:
    """A row with its round count; above one round, its latency and spread from the round medians, and each
    PER_ROUND field the median of its rounds' values (a slow first round no longer sets the tails alone)."""
    row = {**row, "rounds": rounds}
    if rounds > 1 and row["status"] == "ok":
        row.update(over_rounds(medians), round_medians_ms=medians)
        for key in PER_ROUND:
            values = [lap[key] for lap in laps if lap.get(key) is not None]
            if values:
                row[key] = float(np.median(values))
    return row


def fields(rows: list[dict]) -> list[str]:
    """FIELDS (the OPTIONAL ones when a row has them), then any device's own fields found in ``rows`` (in
    first-seen order), for JSON and CSV."""
    present = {k for r in rows for k in r}
    extra = [k for r in rows for k in r if k not in FIELDS and k not in ("note", "predictions")]
    return [*(f for f in FIELDS if f not in OPTIONAL or f in present), *dict.fromkeys(extra)]


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_threads(text: str) -> list[int]:
    """``"1,2"`` -> [1, 2]; an error for anything but positive integers."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise EdgeCifarError(f"--threads {text!r}: expected positive integers separated by commas, e.g. 1,2")
    return list(dict.fromkeys(values))
