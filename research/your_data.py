"""The "your model, your data" path end to end, as a user runs it, on a real dataset no one here made.

    python -m research.your_data [RUNS_DIR]      # default ~/edgecifar-runs/your-data

scikit-learn's handwritten digits (1,797 8x8 images, UCI) become a folder of PNGs: five classes (zero..four),
split 60/20/20 into train/ val/ test/. Then, each through the ``edgecifar`` console script:
1. ``train bn_gap_sound --data digits5 --image-size 32``; ``export --int8 --fp32 --data digits5``;
   ``bench`` on digits5/test with its class names; ``predict`` on a test folder;
2. a foreign Keras model (96x96 input, two classes, expecting pixels 0..1, built and trained here with plain
   Keras as a user would) exported with ``--input-range 0,1`` and benched on a two-class folder.
Every command and its output go to RUNS_DIR/log.md; the figures the note quotes are from there.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

NAMES = ("zero", "one", "two", "three", "four")
BIN = Path(sys.executable).with_name("edgecifar")


def digits_folder(root: Path, classes: tuple[str, ...], size: int = 32) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        for k, i in enumerate(idx):
            split = "train" if k < 0.6 * len(idx) else "val" if k < 0.8 * len(idx) else "test"
            pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
            rgb = np.repeat(pixels[..., None], 3, axis=2)
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.png")
    return root


def run(log, *args) -> str:
    cmd = [str(BIN), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip()
    log.write(f"\n```\n$ edgecifar {shlex.join(map(str, args))}\n{text}\n```\n"
              f"exit {proc.returncode}\n")
    log.flush()
    return text


def foreign_model(path: Path, folder: Path) -> None:
    """A user's own 96x96 two-class Keras model that expects pixels 0..1 (no rescaling inside)."""
    import keras

    from edgecifar import data

    ds = data.load(folder, size=(96, 96))
    keras.utils.set_random_seed(0)
    inp = keras.Input((96, 96, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds.x_train / 255.0, ds.y_train, epochs=40, batch_size=16, verbose=0)
    model.save(path)


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    digits5 = digits_folder(root / "digits5", NAMES)
    two = digits_folder(root / "digits2", NAMES[:2], size=96)
    with open(root / "log.md", "w") as log:
        log.write("# your model, your data: one run\n")
        run(log, "train", "bn_gap_sound", "--data", digits5, "--image-size", 32, "--out", root / "run",
            "--overwrite", "--quiet")
        run(log, "export", root / "run", "--int8", "--fp32", "--data", digits5)
        run(log, "bench", root / "run" / "export", "--data", digits5 / "test")
        run(log, "predict", digits5 / "test" / "three", "--model", root / "run" / "export" / "bn_gap_sound_int8.tflite")
        foreign_model(root / "theirs.keras", two)
        run(log, "export", root / "theirs.keras", "--int8", "--fp32", "--input-range", "0,1", "--data", two,
            "--out", root / "theirs-export")
        run(log, "bench", root / "theirs-export", "--data", two / "test")
    print(f"wrote {root / 'log.md'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / "edgecifar-runs" / "your-data").expanduser())
