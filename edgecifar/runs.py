"""Where runs live and how to find the most recent one (no TensorFlow needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RUNS_VAR = "EDGECIFAR_RUNS"


def runs_root() -> Path:
    """``$EDGECIFAR_RUNS`` or ``./runs``."""
    return Path(os.environ.get(RUNS_VAR, "runs"))


def default_run_dir(recipe: str, seed: int) -> Path:
    return runs_root() / f"{recipe}-seed{seed}"


def latest_run(root: Path | None = None) -> Path | None:
    """The finished run (one with ``model.keras``) written most recently, or None."""
    root = root or runs_root()
    done = [p.parent for p in root.glob("*/model.keras")]
    return max(done, key=lambda p: (p / "model.keras").stat().st_mtime) if done else None


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the code that ran (suffixed ``-dirty`` with uncommitted changes), if in a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None
