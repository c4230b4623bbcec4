"""``edgecifar predict IMAGE|FOLDER ...``: classify photos with a TFLite file and LiteRT alone (no TensorFlow).

Each image is decoded and preprocessed by :mod:`edgecifar.images` (upright per EXIF, 8-bit RGB, center square,
BOX-resized to 32x32; untrusted, so with bounded memory and damaged files said). The model runs in a worker
process (:mod:`edgecifar.bench.predict_worker`): a file that crashes LiteRT costs the image it crashed on (one
error line), and the other images are still classified.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from edgecifar import LABELS
from edgecifar.bench.predict_worker import ModelWorker, NotClassified
from edgecifar import contract as contracts
from edgecifar.contract import click_options as contract_options
from edgecifar.errors import ModelError
from edgecifar.images import ImageError, load_image, photo_suffixes
from edgecifar.units import percent, plural


def expand_images(args) -> list[Path]:
    """Image arguments in order, each folder replaced by the image files in it and in its subfolders (a folder of
    class folders, as ``--data`` takes; sorted; hidden entries skipped; symlinked folders not followed, so a link
    cannot lead out of it or round in a loop); a folder without any stays, so it gets its own error line."""
    suffixes = None
    out: list[Path] = []
    for arg in map(Path, args):
        if not arg.is_dir():
            out.append(arg)
            continue
        suffixes = suffixes or photo_suffixes()
        found = []
        for top, dirs, files in os.walk(arg, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(top) / f for f in sorted(files)
                      if not f.startswith(".") and Path(f).suffix.lower() in suffixes and (Path(top) / f).is_file()]
        out.extend(found or [arg])
    return out


def default_model() -> Path:
    """The best shipped model: the int8 TFLite file with the highest validation accuracy in the zoo."""
    from edgecifar import zoo

    folder = zoo.ZOO_DIR
    entries = [e for e in zoo.load_manifest(folder).get("files", [])
               if e.get("format", Path(e.get("file", "")).suffix.lstrip(".")) == "tflite"
               and e.get("precision") == "int8" and (folder / e.get("file", "")).is_file()]
    if not entries:
        raise ModelError("no shipped model yet (the zoo is empty): pass --model FILE.tflite")
    best = max(entries, key=lambda e: (e.get("validation") or {}).get("accuracy") or 0.0)
    return folder / best["file"]


def top_k(probs: np.ndarray, k: int, names=LABELS) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


# --------------------------------------------------------------------------- the command

@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="A .tflite file, or a zoo file by the name `edgecifar zoo` lists (default: the best shipped "
                   "int8 model).")
@click.option("--top", type=click.IntRange(1, 10), default=3, show_default=True, help="Classes listed per image.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--runtime", type=click.Choice(["auto", "litert", "tflite-runtime"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (per image: class, probability, "
              "top classes, warnings or error) instead of lines.")
@contract_options
@click.pass_context
def predict(ctx, images, model_path, top, threads, runtime, as_json, input_range, labels):
    """Classify images of any size and mode (upright per EXIF, center square, BOX-resized to the model's input)
    with LiteRT.

    IMAGES are files or folders (every image file in a folder). Prints the class, its probability and the
    top classes per image. An unreadable image gets a one-line error, and so does one the model crashed on;
    the others are still classified (exit code 1 if any failed).
    """
    from edgecifar import runtime as rt

    path = rt.locate(model_path) if model_path else default_model()
    if path.suffix.lower() != ".tflite":
        raise ModelError(f"{path}: predict runs .tflite files with LiteRT (use edgecifar bench for .onnx)")
    worker = ModelWorker(path, threads, runtime, input_range, labels)
    with contextlib.closing(worker):
        runtime_name = worker.start()
        shape, names = model_input(worker, path)
        click.echo(f"model: {path} ({runtime_name}); preprocessing: upright (EXIF), center square, BOX resize "
                   f"to {shape[1]}x{shape[0]}{' grey' if shape[2] == 1 else ''}", err=True)
        files = expand_images(images)
        results = [classify_file(worker, image_path, top, as_json, shape, names) for image_path in files]
        if worker.meaning == "logits" and worker.contract.get("outputs") != "logits":
            click.echo(f"note: {path.name}: its outputs are not probabilities (logits); shown through a softmax",
                       err=True)
    if as_json:
        click.echo(json.dumps({"model": str(path), "runtime": runtime_name, "labels": list(names),
                               "images": [entry for entry, _ in results]}, indent=2))
    failures = [failure for _, failure in results if failure]
    if failures:
        why = "could not be read" if set(failures) == {"read"} else "could not be classified"
        click.echo(f"{len(failures)} of {plural(len(files), 'image')} {why}", err=True)
        ctx.exit(1)


def model_input(worker: ModelWorker, path: Path) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """The model's input shape and its class names as the worker read them, the user's flags applied (numbered
    when neither file nor flag names them; what a flag overrode said once)."""
    contract = worker.contract
    shape = tuple(contract.get("shape") or (32, 32, 3))
    names = tuple(contract.get("labels") or LABELS)
    if not contract.get("named", True):
        click.echo(f"note: {path.name} names no classes: shown by number (--labels FILE names them)", err=True)
    for note in contract.get("overrides", ()):
        click.echo(f"note: {note}", err=True)
    return shape, names


def classify_file(worker: ModelWorker, image_path: Path, top: int, as_json: bool,
                  shape: tuple[int, int, int] = (32, 32, 3), names: tuple[str, ...] = LABELS) -> tuple[dict, str | None]:
    """One image's JSON entry (printing its line, its warnings or its error) and how it failed: None, "read"
    (the image) or "model" (the runtime failed or crashed on it)."""
    notes: list[str] = []
    entry: dict = {"file": str(image_path)}
    try:
        if image_path.is_dir():  # expand_images leaves only folders without images
            raise ImageError(f"{image_path}: a folder without image files")
        pixels = contracts.fit(load_image(image_path, size=shape[:2], warn=notes.append)[None], shape)[0]
    except ImageError as exc:
        entry["error"] = str(exc)
        click.echo(f"error: {exc}", err=True)
        return entry, "read"
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    try:
        probs = worker.classify(pixels)
    except NotClassified as exc:
        entry["error"] = f"{image_path}: not classified: {exc}"
        click.echo(f"error: {entry['error']}", err=True)
        return entry, "model"
    ranked = top_k(probs, top, names)
    entry.update({"class": ranked[0][0], "probability": ranked[0][1],
                  "top": [{"class": name, "probability": prob} for name, prob in ranked], "warnings": notes})
    if not as_json:
        others = ", ".join(f"{name} {percent(prob)}" for name, prob in ranked)
        click.echo(f"{image_path}: {ranked[0][0]} ({percent(ranked[0][1])})  top {len(ranked)}: {others}")
    return entry, None


if __name__ == "__main__":  # pragma: no cover
    predict(sys.argv[1:])
