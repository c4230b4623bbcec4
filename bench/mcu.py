"""``edgecifar bench --device mcu``: one file in TensorFlow Lite for Microcontrollers, in this process.

    python -m edgecifar.bench.mcu FILE [--images TEST.npz]

Prints one JSON line (the worker's prefix and shape, built by ``worker.device_result``): whether every op
has a TFLite Micro kernel (the missing ones named), the smallest arena that allocates and the interpreter's
own arena total, flash (the file's size), MACs counted from the flatbuffer, which microcontroller classes
it fits (:data:`edgecifar.micro.CHIPS`) and, with ``--images``, top-1 under TFLite Micro's reference kernels
and its agreement with LiteRT on the same images. No latency: this CPU is not the chip. Without
``--images`` it checks only (as ``python -m edgecifar.micro FILE`` does, for export and this device's
refusals). Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgecifar import micro
from edgecifar.bench.worker import PREFIX, device_result
from edgecifar.errors import one_line
from edgecifar.units import percent, size

NOTE = ("mcu: TFLite Micro's reference kernels on this CPU (accuracy, arena, flash); "
        "no latency is claimed for a chip")


def measure(path: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None,
            names: tuple[str, ...] | None = None, model_labels: tuple[str, ...] | None = None,
            input_range: tuple[float, float] | None = None) -> dict:
    """The check, then (with images) accuracy under TFLite Micro and top-1 agreement with LiteRT; the images
    fitted to the file's input and its classes matched to the data's as the bench worker does."""
    from edgecifar import LABELS, contract, metrics, runtime

    c = micro.check(path)
    figs = micro.figures(c)
    if not c.runs:
        return device_result(micro.RUNTIME, status="error", error=f"{path}: {c.summary()}", figures=figs)
    if images is None:
        return device_result(micro.RUNTIME, figures=figs, note=NOTE)
    t0 = time.perf_counter()
    model = micro.MicroModel(path, c.arena)
    model.apply_flags(input_range, model_labels)
    load_ms = (time.perf_counter() - t0) * 1e3
    images = model.contract.fit(images)
    classes, matched = contract.match_classes(model.contract.labels, model.classes, tuple(names or LABELS), str(path))
    t0 = time.perf_counter()
    scores = model.predict(images)
    figs["host_ms_per_image"] = (time.perf_counter() - t0) * 1e3 / max(len(images), 1)
    reference = runtime.load(path, input_range=input_range, labels=model_labels).predict(images)
    figs["agreement"] = metrics.agreement(scores, reference) if len(images) else float("nan")
    predicted = classes[np.argmax(scores, axis=1)]
    note = "; ".join(n for n in (NOTE, *model.overrides, matched) if n)
    return device_result(micro.RUNTIME, images=len(labels), correct=int(np.sum(predicted == labels)),
                         load_ms=load_ms, predictions=predicted.astype(int).tolist(), figures=figs, note=note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecifar.bench.mcu", description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--images", help=".npz with x (uint8 NHWC) and y; without it, check only")
    args = parser.parse_args(argv)
    code = 0
    try:
        if args.images:
            with np.load(args.images) as npz:   # names, model_labels, input_range: as the bench worker reads them
                images, labels = npz["x"], npz["y"]
                names = tuple(str(n) for n in npz["names"]) if "names" in npz.files else None
                model_labels = tuple(str(n) for n in npz["model_labels"]) if "model_labels" in npz.files else ()
                input_range = tuple(float(v) for v in npz["input_range"]) if "input_range" in npz.files else ()
        else:
            images = labels = names = None
            model_labels = input_range = ()
        result = measure(Path(args.file), images, labels, names, model_labels or None, input_range or None)
    except Exception as exc:  # one line for the report, never a traceback
        result = {"status": "error", "error": one_line(exc, limit=None)}
    if result.get("status") != "ok":
        code = 1
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    sys.stdout.write(PREFIX + json.dumps(result, allow_nan=True) + "\n")
    sys.stdout.flush()
    return code


# --------------------------------------------------------------------------- how mcu rows are shown

def _macs(value) -> str:
    return f"{value / 1e6:.2f}M" if isinstance(value, (int, float)) and value == value else "–"


def _cells(r: dict) -> dict[str, str]:
    ok = r.get("status") == "ok"
    acc = r.get("accuracy")
    has_acc = ok and isinstance(acc, float) and acc == acc
    agree = r.get("agreement")
    fits = r.get("fits") or []
    return {
        "file": Path(r["file"]).name,
        "flash": size(r.get("flash_bytes", r.get("bytes"))),
        "MACs": _macs(r.get("macs")),
        "arena": size(r.get("arena_bytes")),
        "top-1": percent(acc) if has_acc else "–",
        "95% CI (n)": (f"[{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}] ({r['images']})" if has_acc else "–"),
        "agree LiteRT": percent(agree),
        "fits": _fits(fits) if r.get("arena_bytes") else "–",
        "status": "ok" if ok else (r.get("error") or "error").replace(f"{r['file']}: ", ""),
    }


def _fits(names: list[str]) -> str:
    """"6 of 6", "4 of 6 (not STM32L432KC, nRF52840)", "none": the exceptions are the shorter list."""
    if not names:
        return "none"
    others = [c.name for c in micro.CHIPS if c.name not in names]
    return f"{len(names)} of {len(micro.CHIPS)}" + (f" (not {', '.join(others)})" if others else "")


COLUMNS = ("file", "flash", "MACs", "arena", "top-1", "95% CI (n)", "agree LiteRT", "fits", "status")


def table(rows: list[dict], title: str):
    """A terminal table of mcu rows that fits: file, flash, arena and top-1 whole at any width, the other
    columns where they fit (all are in --json/--csv); errors follow the table as ``file: error`` lines."""
    from rich.text import Text

    from edgecifar.tables import Column, FittedTable

    cells = [_cells(r) for r in rows]
    keep = ("file", "flash", "arena", "top-1")
    columns = [Column(name, lambda i, r, name=name: cells[i][name] if name != "status" else
                      ("ok" if r.get("status") == "ok" else Text("error", style="red")),
                      "left" if name in ("file", "fits", "status") else "right", keep=name in keep)
               for name in COLUMNS]
    errors = [Text(f"{c['file']}: {c['status']}", style="red") for c, r in zip(cells, rows) if r.get("status") != "ok"]
    return FittedTable(columns, rows, title=title, priority=("status", "agree LiteRT", "fits", "95% CI (n)", "MACs"),
                       footer=errors)


def legend() -> list[str]:
    lines = ["arena = the smallest tensor arena that allocates in TFLite Micro (bisected to the byte); flash = "
             "the file's size. TFLite Micro's own code, the stack and the application are not counted. "
             "agree LiteRT = top-1 agreement with LiteRT on the same images. fits = SRAM >= arena and "
             "flash >= file on:"]
    lines += [f"  {c.name} ({c.core}): {c.sram // 1024} KiB SRAM, {c.flash // 1024:,} KiB flash [{c.source}]"
              for c in micro.CHIPS]
    lines.append("No latency: TFLite Micro's reference kernels on this CPU say nothing about a chip's speed.")
    return lines


def markdown(rows: list[dict], meta: dict) -> str:
    """A GitHub table of mcu rows, headed by what was measured, with the chip table under it."""
    from importlib import metadata

    head = (f"{meta.get('images')} test images from {Path(str(meta.get('data'))).name}; device mcu (tflite-micro "
            f"{metadata.version('tflite-micro')}, reference kernels, on this CPU); commit {meta.get('commit')}.")
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = _cells(r)
        lines.append("| " + " | ".join(cells[c].replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join([*lines, "", *legend()]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
