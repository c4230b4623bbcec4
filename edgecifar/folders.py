"""Your own photos as a data set: a folder with one subfolder per class, as torchvision's ImageFolder reads it.

Layouts (the class of an image is the name of the class folder it lies in, at any depth below it)::

    photos/cat/*.jpg  photos/dog/*.png             every image is a training AND a test image
    photos/train/cat/...  photos/test/cat/...      train/ -> x_train, test/ -> x_test (else val/)
    photos/train/...  photos/val/...  photos/test/...   val/ -> x_val as well

Every split holds the same class folders; class names are sorted, so labels are the same on every machine.
The folder is untrusted: hidden files and folders are skipped, so are symlinks that lead out of it, only
regular files are decoded, and each image is decoded by :func:`edgecifar.images.load_image`, the code
``edgecifar predict`` runs (upright per EXIF, 8-bit RGB, alpha over white, center crop, BOX resize). An image
that cannot be read costs one warning line naming it, and is counted.

Images are decoded one at a time into one preallocated uint8 array (a photo is never kept at full size), in
split order, so each split is a slice of it (no copies). The array is cached as an .npz under
``$EDGECIFAR_CACHE/folders/`` (else ``~/.cache/edgecifar/folders/``), keyed by every file's relative path, size
and modification time and the output size: the second load of 50,000 photos reads one file. A cache that does
not match, or cannot be read, is ignored and rewritten (atomically).

Pillow and numpy only (no TensorFlow): the bench and the device runner can load a folder too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgecifar.data import Dataset
from edgecifar.errors import DataError
from edgecifar.fileio import atomic_path, resolved, try_write
from edgecifar.images import ImageError, load_image, photo_suffixes
from edgecifar.units import plural

#: Split folder names, in the order their images are stored (each split is one slice of the array).
SPLITS = ("train", "val", "test")
#: Where a split's images stand in when the folder has no such split folder: the first present is used.
TEST_FROM = ("test", "val", "train")
CACHE_VAR = "EDGECIFAR_CACHE"
#: Bumped when the decoding or the cache's layout changes, so old caches are rewritten.
CACHE_VERSION = 1
#: Folders that tools add beside the data, skipped as hidden ones are (macOS zips carry ``__MACOSX/``).
NOT_DATA = frozenset({"__MACOSX"})
#: Suffixes named when a folder holds no image at all (photo_suffixes() has some 60).
PREFERRED = frozenset({".jpg", ".jpeg", ".png", ".webp"})
#: Class names listed in a summary before "and N more".
NAMES_SHOWN = 10

Warn = Callable[[str], None]
#: The one class of a folder of loose images (:func:`load` with ``unlabelled=True``): its images have no labels.
UNLABELLED = "(unlabelled)"


class NoClassFolders(DataError):
    """A folder with no class subfolders: no labels. Export can still calibrate on its images (``unlabelled``)."""


@dataclass(frozen=True)
class ImageFolder(Dataset):
    """An image folder loaded as a :class:`~edgecifar.data.Dataset` (``label_names`` = the class folders)."""

    split_counts: tuple[tuple[str, int], ...] = ()   # images read per split folder; () for a folder without
    unreadable: int = 0                              # image files that could not be decoded (each said)
    outside: int = 0                                 # symlinks skipped because they lead out of the folder
    size: tuple[int, int] = (32, 32)                 # (height, width) every image was resized to

    def summary(self) -> str:
        """What was read and what stands in for what, in one line."""
        names = ", ".join(self.label_names[:NAMES_SHOWN])
        if len(self.label_names) > NAMES_SHOWN:
            names += f" and {len(self.label_names) - NAMES_SHOWN} more"
        height, width = self.size
        parts = [f"image folder {self.source}: {len(self.label_names)} classes ({names}), {width}x{height} pixels"]
        parts.append(roles_said(dict(self.split_counts), len(self.y_train)))
        if self.unreadable:
            parts.append(f"{plural(self.unreadable, 'unreadable image')} skipped")
        if self.outside:
            parts.append(f"{plural(self.outside, 'symlink')} out of the folder skipped")
        return "; ".join(parts)


def roles_said(counts: dict[str, int], images: int) -> str:
    """The images per split folder and which split stands in for a missing one (the summary's words for
    :func:`roles`); ``images``: how many a folder without split folders holds."""
    total = sum(counts.values())
    if not counts:
        return (f"no {' '.join(s + '/' for s in SPLITS)} folders: all {images:,} images are both the training "
                "and the test images")
    said = ", ".join(f"{name}/ {n:,}" for name, n in counts.items()) + " images"
    train, test = roles(tuple(counts))
    if train != ("train",):
        said += f"; no train/: all {total:,} images are the training images"
    if test != "test":
        said += f"; no test/: the {test}/ images are the test images"
    return said


def roles(present: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """(the splits that make the training images, the split that makes the test images) from the split folders
    present; () and None for a folder without split folders (all images are both)."""
    if not present:
        return (), None
    train = ("train",) if "train" in present else present
    return train, next(name for name in TEST_FROM if name in present)


# --------------------------------------------------------------------------- scanning

@dataclass(frozen=True)
class Listing:
    """What a scan found: image files (relative to ``root``) in storage order (split, class, path), each file's
    label, and where each split's files end."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: np.ndarray
    splits: tuple[str, ...]           # split folders present, in SPLITS order; () without split folders
    ends: tuple[int, ...]             # files[ends[i-1]:ends[i]] are split i's (one end without split folders)
    outside: tuple[Path, ...]         # symlinks skipped because they lead out of the folder


