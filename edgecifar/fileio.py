"""Atomic writes: every output goes to a temporary name in the same folder, then is renamed.

A crash or an error therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    The temporary name keeps ``final``'s suffix (or ``suffix``) because some writers (Keras, TFLite)
    choose the format from it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix if suffix is not None else final.suffix,
                               dir=final.parent)
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


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove we can write in it; raise EdgeCifarError otherwise."""
    from edgecifar.errors import EdgeCifarError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as exc:
        raise EdgeCifarError(f"{path}: output folder is not writable ({exc.strerror or exc})") from None
    return path


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
