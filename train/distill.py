"""Knowledge distillation from a cached teacher: a small model learns from a big one's probabilities.

What: each training image's target becomes ``alpha * teacher + (1 - alpha) * one_hot(label)``, where
``teacher`` is a trained model's class probabilities for that image, averaged with its mirror's.
Why: a teacher's probabilities say which wrong classes are plausible (a cat that looks like a dog),
which a one-hot label cannot; small models gain most from it (Hinton, Vinyals & Dean 2015,
"Distilling the Knowledge in a Neural Network"; MLPerf Tiny's training code distils its small models).
How cheaply: the teacher is any exported file (a ``.tflite`` of the zoo, run in LiteRT), applied once
to the un-augmented training images before training, and cached in the run folder, so students never
pay a teacher forward pass per step. The cost of that shortcut: a flipped or shifted training image
keeps its original image's targets, and the students memorise them (93% training accuracy, 87-88% validation).

Consistent teaching (``distill_views`` = K > 0): the teacher must see the view the student sees (Beyer et al. 2022,
"Knowledge distillation: a good teacher is patient and consistent": function matching). A teacher pass per step
is too slow on a CPU, so before training the teacher labels K fixed views of every image (view 0 the clean image,
the others flip + 2-pixel translate as train/augment.py's flip_translate, each a pure function of the run seed and
the view index), one pass per view and no mirror averaging; each epoch shows every image as one of its views with
that view's targets (:class:`TeacherViews`, train/pipeline.py). Only the views' placements are kept (a flip bit
and a shift per image and view): the pixels are redrawn per batch, as augmentation is, instead of K copies of the
training set in memory.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecifar import NUM_CLASSES
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path

CACHE = "teacher.npz"
#: The views' translation range in pixels (flip_translate's ``pad``), and the augmentation the views stand for: a
#: views run shows them in place of the recipe's per-batch draws, so its recipe must name this augmentation.
VIEW_PAD = 2
VIEW_AUGMENT = "flip_translate"
# Keys the views' draws apart from the epoch shuffles' (seed, epoch) keys (train/pipeline.py) and the alternating
# flips' stream (train/augment.py).
_VIEW_STREAM = 2**31 - 2


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


def view_placement(n: int, seed: int, view: int) -> tuple[np.ndarray, np.ndarray]:
    """(flips ``[n]`` bool, whole-pixel shifts ``[n, 2]`` (dx, dy) in [-VIEW_PAD, VIEW_PAD]) of view ``view`` of ``n``
    images: a pure function of (run seed, view), so the teacher, every epoch and a resumed run see the same view.
    View 0 is the clean image."""
    if view == 0:
        return np.zeros(n, bool), np.zeros((n, 2), np.int8)
    rng = np.random.default_rng([seed, _VIEW_STREAM, view])
    return rng.random(n) < 0.5, rng.integers(-VIEW_PAD, VIEW_PAD + 1, size=(n, 2)).astype(np.int8)


def show_views(images, flips, shifts):
    """``images [B, H, W, C]`` (float, tf) mirrored where ``flips [B]``, then moved by ``shifts [B, 2]`` whole pixels
    with reflect fill: flip_translate's two steps (train/augment.py) with the views' draws instead of fresh ones."""
    import tensorflow as tf

    from edgecifar.train.augment import mirror, transform

    n = tf.shape(images)[0]
    dx, dy = tf.unstack(tf.cast(shifts, tf.float32), axis=1)
    one, zero = tf.ones([n]), tf.zeros([n])
    moves = tf.stack([one, zero, dx, zero, one, dy, zero, zero], axis=1)  # output -> input coordinates
    return transform(mirror(images, flips), moves, "NEAREST")


def render_views(images: np.ndarray, flips: np.ndarray, shifts: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """uint8 ``images`` as the views ``flips``/``shifts`` show them (uint8: nearest sampling moves whole pixels)."""
    out = [np.asarray(show_views(images[i:i + chunk].astype(np.float32), flips[i:i + chunk], shifts[i:i + chunk]))
           for i in range(0, len(images), chunk)]
    return np.concatenate(out).astype(np.uint8) if out else images.copy()


def view_probabilities(path: Path, images: np.ndarray, seed: int, views: int, batch: int = 256) -> np.ndarray:
    """The teacher file's probabilities ``[views, N, classes]`` for each view of uint8 ``images``: one pass per
    view, no mirror averaging (the view is what the student sees)."""
    from edgecifar import runtime

    model = runtime.load(path, threads=1)
    out = []
    for v in range(views):
        shown = render_views(images, *view_placement(len(images), seed, v))
        out.append(np.concatenate([model.predict(shown[i:i + batch]) for i in range(0, len(shown), batch)]))
    return np.stack(out).astype(np.float32)


@dataclass(frozen=True)
class TeacherViews:
    """Each training image's K views (placements) and the targets the teacher gave each view; an epoch shows image
    ``i`` as view ``(epoch + offsets[i]) % K``, so every image cycles through all its views in K epochs."""

    flips: np.ndarray      # [K, N] bool
    shifts: np.ndarray     # [K, N, 2] int8
    targets: np.ndarray    # [K, N, classes] float32
    offsets: np.ndarray    # [N] int

    @classmethod
    def build(cls, labels: np.ndarray, probs: np.ndarray, alpha: float, seed: int) -> TeacherViews:
        """The views of run ``seed`` with targets mixed from ``probs [K, N, classes]`` as :func:`soft_targets`."""
        views, n = probs.shape[:2]
        placed = [view_placement(n, seed, v) for v in range(views)]
        offsets = np.random.default_rng([seed, _VIEW_STREAM]).integers(0, views, n)
        return cls(np.stack([f for f, _ in placed]), np.stack([s for _, s in placed]),
                   np.stack([soft_targets(labels, p, alpha) for p in probs]), offsets)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(targets ``[N, classes]``, flips ``[N]``, shifts ``[N, 2]``) of the view each image shows in ``epoch``."""
        views, n = self.flips.shape
        shown, rows = (epoch + self.offsets) % views, np.arange(n)
        return self.targets[shown, rows], self.flips[shown, rows], self.shifts[shown, rows]


