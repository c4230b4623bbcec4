"""`edgecifar bench --data FOLDER`: a folder of your own photos, one subfolder per class, measured like CIFAR-10:
the images decoded at the files' input size, each file's classes matched to the folder's by name (or by index,
said once), and a file that names no classes and disagrees in count refused in one line asking for --labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edgecifar import LABELS, data
from edgecifar.zoo import ZOO_DIR

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))
SHIPPED = ZOO_DIR / "edge_nano_kd160_int8.tflite"


@pytest.fixture(scope="module")
def pets(real_archive, tmp_path_factory) -> Path:
    """Real test photos of three CIFAR-10 classes, saved as 64x64 JPEGs in class folders (as a user keeps them)."""
    folder = tmp_path_factory.mktemp("pets")
    ds = data.load(real_archive)
    for i in range(300):
        name = ds.label_names[ds.y_test[i]]
        if name in ("cat", "dog", "ship"):
            (folder / name).mkdir(exist_ok=True)
            Image.fromarray(ds.x_test[i]).resize((64, 64), Image.Resampling.BICUBIC).save(folder / name / f"{i}.jpg",
                                                                                           quality=92)
    return folder


def _bench(*args: str, cache: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = cache / "r.json"
    proc = subprocess.run([EDGECIFAR, "bench", *args, "--runs", "5", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "EDGECIFAR_CACHE": str(cache)})
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_a_shipped_file_is_scored_on_a_photo_folder_by_class_name(pets, tmp_path):
    proc, doc = _bench(str(SHIPPED), "--data", str(pets), cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = doc["rows"]
    photos = sum(1 for _ in pets.rglob("*.jpg"))
    assert row["status"] == "ok" and row["images"] == photos
    assert row["accuracy"] > 0.6                          # three classes the model knows among its ten
    assert "classes matched by name; 7 of its classes are not in the data" in row["note"]
    assert row["contract"]["origin"] == "metadata"


def test_a_file_that_names_no_classes_is_asked_for_labels_when_the_counts_differ(pets, tmp_path):
    from edgecifar import contract, tflite_graph

    bare = tmp_path / "bare_int8.tflite"   # the shipped graph without its contract: anyone's file
    bare.write_bytes(tflite_graph.with_metadata(SHIPPED.read_bytes(), contract.METADATA_NAME, b""))
    proc, doc = _bench(str(bare), "--data", str(pets), cache=tmp_path)
    assert proc.returncode == 1
    (row,) = doc["rows"]
    assert "10 outputs, no class names, and the data has 3 classes: name its classes with --labels" in row["error"]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(LABELS))
    proc, doc = _bench(str(bare), "--data", str(pets), "--labels", str(names), cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert doc["rows"][0]["accuracy"] > 0.6 and doc["rows"][0]["contract"]["origin"] == "flags"
