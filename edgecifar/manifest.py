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


def entry_for(path: Path) -> dict | None:
    """The manifest entry beside ``path`` that describes this very file (same name and sha256), else None: a file
    replaced after export, or copied next to another manifest, is not described by it."""
    import hashlib

    path = Path(path)
    data = read(path.parent)
    if data is None:
        return None
    entry = next((e for e in data["files"] if isinstance(e, dict) and e.get("file") == path.name), None)
    if entry is None:
        return None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return entry if entry.get("sha256") == digest else None
