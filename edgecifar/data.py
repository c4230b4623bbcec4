"""Load CIFAR-10 from its standard "python version" distribution, and split it reproducibly.

Reads ``cifar-10-python.tar.gz`` or an unpacked ``cifar-10-batches-py/`` folder. Tolerates partial
copies (a missing ``data_batch_N``, a short ``test_batch``) and says how many images it read. Every
defect in the files becomes one ``DataError`` line naming the file, never a traceback. Any other folder is
read as your own photos, one subfolder per class (:mod:`edgecifar.folders`), into the same :class:`Dataset`
fields.

The batches are pickles, and a pickle can name any function to call: an archive from ``--data``,
``$EDGECIFAR_DATA`` or the Keras cache is untrusted (its MD5 is checked only on download), so it is read
with :class:`BatchUnpickler`, which rebuilds dicts, lists, bytes, strings, numbers and plain numpy arrays
and refuses every other global before anything runs.

Pure numpy: no TensorFlow, so the bench and the device runner can use it too.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgecifar import INPUT_SHAPE, LABELS, NUM_CLASSES
from edgecifar.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
ENV_VAR = "EDGECIFAR_DATA"
OFFLINE_VAR = "EDGECIFAR_OFFLINE"  # set to 1 to never try the download (tests, air-gapped machines)
IMAGE_BYTES = 32 * 32 * 3
_BATCH_RE = re.compile(r"(?:^|/)(data_batch_\d+|test_batch|batches\.meta)$")


def _no_images() -> np.ndarray:
    return np.zeros((0, *INPUT_SHAPE), np.uint8)


def _no_labels() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 NHWC and int64 labels per split, with where they came from: what ``--data`` loads
    (CIFAR-10 here, an image folder in :mod:`edgecifar.folders`). ``x_val``/``y_val`` hold a validation split
    the data itself names (an image folder's ``val/``), else nothing: callers then hold one out of the
    training images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    label_names: tuple[str, ...] = LABELS
    train_batches: tuple[str, ...] = field(default=())
    x_val: np.ndarray = field(default_factory=_no_images)
    y_val: np.ndarray = field(default_factory=_no_labels)

    @property
    def fingerprint(self) -> str:
        """A short hash of every pixel and label: two runs on the same data share it (an empty validation
        split adds nothing, so CIFAR-10's fingerprint is what it was before splits had one)."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test, self.x_val, self.y_val):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        """One line naming the source and the images of each split."""
        raise NotImplementedError


@dataclass(frozen=True)
class Cifar10(Dataset):
    """CIFAR-10 as uint8 NHWC images and int64 labels, with where it came from."""

    def summary(self) -> str:
        return (f"CIFAR-10 from {self.source}: {len(self.x_train):,} training images "
                f"({', '.join(self.train_batches)}), {len(self.x_test):,} test images")


# --------------------------------------------------------------------------- locating the data

def default_cache_dir() -> Path:
    """Keras' dataset cache, where ``keras.datasets.cifar10`` would have put its copy."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def candidate_paths(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Where to look, in order: ``--data``, ``$EDGECIFAR_DATA``, Keras' cache."""
    paths: list[Path] = []
    if explicit:
        return [Path(explicit)]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR])]
    cache = default_cache_dir()
    paths += [cache / ARCHIVE_NAME, cache / FOLDER_NAME, cache / "cifar-10-batches-py.tar.gz"]
    return paths


