"""`edgecifar train RECIPE --data FOLDER`: any registry model trains on a folder of photos, taking the folder's
classes and `--image-size` (input and head adapt), its own val/ and test/ splits, and records them for export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import separable_images

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))
CLASSES = ("circle", "square", "zigzag")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Three classes of 40x40 PNG photos in train/, val/ and test/ (the colour-and-stripe images of
    conftest.separable_images, classes 0-2, upscaled)."""
    folder = tmp_path_factory.mktemp("shapes")
    images, labels = separable_images(300, seed=3)
    keep = labels < 3
    for i, (image, label) in enumerate(zip(images[keep], labels[keep])):
        split = ("train", "train", "train", "val", "test")[i % 5]
        target = folder / split / CLASSES[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((40, 40), Image.Resampling.BILINEAR).save(target / f"{i}.png")
    return folder


def _train(*args: str, cache: Path) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([EDGECIFAR, "train", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EDGECIFAR_CACHE": str(cache)})


@pytest.mark.slow
def test_a_recipe_trains_on_a_photo_folder_with_its_classes_size_and_splits(shapes, tmp_path):
    import keras

    out = tmp_path / "run"
    proc = _train("bn_gap", "--data", str(shapes), "--image-size", "40", "--epochs", "3", "--batch-size", "16",
                  "--out", str(out), "--quiet", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == list(CLASSES) and metrics["input_shape"] == [40, 40, 3]
    counts = {split: sum(1 for _ in (shapes / split).rglob("*.png")) for split in ("train", "val", "test")}
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == \
        (counts["train"], counts["val"], counts["test"])
    assert metrics["val_accuracy"] > 0.9                     # separable classes, and statistics that fit them:
    assert metrics["batchnorm_reestimated"]["steps"] == 3 * -(-counts["train"] // 16)   # a few dozen steps
    assert (proc.stdout + proc.stderr).count("BatchNorm statistics re-estimated") == 1   # said once
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, 40, 40, 3) and tuple(model.output_shape) == (None, 3)
    assert "validation: the data's own" in proc.stdout + proc.stderr
    again = _train("bn_gap", "--data", str(shapes), "--image-size", "48", "--epochs", "3", "--batch-size", "16",
                   "--out", str(out), "--resume", cache=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "image_size 40" in again.stderr


@pytest.mark.slow
def test_a_recipe_that_distils_from_a_cifar_teacher_is_refused_on_other_classes(shapes, tmp_path):
    proc = _train("edge_nano_kd160", "--data", str(shapes), "--epochs", "1", "--out", str(tmp_path / "kd"),
                  cache=tmp_path)
    assert proc.returncode == 2 and "a CIFAR-10 model" in proc.stderr and "Traceback" not in proc.stderr
