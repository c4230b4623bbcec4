"""Atomic writes: every output goes to a temporary name in the same folder, then is renamed.

A crash or an error therefore never leaves a half-written file under the final name. A process killed
mid-write (kill -9, power loss) leaves its temporary behind: :func:`is_temporary` tells folder scans to skip
such files, and :func:`remove_stale_temporaries` deletes them once no writer is alive in their folder (writers
hold a lock on it).
Output paths are checked before any work starts (:func:`check_writable_file`, :func:`check_writable_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from edgecifar.errors import EdgeCifarError

#: The name :func:`atomic_path` gives a temporary: ``.{final name}.{mkstemp's 8 random characters}{suffix}``,
#: e.g. ``.x_int8.tflite.yc38oavx.tflite``. Its one home: the writer and the scans both read it here.
_TEMPORARY = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}(?P<suffix>(?:\.[^.]+)*)")


def _temporary_prefix(final: Path) -> str:
    return f".{final.name}."


def temporary_of(path: str | os.PathLike) -> str | None:
    """The final file name a temporary of :func:`atomic_path` was to become, or None for any other name."""
    match = _TEMPORARY.fullmatch(Path(path).name)
    return match.group("final") if match else None


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named as :func:`atomic_path`'s temporaries are: a file still being written, or left
    by a killed writer; never a finished output."""
    return temporary_of(path) is not None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    The temporary name keeps ``final``'s suffix (or ``suffix``) because some writers (Keras, TFLite)
    choose the format from it. While the block runs, the writer holds a shared lock (``flock``) on the
    *folder*: the lock dies with the process, so :func:`remove_stale_temporaries` knows that temporaries found
    while nobody holds it belong to dead writers. The folder is locked, not the temporary, because writers
    lock their own files (HDF5 flocks the .h5 it creates, and refused to open one we held locked).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(final.parent, fcntl.LOCK_SH):
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(final),
                                   suffix=suffix if suffix is not None else final.suffix, dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            if tmp_path.exists():  # mkstemp makes 0600; give the file the mode a plain open() would
                os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, final)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def _folder_lock(folder: Path, operation: int) -> Iterator[bool]:
    """Hold ``flock(operation)`` on ``folder`` for the block; yields whether it is held. A filesystem that cannot
    lock folders (some network mounts) yields False for a non-blocking request and lets a writer go on unlocked."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, operation)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, finals: Callable[[str], bool]) -> list[Path]:
    """Delete the temporaries in ``folder`` of the final names ``finals`` accepts, when no writer is alive in
    ``folder``, and return them.

    Every :func:`atomic_path` holds a shared lock on its folder while it writes, and the kernel drops it when the
    process dies, however it dies. Taking the lock exclusively proves that no writer is inside: every temporary
    there is a dead writer's. While another writer is alive nothing is removed (the next call will), so a
    concurrent export's file is never touched, however long it takes (an age limit would delete a slow writer's
    file, or keep a fresh corpse)."""
    removed: list[Path] = []
    folder = Path(folder)
    with _folder_lock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
        if not alone:
            return removed
        try:
            entries = list(folder.iterdir())
        except OSError:
            return removed
        for path in entries:
            final = temporary_of(path)
            if final is None or not finals(final) or path.is_symlink() or not path.is_file():
                continue
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``final`` atomically."""
    return write_bytes(final, text.encode("utf-8"))


def write_json(final: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``final`` atomically."""
    return write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_table(markdown: str, csv_text: str, md_path: str | os.PathLike | None,
                csv_path: str | os.PathLike | None) -> None:
    """A summary table's outputs: ``markdown`` to ``md_path`` and ``csv_text`` to ``csv_path`` (each atomically,
    only when given), then ``markdown`` on stdout."""
    if md_path:
        write_text(md_path, markdown)
    if csv_path:
        write_text(csv_path, csv_text)
    print(markdown, end="")


def _jsonable(value: Any) -> Any:
    """Let numpy scalars and paths pass through json.dumps."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_writable_dir(path: str | os.PathLike, flag: str | None = None) -> Path:
    """Create ``path`` if needed and prove we can write in it; raise EdgeCifarError (naming ``flag`` when
    given) otherwise. Called before the work whose results go there, not after it."""
    path = Path(path)
    named = f"{flag} {path}" if flag else str(path)
    if path.exists() and not path.is_dir():
        raise EdgeCifarError(f"{named}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on Python 3.11
        raise EdgeCifarError(f"{named}: output folder is not writable ({_reason(exc)})") from None
    return path


def check_writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Prove, before any work, that an output file can be written at ``path`` as :func:`atomic_path` writes it:
    its folder made if needed, a temporary created there, and ``path`` no folder nor device (the atomic
    rename would replace ``/dev/null`` itself). One EdgeCifarError line naming ``flag`` and ``path`` if not."""
    path = Path(path)
    named = f"{flag} {path}"
    if path.is_dir():
        raise EdgeCifarError(f"{named}: is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise EdgeCifarError(f"{named}: not a regular file (a device or pipe would be replaced by the output)")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise EdgeCifarError(f"{named}: cannot make its folder: {parent} is not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test."):
            pass
    except (OSError, RuntimeError) as exc:
        raise EdgeCifarError(f"{named}: cannot write in {path.parent} ({_reason(exc)})") from None
    return path


def try_write(flag: str, path: str | os.PathLike, write: Callable[[Path], Any]) -> str | None:
    """``write(path)`` after the work is done: None if it worked, else the one line saying which output failed
    and why (a full disk), so the caller reports it beside what it already printed instead of a traceback."""
    try:
        write(Path(path))
    except OSError as exc:
        return f"{flag} {path}: not written ({_reason(exc)})"
    return None


def _reason(exc: BaseException) -> str:
    """An OSError's reason without its file name (the message names the file itself)."""
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP or isinstance(exc, RuntimeError):
        return "symlink loop"
    return getattr(exc, "strerror", None) or str(exc)


def sha256(path: str | os.PathLike) -> str:
    """A file's sha256 (hex), read in 1 MiB chunks: what a manifest records to name the very file it validated."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resolved(path: str | os.PathLike) -> Path:
    """``path`` resolved, or made absolute when it cannot be (a symlink loop raises, on some Pythons)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as a file that travels should record it: relative to the working directory when under it,
    else under ``~`` when in the home folder, else absolute. A shipped manifest then names
    ``~/edgecifar-runs/zoo/edge_nano/model.keras``, not one machine's user folder."""
    p = Path(path).absolute()
    for base, shown in ((Path.cwd(), None), (Path.home(), "~")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return str(rel) if shown is None else f"{shown}/{rel}"
    return str(p)