def locate(explicit: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Return the first existing data path, downloading the official archive as a last resort.

    An explicit path (``--data`` or ``$EDGECIFAR_DATA``) must exist: it is never silently replaced.
    """
    candidates = candidate_paths(explicit)
    if explicit or os.environ.get(ENV_VAR):
        path = candidates[0]
        if not path.exists():
            how = "--data" if explicit else f"${ENV_VAR}"
            raise DataError(f"{path}: no CIFAR-10 data there (given by {how})")
        return path
    for path in candidates:
        if path.exists():
            return path
    if download is None:
        download = os.environ.get(OFFLINE_VAR, "") in ("", "0")
    looked = ", ".join(str(p) for p in candidates)
    if download:
        try:
            return fetch(default_cache_dir() / ARCHIVE_NAME)
        except DataError as exc:
            raise DataError(f"no CIFAR-10 data found (looked in {looked}; download failed: {exc}); "
                            f"pass --data PATH or set {ENV_VAR} to a {ARCHIVE_NAME} or {FOLDER_NAME}/") from None
    raise DataError(f"no CIFAR-10 data found (looked in {looked}); "
                    f"pass --data PATH or set {ENV_VAR} to a {ARCHIVE_NAME} or {FOLDER_NAME}/")


def fetch(dest: Path, url: str = URL, md5: str = MD5, timeout: float = 30.0) -> Path:
    """Download the official archive to ``dest`` and check its MD5 before renaming it into place."""
    from edgecifar.fileio import atomic_path

    try:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as resp:
            digest = hashlib.md5()
            with open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != md5:
                raise DataError(f"{url}: MD5 {digest.hexdigest()} does not match the official {md5}")
    except OSError as exc:
        raise DataError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    return dest


# --------------------------------------------------------------------------- reading batches

class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global that CIFAR-10 batches never hold."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes (``encode(text, "latin1")``), and only so."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ForbiddenGlobal("_codecs", f"encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin-1")


def _empty_bytes(*args) -> bytes:
    """``bytes()`` as pickle protocol 2 writes an empty bytes object, and only so."""
    if args:
        raise ForbiddenGlobal("builtins", f"bytes with {len(args)} argument(s)")
    return b""


def _plain_dtype(*args) -> np.dtype:
    """``numpy.dtype`` for the arrays a batch holds: object dtypes (which carry arbitrary Python objects) refused."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise ForbiddenGlobal("numpy", f"dtype({dtype.str}): an object array")
    return dtype


#: The only globals a batch may name, and what each resolves to: numpy's array reconstructor (its module is
#: ``numpy.core`` in the official files, ``numpy._core`` from numpy 2) with the array and dtype types, and
#: the two ways protocol 2 pickles written by Python 3 spell bytes (each admitting that one use only).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that admits only :data:`SAFE_GLOBALS`: every other global (``os.system``, ``builtins.eval``,
    a class of any module) raises :class:`ForbiddenGlobal` before it is looked up, so nothing in the file runs."""

    def find_class(self, module: str, name: str):
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent IDs are not allowed")


def safe_unpickle(raw: bytes, name: str, what: str = "CIFAR-10 pickle"):
    """Unpickle one member with :class:`BatchUnpickler`; every failure is one DataError naming ``name``."""
    try:
        return BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except ForbiddenGlobal as exc:
        raise DataError(f"{name}: refused: the pickle calls {exc.qualified}, which a {what} never holds (only "
                        "dicts, lists, bytes, strings, numbers and numpy arrays are read; nothing was run)") from None
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DataError(f"{name}: not a readable {what} ({type(exc).__name__}: {exc})") from None


def _decode_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch and return (uint8 NHWC images, int64 labels), validating everything."""
    batch = safe_unpickle(raw, name)
    if not isinstance(batch, dict):
        raise DataError(f"{name}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{name}: missing 'data' or 'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.size == 0 or labels.size == 0:
        raise DataError(f"{name}: empty batch (no images)")
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DataError(f"{name}: data has shape {data.shape}, expected (N, {IMAGE_BYTES})")
    if data.dtype != np.uint8:
        raise DataError(f"{name}: data has dtype {data.dtype}, expected uint8")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{name}: {labels.shape} labels for {len(data)} images")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{name}: labels out of range 0-9 (found {labels.min()}..{labels.max()})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _read_members(path: Path) -> dict[str, bytes]:
    """Map batch file names (``data_batch_1``, ``test_batch``...) to their raw bytes."""
    members: dict[str, bytes] = {}
    if path.is_dir():
        folder = path / FOLDER_NAME if (path / FOLDER_NAME).is_dir() else path
        for f in sorted(folder.iterdir()):
            if _BATCH_RE.search(f.name):
                members[f.name] = f.read_bytes()
        return members
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                m = _BATCH_RE.search(info.name)
                if m and info.isfile():
                    fh = tar.extractfile(info)
                    members[m.group(1)] = fh.read() if fh else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from None
    return members


def _batch_order(name: str) -> tuple[int, int]:
    m = re.search(r"data_batch_(\d+)", name)
    return (0, int(m.group(1))) if m else (1, 0)


def load(path: str | os.PathLike | None = None, download: bool | None = None, size: tuple[int, int] = (32, 32),
         warn: Callable[[str], None] | None = None) -> Dataset:
    """Load ``path`` (or the usual places, see :func:`locate`): CIFAR-10 (always 32x32), or a folder of class
    folders (:mod:`edgecifar.folders`) resized to ``size`` = (height, width), its unreadable images said to
    ``warn`` (default: stderr)."""
    path = locate(path, download)
    if is_image_folder(path):
        from edgecifar import folders

        return folders.load(path, size, warn)
    return load_cifar(path)


def is_image_folder(path: Path) -> bool:
    """Whether ``path`` is a folder that is not a CIFAR-10 copy (no ``cifar-10-batches-py/``, no batch files):
    then it is read as a folder of class folders."""
    if not path.is_dir() or (path / FOLDER_NAME).is_dir():
        return False
    try:
        return not any(_BATCH_RE.search(entry.name) for entry in path.iterdir())
    except OSError:
        return True  # the image folder's scan says why it cannot be listed, in one line


def load_cifar(path: Path) -> Cifar10:
    """CIFAR-10 from an existing archive or ``cifar-10-batches-py`` folder."""
    members = _read_members(path)
    train_names = sorted((n for n in members if n.startswith("data_batch_")), key=_batch_order)
    if not train_names:
        raise DataError(f"{path}: no data_batch_N files inside (found: {sorted(members) or 'nothing'})")
    if "test_batch" not in members:
        raise DataError(f"{path}: no test_batch inside")
    xs, ys = zip(*(_decode_batch(members[n], f"{path}:{n}") for n in train_names))
    x_test, y_test = _decode_batch(members["test_batch"], f"{path}:test_batch")
    names = LABELS
    if "batches.meta" in members:
        meta = safe_unpickle(members["batches.meta"], f"{path}:batches.meta", "CIFAR-10 meta pickle")
        try:
            raw = meta.get(b"label_names") or meta.get("label_names")
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
        except Exception:
            raise DataError(f"{path}:batches.meta: not a readable CIFAR-10 meta pickle") from None
        if len(names) != NUM_CLASSES:
            raise DataError(f"{path}:batches.meta: {len(names)} label names, expected {NUM_CLASSES}")
    return Cifar10(np.concatenate(xs), np.concatenate(ys), x_test, y_test, str(path), names,
                   tuple(train_names))


# --------------------------------------------------------------------------- splits and subsets

def stratified_split(labels: np.ndarray, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation) with ``n_val`` validation items, classes in proportion.

    Deterministic for a given ``seed``; both index arrays are sorted. The validation split always
    comes from the training images: early stopping on the test set is a leak.
    """
    labels = np.asarray(labels)
    if not 0 <= n_val <= len(labels):
        raise ValueError(f"n_val={n_val} outside 0..{len(labels)}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = _largest_remainder(counts, n_val)
    val = []
    for cls, k in zip(classes, quota):
        idx = np.flatnonzero(labels == cls)
        val.append(rng.permutation(idx)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def _largest_remainder(counts: np.ndarray, total: int) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``counts`` (Hamilton's method, exact sum)."""
    exact = counts * total / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    short = total - quota.sum()
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:short]] += 1
    return quota


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` items with classes in proportion (calibration sets, quick evaluations)."""
    return stratified_split(labels, min(n, len(labels)), seed)[1]


def class_counts(labels: Iterable[int]) -> list[int]:
    return np.bincount(np.asarray(list(labels), dtype=np.int64), minlength=NUM_CLASSES).tolist()