def _cache_key(digest: str, data_fingerprint: str, n: int, views: int, seed: int) -> dict:
    """What a cached teacher.npz must match to be reused. The clean images' probabilities (no views) do not depend
    on the seed, so seed is 0 there: runs of several seeds could share them."""
    return {"sha256": digest, "data": data_fingerprint, "images": n, "views": views, "seed": seed if views else 0}


def _cached_key(z) -> dict:
    """The key a teacher.npz was written under (files from before views: no views, seed 0)."""
    return {"sha256": str(z["sha256"]), "data": str(z["data"]), "images": int(z["probs"].shape[-2]),
            "views": int(z["views"]) if "views" in z else 0, "seed": int(z["seed"]) if "seed" in z else 0}


def cached_teacher(run_dir: Path, teacher: str, images: np.ndarray, data_fingerprint: str, views: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, dict]:
    """Teacher probabilities for ``images`` (``[N, classes]``, mirror-averaged; with ``views`` > 0 ``[views, N,
    classes]``, one per view of run ``seed``), from ``run_dir/teacher.npz`` when its key (teacher sha256, data,
    views, seed) matches, else computed and cached there. Returns the probabilities and a description (file,
    sha256, views, the labelling's seconds when computed now) for metrics.json."""
    path = teacher_path(teacher)
    digest = _sha256(path)
    key = _cache_key(digest, data_fingerprint, len(images), views, seed)
    info = {"teacher": path.name, "teacher_sha256": digest, **({"views": views} if views else {})}
    cache = run_dir / CACHE
    if cache.exists():
        try:
            with np.load(cache) as z:
                if _cached_key(z) == key:
                    return z["probs"], info
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # not a cache this code wrote (the write is atomic): computed afresh and replaced below
    start = time.perf_counter()
    probs = view_probabilities(path, images, seed, views) if views else teacher_probabilities(path, images)
    info["teacher_seconds"] = round(time.perf_counter() - start, 1)
    with atomic_path(cache, suffix=".npz") as tmp:
        np.savez(tmp, probs=probs, **{k: v for k, v in key.items() if k != "images"})
    return probs, info
