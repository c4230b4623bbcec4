"""Knowledge distillation from a cached teacher: a small model learns from a big one's probabilities.

What: each training image's target becomes ``alpha * teacher + (1 - alpha) * one_hot(label)``, where
``teacher`` is a trained model's class probabilities for that image, averaged with its mirror's.
Why: a teacher's probabilities say which wrong classes are plausible (a cat that looks like a dog),
which a one-hot label cannot; small models gain most from it (Hinton, Vinyals & Dean 2015,
"Distilling the Knowledge in a Neural Network"; MLPerf Tiny's training code distils its small models).
How cheaply: the teacher is any exported file (a ``.tflite`` of the zoo, run in LiteRT), applied once
to the un-augmented training images before training, and cached in the run folder, so students never
pay a teacher forward pass per step. The cost of that shortcut: a flipped or shifted training image
keeps its original image's targets (flip and 2-pixel shifts barely move a CIFAR-10 teacher's output).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgecifar import NUM_CLASSES
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path

CACHE = "teacher.npz"


def soft_targets(labels: np.ndarray, teacher: np.ndarray, alpha: float) -> np.ndarray:
    """Mix one-hot labels with the teacher's probabilities: ``alpha`` = weight of the teacher (0..1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation weight must be in [0, 1] (got {alpha})")
    if teacher.shape != (len(labels), NUM_CLASSES):
        raise ValueError(f"teacher probabilities have shape {teacher.shape}, expected {(len(labels), NUM_CLASSES)}")
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    teacher = teacher.astype(np.float32) / np.maximum(teacher.sum(axis=1, keepdims=True), 1e-12)
    return (alpha * teacher + (1.0 - alpha) * one_hot).astype(np.float32)


def teacher_path(name: str) -> Path:
    """A teacher named by path, or by the file name of a model shipped in the zoo."""
    from edgecifar.zoo import ZOO_DIR

    path = Path(name).expanduser()
    if path.is_file():
        return path
    if (ZOO_DIR / name).is_file():
        return ZOO_DIR / name
    raise EdgeCifarError(f"{name}: distillation teacher not found (a model file, or a file name in {ZOO_DIR})")


def teacher_probabilities(path: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The teacher file's probabilities for uint8 ``images``, averaged over each image and its mirror."""
    from edgecifar import runtime

    model = runtime.load(path, threads=1)
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        out.append((model.predict(x) + model.predict(x[:, :, ::-1])) / 2.0)
    return np.concatenate(out).astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_teacher(run_dir: Path, teacher: str, images: np.ndarray, data_fingerprint: str) -> tuple[np.ndarray, dict]:
    """Teacher probabilities for ``images``, from ``run_dir/teacher.npz`` when it matches, else computed and
    cached there. Returns the probabilities and a description (file, sha256, agreement) for metrics.json."""
    path = teacher_path(teacher)
    digest = _sha256(path)
    cache = run_dir / CACHE
    if cache.exists():
        with np.load(cache) as z:
            if str(z["sha256"]) == digest and str(z["data"]) == data_fingerprint and len(z["probs"]) == len(images):
                return z["probs"], {"teacher": path.name, "teacher_sha256": digest}
    probs = teacher_probabilities(path, images)
    with atomic_path(cache, suffix=".npz") as tmp:
        np.savez(tmp, probs=probs, sha256=digest, data=data_fingerprint)
    return probs, {"teacher": path.name, "teacher_sha256": digest}
