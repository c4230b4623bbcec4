"""A Python module run in a fresh process that prints its result as one JSON line: how it is started, and how
its line is read (the bench's workers, and TensorFlow Lite Micro's check that export asks for).

A process of its own because native runtimes can crash: a SIGSEGV in a kernel is then one file's error line,
not the caller's end. The result line starts with :data:`PREFIX`, so it is found among other output (an ssh
banner, a runtime's own prints). No TensorFlow and nothing heavy here: a board's base install runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

#: JSON lines from a worker start with this, so a caller can find it among other output (ssh banners).
PREFIX = "EDGECIFAR-BENCH "


def error(message: str, **extra) -> dict:
    """A failed result: one line saying why (a device's, or this worker's)."""
    return {"status": "error", "error": message, **extra}


def exit_status(returncode: int | None) -> str:
    """How a worker process ended, for one line: ``SIGSEGV`` for a signal, else ``exit code N``."""
    if returncode is None or returncode >= 0:
        return f"exit code {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def parse_worker_output(stdout: str, stderr: str, returncode: int | None) -> dict:
    """The worker's JSON line, or an error naming what went wrong (a crash, a missing package...)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(PREFIX):
            try:
                return json.loads(line[len(PREFIX):])
            except json.JSONDecodeError:
                return error("worker printed a malformed result line")
    if returncode is not None and returncode < 0:
        return error(f"worker crashed ({exit_status(returncode)})")
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit code {returncode}"
    return error(f"worker failed: {last}")


def run_module(python: str, module: str, args: list[str], timeout: float) -> dict:
    """``python -m module args`` in a fresh local process: its result line, or an error row."""
    cmd = [python, "-m", module, *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return error(f"worker timed out after {timeout:.0f} s")
    except OSError as exc:
        return error(f"cannot start {python}: {exc.strerror or exc}")
    return parse_worker_output(proc.stdout, proc.stderr, proc.returncode)
