"""User-facing errors: the CLI prints their message as one line and exits non-zero, no traceback.

Also the one door to TensorFlow (:func:`require_tensorflow`), which keeps its start-up notes off the screen.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Iterator

from edgecifar.fdcapture import Captured


class EdgeCifarError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""

    exit_code = 2

    def __str__(self) -> str:
        # Library messages (tarfile, converters) may span lines; the user gets exactly one.
        return " ".join(super().__str__().split())


class DataError(EdgeCifarError):
    """CIFAR-10 data is missing, corrupt or malformed."""


class ModelError(EdgeCifarError):
    """A model file or registry name is unusable."""


class MissingDependency(EdgeCifarError):
    """An optional dependency (TensorFlow for training/export) is not installed."""


def one_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first non-empty line of an exception (converters and runtimes raise pages of MLIR or C++ text)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


#: absl's line before its logging is set up, printed by each of TensorFlow's native libraries as it loads.
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
#: An absl log line: severity letter, date and time (before absl is initialised: ``0000 00:00:<epoch>.<us>``),
#: thread, file:line] message.
_ABSL_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")


def log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` (0 everything, 1 no info, 2 no warnings, 3 no errors; the CLI's default is 2)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def without_startup_notes(text: str, level: int) -> str:
    """TensorFlow's load-time stderr as ``TF_CPP_MIN_LOG_LEVEL=level`` promises it: absl lines below the
    level and absl's preamble removed, everything else (errors, anything not from absl) kept, in order.

    TensorFlow's native libraries log before absl is initialised, so the level does not reach them: the
    preamble and "oneDNN custom operations are on" (severity I) came out twice on every command."""
    if level <= 0:
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\r\n") == ABSL_PREAMBLE:
            continue
        match = _ABSL_LINE.match(line)
        if match and "IWEF".index(match.group(1)) < level:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def native_stderr_filtered(transform) -> Iterator[None]:
    """Run the block with file descriptor 2 captured (C++ libraries write there, past ``sys.stderr``), then
    write ``transform(captured text)`` to stderr. ``EDGECIFAR_DEBUG=1`` passes everything through as it comes."""
    if os.environ.get("EDGECIFAR_DEBUG"):
        yield
        return
    err = Captured(2)
    try:
        with err:
            yield
    finally:
        text = transform(err.text)
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()


def require_tensorflow() -> None:
    """Import TensorFlow without its start-up notes (see :func:`without_startup_notes`); fail with one line
    naming the extra to install when it is absent."""
    if "tensorflow" in sys.modules:
        return
    try:
        with native_stderr_filtered(lambda text: without_startup_notes(text, log_level())):
            import tensorflow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a base-only venv
        raise MissingDependency(
            f"this command needs TensorFlow ({exc.name} is not installed): "
            "pip install 'edgecifar[train]'"
        ) from None