def _visible(folder: Path, root_real: Path, outside: list[Path], warn: Warn) -> list[Path]:
    """The entries of ``folder`` a scan may use, sorted by name: not hidden (nor an unfinished write's temporary,
    which is hidden), not in :data:`NOT_DATA`, and no symlink leading out of the root (those are appended to
    ``outside``)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        warn(_one_line(f"{folder}: cannot list this folder ({exc.strerror or exc}): skipped"))
        return []
    kept = []
    for entry in entries:
        if entry.name.startswith(".") or entry.name in NOT_DATA:
            continue
        if entry.is_symlink() and not resolved(entry).is_relative_to(root_real):
            outside.append(entry)
            continue
        kept.append(entry)
    return kept


def _subfolders(folder: Path, root_real: Path, outside: list[Path], warn: Warn) -> dict[str, Path]:
    return {p.name: p for p in _visible(folder, root_real, outside, warn) if p.is_dir()}


def _image_files(folder: Path, root_real: Path, suffixes: frozenset[str], outside: list[Path], warn: Warn,
                 above: frozenset[Path]) -> list[Path]:
    """Every file below ``folder`` (at any depth) with an image suffix, sorted. Walked with a stack, not
    recursion (a hostile folder may nest deeper than Python recurses), each real folder once (a symlink back
    up would loop) and never the real folders ``above`` it (the root, the split folders: a symlink to them
    would file every class under this one). Non-regular files are kept: :func:`load_image` refuses each one
    in a line."""
    found, seen, stack = [], set(above), [folder]
    while stack:
        current = stack.pop()
        real = resolved(current)
        if real in seen:
            continue
        seen.add(real)
        for entry in _visible(current, root_real, outside, warn):
            if entry.is_dir():
                stack.append(entry)
            elif entry.suffix.lower() in suffixes:
                found.append(entry)
    return sorted(found, key=lambda p: p.parts)


def _one_line(text: str) -> str:
    """File names may hold newlines: every line said about them is made one line."""
    return " ".join(text.split())


def _layout(root: Path, top: dict[str, Path]) -> list[tuple[str, Path]]:
    """[(split name, its folder)] in SPLITS order, or [("", root)] when ``root`` holds class folders directly;
    one DataError line for a folder that mixes split folders with class folders."""
    splits = [name for name in SPLITS if name in top]
    if not splits:
        return [("", root)]
    others = sorted(set(top) - set(SPLITS))
    if others:
        raise DataError(
            f"{root}: mixes split folders ({', '.join(s + '/' for s in splits)}) with other folders "
            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); put every class folder inside "
            f"{'/, '.join(SPLITS)}/")
    return [(name, top[name]) for name in splits]


def _same_classes(root: Path, per_split: dict[str, dict[str, Path]]) -> None:
    """Refuse, in one line, splits whose class folders differ (a label would mean different things)."""
    union = set().union(*map(set, per_split.values()))
    gaps = [f"{split}/ lacks {', '.join(sorted(union - set(classes)))}"
            for split, classes in per_split.items() if union - set(classes)]
    if gaps:
        raise DataError(f"{root}: the splits hold different class folders ({'; '.join(gaps)}); every "
                        "split needs the same class folders")


def _printable(root: Path, per_split: dict[str, dict[str, Path]]) -> None:
    """Refuse a class folder whose name cannot be printed on one line (it becomes a label name, printed)."""
    for classes in per_split.values():
        for name in classes:
            if not name.isprintable():
                raise DataError(f"{root}: class folder {name!r} has unprintable characters in its "
                                "name (it names a class in every output); rename it")


def scan(path: str | os.PathLike, warn: Warn) -> Listing:
    """List an image folder's classes and image files, or raise one DataError line naming the folder: no class
    subfolders, no images, fewer than 2 classes, split folders mixed with others, splits that differ."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    root_real, outside, suffixes = resolved(root), [], photo_suffixes()
    top = _subfolders(root, root_real, outside, warn)
    layout = _layout(root, top)
    per_split = {name: _subfolders(folder, root_real, outside, warn) if name else top for name, folder in layout}
    if not any(per_split.values()):
        loose = sum(1 for p in _visible(root, root_real, [], warn) if p.suffix.lower() in suffixes)
        hint = f" (it holds {plural(loose, 'image file')} directly)" if loose else ""
        raise NoClassFolders(f"{root}: no class subfolders{hint} and no CIFAR-10 batches; an image folder "
                        "holds one subfolder of images per class, named after the class")
    _same_classes(root, per_split)
    _printable(root, per_split)
    above = frozenset({root_real, *(resolved(folder) for name, folder in layout if name)})
    found = {(split, name): _image_files(folder, root_real, suffixes, outside, warn, above)
             for split, classes in per_split.items() for name, folder in classes.items()}
    classes = sorted({name for (_, name), files in found.items() if files})
    for name in sorted(set().union(*map(set, per_split.values())) - set(classes)):
        warn(_one_line(f"{root}: class folder {name!r} holds no image files: not a class"))
    if not classes:
        raise DataError(f"{root}: no image files in its class folders (looked for "
                        f"{', '.join(sorted(s for s in suffixes if s in PREFERRED))}...)")
    if len(classes) < 2:
        raise DataError(f"{root}: only one class folder with images ({classes[0]}); a classifier needs "
                        "at least 2 classes, one subfolder each")
    files, labels, ends = [], [], []
    for split in per_split:
        for label, name in enumerate(classes):
            batch = found.get((split, name), [])
            files += [p.relative_to(root) for p in batch]
            labels += [label] * len(batch)
        ends.append(len(files))
    return Listing(root, tuple(classes), tuple(files), np.asarray(labels, dtype=np.int64),
                   tuple(s for s in per_split if s), tuple(ends), tuple(outside))


