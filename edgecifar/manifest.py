"""``edgecifar.json``: the manifest beside exported files, read here by every stage (export writes it, bench and
the zoo read it). One home for its name and its reader, with no TensorFlow: the device install reads it too."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "edgecifar.json"


def read(folder: Path) -> dict | None:
    """The manifest in ``folder`` as a dict with a ``files`` list, or None when there is none or it is unreadable
    (a manifest is as untrusted as the files beside it: any shape but that one counts as no manifest)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None
