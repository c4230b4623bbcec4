"""``edgecifar predict IMAGE|FOLDER ...``: classify photos with a TFLite file and LiteRT alone (no TensorFlow).

Preprocessing, the way CIFAR-10's 32x32 images were made from larger photos:

1. the picture is turned upright as its EXIF orientation says (phones store photos sideways and say so);
2. it becomes 8-bit RGB with every sample's meaning kept: 16-bit samples are scaled to 8 bits (not clipped
   at 255, which turned a 16-bit greyscale PNG white), greyscale and palettes are expanded, CMYK and Lab are
   converted, and transparent pixels are shown over white, as an image viewer shows them. Pixels with no
   standard white level (32-bit integer or float) are refused in one line;
3. it is center-cropped to its largest square (objects keep their proportions) and resized to 32x32 with
   Pillow's **BOX** filter: every output pixel is the plain average of the source pixels it covers (an
   area downscale, no sharpening), in one step. Images already 32x32 pass through unchanged; an image
   smaller than 32x32 is upscaled, with a warning (its class then says little).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import click
import numpy as np

from edgecifar import INPUT_SHAPE, LABELS
from edgecifar.errors import EdgeCifarError, ModelError
from edgecifar.units import percent, plural

#: Pillow modes of 16-bit samples (PNG, TIFF): scaled to 8 bits, 65535 -> 255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Formats whose 32-bit integer mode "I" holds 16-bit samples: Pillow scales a PGM's maxval to 65535
#: (and Pillow before 10 opened 16-bit greyscale PNGs as "I").
SIXTEEN_BIT_AS_I = frozenset({"PPM", "PNG"})
#: Formats Pillow registers but only identifies (its stub plugins, and MPEG's header): not photos.
NOT_PHOTOS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF"})
#: What a transparent pixel is shown over.
BACKGROUND = (255, 255, 255)


class ImageError(EdgeCifarError):
    """An image file that cannot be read."""


def to_rgb(img, fmt: str | None, path: Path):
    """A Pillow image of any mode as 8-bit RGB with the same picture (see the module doc, step 2)."""
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and fmt in SIXTEEN_BIT_AS_I):
        grey = np.rint(np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ImageError(f"{path}: {kind} pixels have no standard white level; save it with 8 or 16 bits per channel")
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, size: int = INPUT_SHAPE[0], warn: Callable[[str], None] | None = None) -> np.ndarray:
    """One image file (PNG, JPEG, anything Pillow reads) as uint8 [size, size, 3]; see the module doc.

    ``warn`` receives a one-line warning about an image smaller than ``size`` x ``size``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: a folder, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img), img.format, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {detail})") from None
    w, h = rgb.size
    side = min(w, h)
    if side < 1:
        raise ImageError(f"{path}: empty image ({w}x{h})")
    if side < size and warn:
        warn(f"{path}: {w}x{h} pixels, smaller than {size}x{size}: upscaled, so its class says little")
    if (w, h) != (size, size):
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.resize((size, size), Image.Resampling.BOX, box=(left, top, left + side, top + side))
    return np.asarray(rgb, dtype=np.uint8)


def photo_suffixes() -> frozenset[str]:
    """File suffixes of the image formats Pillow can open (what a folder argument is searched for)."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in NOT_PHOTOS)


def expand_images(args) -> list[Path]:
    """Image arguments in order, each folder replaced by the image files in it (sorted, not recursive);
    a folder without any stays, so it gets its own error line."""
    suffixes = None
    out: list[Path] = []
    for arg in map(Path, args):
        if not arg.is_dir():
            out.append(arg)
            continue
        suffixes = suffixes or photo_suffixes()
        found = sorted(p for p in arg.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in suffixes)
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
@click.pass_context
def predict(ctx, images, model_path, top, threads, runtime, as_json):
    """Classify images of any size and mode (upright per EXIF, center square, BOX-resized to 32x32) with LiteRT.

    IMAGES are files or folders (every image file in a folder). Prints the class, its probability and the
    top classes per image. An unreadable image gets a one-line error; the others are still classified
    (exit code 1 if any failed).
    """
    from edgecifar import runtime as rt

    path = rt.locate(model_path) if model_path else default_model()
    if path.suffix.lower() != ".tflite":
        raise ModelError(f"{path}: predict runs .tflite files with LiteRT (use edgecifar bench for .onnx)")
    model = rt.load(path, threads=threads, runtime=runtime)
    click.echo(f"model: {path} ({model.runtime}); preprocessing: upright (EXIF), center square, BOX resize to "
               "32x32", err=True)
    files = expand_images(images)
    results = []
    for image_path in files:
        notes: list[str] = []
        entry = {"file": str(image_path)}
        results.append(entry)
        try:
            if image_path.is_dir():  # expand_images leaves only folders without images
                raise ImageError(f"{image_path}: a folder without image files")
            pixels = load_image(image_path, warn=notes.append)
        except ImageError as exc:
            entry["error"] = str(exc)
            click.echo(f"error: {exc}", err=True)
            continue
        for note in notes:
            click.echo(f"warning: {note}", err=True)
        ranked = top_k(model.predict(pixels[None])[0], top)
        entry.update({"class": ranked[0][0], "probability": ranked[0][1],
                      "top": [{"class": name, "probability": prob} for name, prob in ranked], "warnings": notes})
        if not as_json:
            others = ", ".join(f"{name} {percent(prob)}" for name, prob in ranked)
            click.echo(f"{image_path}: {ranked[0][0]} ({percent(ranked[0][1])})  top {len(ranked)}: {others}")
    if as_json:
        click.echo(json.dumps({"model": str(path), "runtime": model.runtime, "labels": list(LABELS),
                               "images": results}, indent=2))
    failures = sum("error" in r for r in results)
    if failures:
        click.echo(f"{failures} of {plural(len(files), 'image')} could not be read", err=True)
        ctx.exit(1)


if __name__ == "__main__":  # pragma: no cover
    predict(sys.argv[1:])
