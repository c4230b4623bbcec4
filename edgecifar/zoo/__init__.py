"""The models shipped with the package: int8/fp32 TFLite, ONNX and their manifest ``edgecifar.json``."""

from __future__ import annotations

import json
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = "edgecifar.json"


def load_manifest(folder: Path = ZOO_DIR) -> dict:
    """The zoo's manifest, or an empty one when nothing is shipped yet."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"files": []}


def files(folder: Path = ZOO_DIR) -> list[Path]:
    """Shipped model files, in manifest order."""
    return [folder / e["file"] for e in load_manifest(folder).get("files", []) if (folder / e["file"]).exists()]
