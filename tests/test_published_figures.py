"""What the README, docs/ and research/README.md and the model table state agrees with what the code and the shipped files produce:
parameter counts, file sizes, what a run leaves behind, and one unit convention (edgecifar/units.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecifar import zoo
from edgecifar.cli import main
from edgecifar.units import size

ROOT = Path(__file__).resolve().parents[1]
#: The pages that state figures: the front page, the reference and the lab notebook.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "research" / "README.md"]
TEXT = "\n".join(p.read_text() for p in PAGES)

#: "78,666 parameters", "2.0M params", "79k params"
STATED_PARAMS = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?([kM]?) param")


def agrees(stated: str, scale: str, actual: int) -> bool:
    """Whether ``stated`` (with its k/M scale) is ``actual`` rounded to the digits it shows."""
    digits = len(stated.split(".")[1]) if "." in stated else 0
    factor = {"": 1, "k": 1e3, "M": 1e6}[scale]
    return round(actual / factor, digits) == float(stated.replace(",", ""))


def test_every_parameter_count_a_model_description_states_is_the_models_own():
    from edgecifar import models
    from edgecifar.models.stats import count_params

    checked = []
    for spec in models.specs():
        stated = STATED_PARAMS.findall(spec.description)
        if not stated:
            continue
        actual = count_params(spec.build(**({"weights": "none"} if spec.family == "mobilenetv2" else {})))
        for number, scale in stated:
            assert agrees(number, scale, actual), f"{spec.name}: description says {number}{scale}, model has {actual:,}"
        checked.append(spec.name)
    assert {"resnet8", "edge_tiny"} <= set(checked)


def test_readme_parameter_counts_and_byte_sizes_of_shipped_files_are_the_manifests():
    entries = {e["file"]: e for e in zoo.load_manifest().get("files", [])}
    if not entries:
        pytest.skip("no models shipped yet")
    checked = 0
    for line in TEXT.splitlines():
        named = [f for f in re.findall(r"`([\w.-]+\.(?:tflite|onnx))`", line) if f in entries]
        if not line.startswith("|") or len(named) != 1:
            continue
        entry = entries[named[0]]
        for number, scale in STATED_PARAMS.findall(line):
            assert agrees(number, scale, entry["parameters"]), f"docs: {named[0]} {number}{scale} params, " \
                                                               f"manifest {entry['parameters']:,}"
            checked += 1
        for count in re.findall(r"\| (\d{1,3}(?:,\d{3})+) B \|", line):
            assert int(count.replace(",", "")) == entry["bytes"], f"docs: {named[0]} {count} B"
            checked += 1
    assert checked >= 4


@pytest.mark.slow
def test_readme_lists_everything_a_finished_run_leaves(trained_run):
    listed = re.search(r"The run directory gets:\n\n((?:- .*\n(?:  .*\n)*)+)", TEXT).group(1)
    named = set(re.findall(r"^- `([^`]+)`", listed, re.M))
    left = {p.name + ("/" if p.is_dir() else "") for p in trained_run.iterdir()} - {"export/"}  # export's own
    assert named == left


def test_readme_and_published_tables_write_sizes_one_way():
    si_looking = re.compile(r"\d(?:\.\d+)? ?(?:kB|KB|MB)\b")
    for path in (*PAGES, ROOT / "bench" / "results" / "bench.md", ROOT / "bench" / "results" / "README.md"):
        found = si_looking.findall(path.read_text())
        assert not found, f"{path.name}: {found[:5]} (sizes are KiB/MiB: edgecifar/units.py)"
    assert "1 KiB = 1,024 bytes" in TEXT


@pytest.mark.slow
def test_zoo_and_bench_write_a_files_size_the_same_way(bench_models, synthetic_archive, tmp_path):
    entries = zoo.load_manifest().get("files", [])
    if entries:
        out = subprocess.run([sys.executable, "-m", "edgecifar", "zoo"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "COLUMNS": "250"}).stdout
        assert all(size(e["bytes"]) in out for e in entries)
    md = tmp_path / "b.md"
    result = CliRunner().invoke(main, ["bench", str(bench_models / "tiny_int8.tflite"), "--runs", "5", "--warmup",
                                       "1", "--limit", "20", "--data", str(synthetic_archive), "--markdown", str(md),
                                       "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert f"| {size(row['bytes'])} |" in md.read_text() and "| peak MiB |" in md.read_text()
    assert size(row["bytes"]).endswith(" KiB") and size(2_015_816) == "1.92 MiB" and size(812) == "812 B"
