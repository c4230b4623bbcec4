"""Shared fixtures: small synthetic CIFAR-format archives the tests write themselves, and the real
data and weights in ../shared (tests that need them skip, saying why, when they are absent)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from edgecifar import LABELS

# No time limit per generated example: the suite runs beside trainings on a shared core, where Hypothesis'
# 200 ms default failed a pure-numpy property at 300 ms (speed is measured in bench/, not asserted in tests).
settings.register_profile("edgecifar", deadline=None)
settings.load_profile("edgecifar")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGECIFAR_SHARED", ROOT.parent / "shared"))
REAL_ARCHIVE = SHARED / "data" / "cifar-10-python.tar.gz"
REAL_WEIGHTS = SHARED / "weights"


def fresh_python(code: str, timeout: int = 300) -> str:
    """Run ``code`` in a new interpreter (a clean ``sys.modules``), assert it succeeded, return its
    last output line: how tests prove what a code path imports."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


# Each class gets its own colour and stripe orientation, so even a tiny model separates them quickly.
_PALETTE = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40], [230, 40, 230],
                     [40, 230, 230], [140, 90, 30], [250, 250, 250], [20, 20, 20], [128, 128, 128]], np.float32)


def separable_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 NHWC images whose class is visible in colour and stripe direction, plus labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), np.float32)
    for i, c in enumerate(labels):
        stripes = ((xx if c % 2 else yy) // 4 % 2)[..., None] * 40.0
        images[i] = _PALETTE[c] * 0.8 + stripes + rng.normal(0, 12, (32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def batch_pickle(images: np.ndarray, labels, **extra) -> bytes:
    """One batch in the official layout: channel-planar uint8 rows, protocol-2 pickle, bytes keys."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {b"batch_label": b"synthetic", b"labels": list(map(int, labels)), b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
    batch.update({k.encode(): v for k, v in extra.items()})
    return pickle.dumps(batch, protocol=2)


META = pickle.dumps({b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                            "frog", "horse", "ship", "truck")],
                     b"num_cases_per_batch": 100, b"num_vis": 3072}, protocol=2)


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A tar.gz with ``cifar-10-batches-py/NAME`` members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def synthetic_members(n_train_batches: int = 2, per_batch: int = 200, n_test: int = 100,
                      seed: int = 0) -> dict[str, bytes]:
    members = {"batches.meta": META}
    for b in range(n_train_batches):
        x, y = separable_images(per_batch, seed + b)
        members[f"data_batch_{b + 1}"] = batch_pickle(x, y)
    x, y = separable_images(n_test, seed + 99)
    members["test_batch"] = batch_pickle(x, y)
    return members


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory) -> Path:
    """A valid CIFAR-format archive: 2 training batches of 200 separable images, 100 test images."""
    return write_archive(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", synthetic_members())


@pytest.fixture
def offline(monkeypatch):
    """No environment-provided data and no download attempts: tests say exactly where data comes from."""
    monkeypatch.delenv("EDGECIFAR_DATA", raising=False)
    monkeypatch.setenv("EDGECIFAR_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")


@pytest.fixture(scope="session")
def real_archive() -> Path:
    if not REAL_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 copy not found at {REAL_ARCHIVE} (put ../shared beside the checkout)")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def real_weights() -> Path:
    if not any(REAL_WEIGHTS.glob("*0.35_224_no_top.h5")):
        pytest.skip(f"MobileNetV2 0.35 ImageNet weights not found in {REAL_WEIGHTS}")
    return REAL_WEIGHTS


# --------------------------------------------------------------------------- the quick subset stays quick
#: The fixtures that train a model or start from one that was trained here (seconds to minutes each, more on a
#: shared core), wherever they are defined: a test that uses one, directly or through another fixture, must be
#: marked ``slow`` so that ``pytest -m "not slow"`` never waits for a training. Conversions of untrained models
#: built in a fixture (a second or less) are not listed: they are the quick tests' synthetic inputs.
TRAINING_FIXTURES = frozenset({
    "trained_run", "bench_models", "broken_models",        # this file
    "flattened_model",                                       # test_cli_exits.py
    "single_process_run",                                    # test_distributed.py
    "exported", "keras_scores", "device_scores",             # test_export.py
    "relu_int8",                                             # test_mcu.py
    "bf16_run",                                              # test_precision.py
    "stopped_run",                                           # test_train.py
})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test not marked slow that uses a training fixture, before any fixture is set up (an autouse
    fixture would run after the session fixtures it guards against, so after the training)."""
    needs = sorted(TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if needs and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} needs a trained model ({', '.join(needs)}) but is not marked slow: mark it "
                    "@pytest.mark.slow, or give it an input that needs no training (untrained_run, small_model())",
                    pytrace=False)


@pytest.fixture(scope="session")
def untrained_run(tmp_path_factory) -> Path:
    """A run folder whose model.keras is ``baseline`` as built, never trained: a model of the contract for tests
    where what training taught it does not matter (arguments refused before anything is converted)."""
    from edgecifar import models

    out = tmp_path_factory.mktemp("runs") / "baseline-untrained"
    out.mkdir()
    models.create("baseline").save(out / "model.keras")
    return out


@pytest.fixture(scope="session")
def trained_run(synthetic_archive, tmp_path_factory) -> Path:
    """A real (short) training run of ``baseline`` on the synthetic archive: a run directory with model.keras."""
    from edgecifar.train.recipes import get
    from edgecifar.train.runner import RunConfig, run

    out = tmp_path_factory.mktemp("runs") / "baseline-synthetic"
    run(RunConfig(get("baseline").with_overrides(epochs=3, batch_size=32), seed=0, out=out,
                  data=str(synthetic_archive), val_size=50, progress=False))
    return out


# --------------------------------------------------------------------------- model files for bench/predict
#: A shipped int8 file: a real model benched in well under a second, with no model to train first.
SMALL = "edge_nano_kd160_int8.tflite"


def small_model() -> Path:
    """The shipped ``SMALL`` file (the test skips, saying so, when it is not shipped)."""
    from edgecifar import zoo

    path = zoo.ZOO_DIR / SMALL
    if not path.exists():
        pytest.skip(f"{SMALL} is not shipped")
    return path


# Converted with TensorFlow directly, not the export stage, so the bench tests do not depend on it.
BENCH_GOOD = ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx")


def _convert(keras_path: Path, out: Path) -> None:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_path, compile=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiny_fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    calib, _ = separable_images(100, seed=7)

    def representative():
        for img in calib:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / "tiny_int8.tflite").write_bytes(conv.convert())

    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32,
                                                                                name="pixels")], opset=17)
    (out / "tiny_fp32.onnx").write_bytes(proto.SerializeToString())

    # A valid TFLite file no image classifier contract fits: 4 input channels (photos have 1 or 3).
    wrong = keras.Sequential([keras.Input((28, 28, 4)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    (out / "wrong_shape.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(wrong).convert())

    # As edgecifar export writes them: each file carries its contract (edgecifar/contract.py) wherever it is copied.
    from edgecifar import tflite_graph
    from edgecifar.contract import METADATA_NAME, Contract

    ours = Contract(32, 32, 3, input_range=(0.0, 255.0), labels=LABELS, outputs="probabilities", source="baseline")
    for name in BENCH_GOOD:
        path = out / name
        if name.endswith(".tflite"):
            path.write_bytes(tflite_graph.with_metadata(path.read_bytes(), METADATA_NAME, ours.to_json().encode()))
        else:
            import onnx

            proto = onnx.load(str(path))
            proto.metadata_props.add(key=METADATA_NAME, value=ours.to_json())
            onnx.save(proto, str(path))

    params = int(model.count_params())
    manifest = {"source": {"model": "baseline", "parameters": params, "macs": 1_234_567},
                "files": [{"file": name, "model": "baseline", "format": name.rsplit(".", 1)[1],
                           "precision": "int8" if "int8" in name else "fp32", "parameters": params,
                           "macs": 1_234_567, "bytes": (out / name).stat().st_size,
                           "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest(),
                           "input": {"shape": [-1, 32, 32, 3], "layout": "NHWC", "range": [0, 255]},
                           "output": {"meaning": "probabilities", "labels": list(LABELS)},
                           "labels": list(LABELS), "validation": {"accuracy": 0.9, "images": 100}}
                          for name in BENCH_GOOD]}
    (out / "edgecifar.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="session")
def bench_models(trained_run, tmp_path_factory) -> Path:
    """A folder with tiny_fp32.tflite, tiny_int8.tflite, tiny_fp32.onnx, wrong_shape.tflite and a manifest."""
    out = tmp_path_factory.getbasetemp() / "bench-models"
    if not (out / "edgecifar.json").exists():
        _convert(trained_run / "model.keras", out)
    return out


@pytest.fixture(scope="session")
def broken_models(tmp_path_factory, bench_models) -> Path:
    """A folder with a truncated .tflite, random-bytes .tflite and .onnx, and a file of the wrong type."""
    out = tmp_path_factory.getbasetemp() / "bench-broken"
    if not out.exists():
        out.mkdir()
        good = (bench_models / "tiny_fp32.tflite").read_bytes()
        (out / "truncated.tflite").write_bytes(good[: len(good) // 3])
        rng = np.random.default_rng(0)
        (out / "random.tflite").write_bytes(rng.bytes(4096))
        (out / "random.onnx").write_bytes(rng.bytes(4096))
    return out


class _Stopped(Exception):
    pass


def stopped_after_one_epoch(archive, out, recipe, epochs=2, batch=32, **config) -> Path:
    """A run of ``recipe`` for ``epochs`` stopped after its first checkpoint, as a kill leaves it; ``config`` goes
    to RunConfig (``precision=...``)."""
    from edgecifar.train import runner

    save = runner.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise _Stopped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "save_checkpoint", save_then_stop)
        with pytest.raises(_Stopped):
            runner.run(runner.RunConfig(recipe.with_overrides(epochs=epochs, batch_size=batch), out=out,
                                        data=str(archive), val_size=50, progress=False, **config))
    return out
