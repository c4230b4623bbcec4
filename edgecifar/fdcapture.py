"""What native code writes to the process's file descriptors, caught for one block.

TensorFlow, the TFLite and ONNX converters, LiteRT, onnxruntime and TFLite Micro print from C++ straight to
file descriptors 1 and 2, past ``sys.stdout`` and ``sys.stderr``. :class:`Captured` points descriptors at one
temporary file for a block and keeps what was written; each caller decides what to drop, parse or re-emit
(``export.job.quiet`` drops it, ``errors.native_stderr_filtered`` filters it, ``micro`` reads its errors).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import tempfile


class Captured:
    """A context manager: file descriptors ``fds`` (default 1 and 2) all write to one temporary file inside
    the block; ``text`` holds what was written once the block has ended, also when it raised.

    Python's and C's stdio buffers are flushed on the way in and on the way out, so nothing printed before
    lands in ``text`` and nothing printed inside leaks out later. A descriptor that is not open is left alone.
    """

    def __init__(self, *fds: int):
        self.fds = fds or (1, 2)
        self.text = ""
        self._saved: dict[int, int] = {}

    def __enter__(self) -> "Captured":
        _flush()
        self._saved = {}
        try:
            for fd in self.fds:
                try:
                    self._saved[fd] = os.dup(fd)
                except OSError:  # not open: nothing to capture
                    continue
            self._sink = tempfile.TemporaryFile()
        except BaseException:
            self._close_saved()
            raise
        for fd in self._saved:
            os.dup2(self._sink.fileno(), fd)
        return self

    def __exit__(self, *exc) -> None:
        _flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
        self._close_saved()
        with self._sink as sink:
            sink.seek(0)
            self.text = sink.read().decode("utf-8", "replace")

    def _close_saved(self) -> None:
        for saved in self._saved.values():
            os.close(saved)
        self._saved = {}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    libc = _libc()
    if libc is not None:
        libc.fflush(None)


@functools.cache
def _libc():
    """The C library this process runs on (None where ctypes cannot name it), for ``fflush``."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):
        return None
