"""``edgecifar predict IMAGE ...``: classify photos with a TFLite file and LiteRT alone (no TensorFlow).

Preprocessing, the way CIFAR-10's 32x32 images were made from larger photos: the image is converted
to RGB (alpha dropped, palette/greyscale expanded), center-cropped to a square (the largest one, so
objects keep their proportions), then downscaled to 32x32 with Pillow's **BOX** filter: every output
pixel is the plain average of the source pixels it covers (an area/antialiased downscale, no
sharpening), applied in one step. Images already 32x32 pass through unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from edgecifar import INPUT_SHAPE, LABELS
from edgecifar.errors import EdgeCifarError, ModelError


class ImageError(EdgeCifarError):
    """An image file that cannot be read."""


def load_image(path: str | Path, size: int = INPUT_SHAPE[0]) -> np.ndarray:
    """One image file (PNG, JPEG, anything Pillow reads) as uint8 [size, size, 3]; see the module doc."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    w, h = rgb.size
    side = min(w, h)
    if side < 1:
        raise ImageError(f"{path}: empty image ({w}x{h})")
    if (w, h) != (size, size):
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.resize((size, size), Image.Resampling.BOX, box=(left, top, left + side, top + side))
    return np.asarray(rgb, dtype=np.uint8)


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
              help="A .tflite file (default: the best shipped int8 model).")
@click.option("--top", type=click.IntRange(1, 10), default=3, show_default=True, help="Classes listed per image.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--runtime", type=click.Choice(["auto", "litert", "tflite-runtime"]), default="auto", show_default=True)
@click.pass_context
def predict(ctx, images, model_path, top, threads, runtime):
    """Classify PNG/JPEG images of any size (center square, BOX-downscaled to 32x32) with LiteRT.

    Prints the class, its probability and the top classes per image. An unreadable image gets a
    one-line error; the others are still classified (exit code 1 if any failed).
    """
    from edgecifar import runtime as rt

    path = model_path or default_model()
    if path.suffix.lower() != ".tflite":
        raise ModelError(f"{path}: predict runs .tflite files with LiteRT (use edgecifar bench for .onnx)")
    model = rt.load(path, threads=threads, runtime=runtime)
    click.echo(f"model: {path} ({model.runtime}); preprocessing: center square, BOX downscale to 32x32", err=True)
    failures = 0
    for image_path in images:
        try:
            pixels = load_image(image_path)
        except ImageError as exc:
            click.echo(f"error: {exc}", err=True)
            failures += 1
            continue
        probs = model.predict(pixels[None])[0]
        ranked = top_k(probs, top)
        best, p = ranked[0]
        others = ", ".join(f"{name} {prob:.1%}" for name, prob in ranked)
        click.echo(f"{image_path}: {best} ({p:.1%})  top {len(ranked)}: {others}")
    if failures:
        click.echo(f"{failures} of {len(images)} image(s) could not be read", err=True)
        ctx.exit(1)


if __name__ == "__main__":  # pragma: no cover
    predict(sys.argv[1:])
