"""Embed each file's contract (edgecifar.contract) into files exported before exports embedded it.

    python -m research.embed_contracts edgecifar/zoo

Reads each entry of the folder's edgecifar.json, writes its contract into the file's metadata (TFLite: a metadata
buffer, which the graph never reads; ONNX: a metadata_props entry) and updates the entry's bytes and sha256. The
graph is untouched: outputs stay bit-identical (checked here on random pixels before the file is replaced).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from edgecifar import contract, manifest, runtime, tflite_graph
from edgecifar.fileio import atomic_path, write_json


def embed(path: Path, found: contract.Contract) -> bytes:
    payload = found.to_json()
    if path.suffix == ".tflite":
        return tflite_graph.with_metadata(path.read_bytes(), contract.METADATA_NAME, payload.encode())
    import onnx

    proto = onnx.load(str(path))
    for prop in [p for p in proto.metadata_props if p.key == contract.METADATA_NAME]:
        proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=contract.METADATA_NAME, value=payload)
    return proto.SerializeToString()


def main(folder: Path) -> None:
    data = manifest.read(folder)
    if data is None:
        sys.exit(f"{folder}: no {manifest.MANIFEST}")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    for entry in data["files"]:
        path = folder / entry["file"]
        before = runtime.load(path)
        found = contract.from_manifest(entry, str(path))
        if before.contract.origin == "metadata" or found is None:
            print(f"{path.name}: {'already embedded' if found else 'no contract in its entry'}")
            continue
        content = embed(path, found)
        with atomic_path(path) as tmp:
            tmp.write_bytes(content)
            after = runtime.load(tmp)
            assert after.contract.origin == "metadata", path
            assert np.array_equal(before.predict(pixels), after.predict(pixels)), f"{path}: outputs changed"
        entry.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
        print(f"{path.name}: contract embedded ({len(content):,} B)")
    write_json(folder / manifest.MANIFEST, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