def scan_unlabelled(path: str | os.PathLike, warn: Warn) -> Listing:
    """Every image file in a folder of loose images (at any depth, as a class folder is read), as the one class
    :data:`UNLABELLED`; one DataError line when it holds none."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    root_real, outside, suffixes = resolved(root), [], photo_suffixes()
    files = _image_files(root, root_real, suffixes, outside, warn, frozenset())
    if not files:
        raise DataError(f"{root}: no image files (looked for {', '.join(sorted(s for s in suffixes if s in PREFERRED))}...)")
    return Listing(root, (UNLABELLED,), tuple(p.relative_to(root) for p in files), np.zeros(len(files), np.int64),
                   (), (len(files),), tuple(outside))


# --------------------------------------------------------------------------- decoding and the cache

def cache_dir() -> Path:
    """``$EDGECIFAR_CACHE/folders``, else ``$XDG_CACHE_HOME/edgecifar/folders`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_VAR):
        return Path(os.environ[CACHE_VAR]) / "folders"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecifar" / "folders"


def cache_path(listing: Listing, size: tuple[int, int]) -> Path:
    """One cache file per folder and size: a changed folder rewrites its file instead of adding one."""
    digest = hashlib.sha256(os.fsencode(resolved(listing.root))).hexdigest()[:16]
    return cache_dir() / f"{digest}-{size[0]}x{size[1]}.npz"


def cache_key(listing: Listing, size: tuple[int, int]) -> str:
    """A digest of what the pixels depend on: each file's relative path, size and modification time (a stat,
    not a read), the output size, the decoder (Pillow's version) and this cache's version."""
    from PIL import __version__ as pillow

    h = hashlib.sha256(json.dumps([CACHE_VERSION, pillow, list(size), listing.classes]).encode())
    for rel in listing.files:
        try:
            st = os.stat(listing.root / rel)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "-"
        h.update(os.fsencode(rel) + b"\0" + stamp.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Decoded:
    """The decoded images in storage order, their labels, where each split ends, and the unreadable files: each
    one's path relative to the folder and what its line says after the path (so a cached load names the file
    as the folder is given this time)."""

    x: np.ndarray
    y: np.ndarray
    ends: tuple[int, ...]
    unreadable: tuple[tuple[str, str], ...]

    def lines(self, root: Path) -> list[str]:
        return [_one_line(f"{root / rel}{why}") for rel, why in self.unreadable]


def decode(listing: Listing, size: tuple[int, int], warn: Warn) -> Decoded:
    """Decode every file into one preallocated array, one image at a time (never all photos at full size);
    an unreadable file is one warning line (its ImageError: the file and why) and is left out."""
    height, width = size
    x = np.empty((len(listing.files), height, width, 3), np.uint8)
    y = np.empty(len(listing.files), np.int64)
    kept, ends, unreadable, start = 0, [], [], 0
    for end in listing.ends:
        for i in range(start, end):
            path = listing.root / listing.files[i]
            try:
                x[kept] = load_image(path, size, warn=lambda note: warn(_one_line(note)))
            except ImageError as exc:
                line = str(exc)
                unreadable.append((str(listing.files[i]), line.removeprefix(_one_line(str(path)))))
                warn(line)
                continue
            y[kept] = listing.labels[i]
            kept += 1
        ends.append(kept)
        start = end
    return Decoded(x[:kept], y[:kept], tuple(ends), tuple(unreadable))


def read_cache(path: Path, key: str, listing: Listing, size: tuple[int, int]) -> Decoded | None:
    """The cached arrays when ``path`` holds this key and arrays of the listing's shapes, else None. Never
    unpickles; any failure (no file, a truncated or foreign file, a .npy) means: decode again."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            x, y, ends = z["x"], z["y"], tuple(int(e) for e in z["ends"])
            unreadable = tuple(zip(map(str, z["unreadable_files"]), map(str, z["unreadable_why"])))
    except Exception:  # np.load raises many types on foreign files; all mean the same here
        return None
    well_formed = (x.dtype == np.uint8 and x.shape[1:] == (*size, 3) and y.dtype == np.int64
                   and y.shape == (len(x),) and len(x) <= len(listing.files)
                   and (len(y) == 0 or 0 <= y.min() <= y.max() < len(listing.classes))
                   and len(ends) == len(listing.ends) and list(ends) == sorted(ends) and ends[-1] == len(x))
    return Decoded(x, y, ends, unreadable) if well_formed else None


def write_cache(path: Path, key: str, decoded: Decoded) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, key=np.array(key), x=decoded.x, y=decoded.y, ends=np.array(decoded.ends, np.int64),
                 unreadable_files=np.array([rel for rel, _ in decoded.unreadable], dtype=str),
                 unreadable_why=np.array([why for _, why in decoded.unreadable], dtype=str))


def _stderr(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load(path: str | os.PathLike, size: int | tuple[int, int] = (32, 32), warn: Warn | None = None,
         note: Warn | None = None, unlabelled: bool = False) -> ImageFolder:
    """Load an image folder (see the module doc) at ``size`` = (height, width). ``warn`` receives one line per
    unreadable image or unlistable folder and one for the symlinks not followed (default: stderr), also when
    the images come from the cache; ``note`` the line said before a long decode (default: stderr).
    ``unlabelled``: a folder of loose images, its one class :data:`UNLABELLED` (images to calibrate on)."""
    warn, note = warn or _stderr, note or _note
    height, width = size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise DataError(f"image size {height}x{width}: both sides must be at least 1 pixel")
    listing = (scan_unlabelled if unlabelled else scan)(path, warn)
    if listing.outside:
        warn(not_followed(listing))
    return assemble(listing, cached_decode(listing, size, warn, note), size)


def not_followed(listing: Listing) -> str:
    """The one line for the symlinks that lead out of the folder, naming the first."""
    n = len(listing.outside)
    lead, more = ("leads", "") if n == 1 else ("lead", ", ...")
    return _one_line(f"{listing.root}: {plural(n, 'symlink')} {lead} out of the folder, not followed "
                     f"({listing.outside[0]}{more})")


def cached_decode(listing: Listing, size: tuple[int, int], warn: Warn, note: Warn) -> Decoded:
    """The decoded images from the cache when its key matches (its unreadable lines said again), else decoded
    now and cached; a cache that cannot be written costs a warning, not the load."""
    key, cached_at = cache_key(listing, size), cache_path(listing, size)
    decoded = read_cache(cached_at, key, listing, size)
    if decoded is not None:
        for line in decoded.lines(listing.root):
            warn(line)
        return decoded
    note(f"{listing.root}: decoding {len(listing.files):,} images to {size[1]}x{size[0]} "
         f"(cached in {cached_at.parent} for the next run)")
    decoded = decode(listing, size, warn)
    problem = try_write("cache", cached_at, lambda p: write_cache(p, key, decoded))
    if problem:
        warn(problem)
    return decoded


def assemble(listing: Listing, decoded: Decoded, size: tuple[int, int]) -> ImageFolder:
    """The data set's splits as slices of the decoded array (views, no copies), as :func:`roles` assigns them."""
    bounds = dict(zip(listing.splits, zip((0, *decoded.ends), decoded.ends)))
    whole = (0, len(decoded.x))
    train, test = roles(listing.splits)
    train_at = bounds["train"] if train == ("train",) else whole
    test_at = bounds[test] if test else whole
    val_at = bounds.get("val", (0, 0))

    def part(at: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return decoded.x[at[0]:at[1]], decoded.y[at[0]:at[1]]

    (x_train, y_train), (x_test, y_test), (x_val, y_val) = part(train_at), part(test_at), part(val_at)
    return ImageFolder(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, source=str(listing.root),
                       label_names=listing.classes, train_batches=train or (".",), x_val=x_val, y_val=y_val,
                       split_counts=tuple((name, hi - lo) for name, (lo, hi) in bounds.items()),
                       unreadable=len(decoded.unreadable), outside=len(listing.outside), size=size)
