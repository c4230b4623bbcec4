"""Tables a terminal can show: at 80 and 120 columns, ``edgecifar bench`` and ``edgecifar zoo`` keep the file
name and the headline figures whole; the other columns fold away (they stay in --json/--csv)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edgecifar import data, zoo
from edgecifar.bench import core, report
from edgecifar.bench.devices import Job, LocalDevice
from edgecifar.units import size

WIDTHS = (80, 120)
LONG_NAME = "mnv2_w1.0_96_random_int8.tflite"  # the longest name in bench/results


@pytest.fixture(scope="module")
def bench_rows(synthetic_archive, tmp_path_factory) -> list[dict]:
    """Real rows: every shipped file measured in its worker, a copy under the longest published name, and a
    file that does not exist (an error row)."""
    if not zoo.files():
        pytest.skip("no models shipped yet")
    tmp = tmp_path_factory.mktemp("table")
    shutil.copy(zoo.files()[0], tmp / LONG_NAME)
    dataset = data.load(str(synthetic_archive))
    files = core.expand([*zoo.files(), tmp / LONG_NAME, tmp / "gone.tflite"])
    return core.run_bench(files, dataset.x_test[:40], dataset.y_test[:40], LocalDevice(), [1],
                          Job(file=Path(), images=Path(), runs=10, warmup=2))


def render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def line_of(text: str, name: str) -> str:
    lines = [line for line in text.splitlines() if f" {name} " in line]
    assert len(lines) == 1, (name, text)
    return lines[0]


def headers(text: str) -> set[str]:
    head = next(line for line in text.splitlines() if line.startswith("┃"))
    return {cell.strip() for cell in head.strip("┃").split("┃")}


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_table_keeps_file_names_and_headline_figures_whole(bench_rows, width):
    text = render(report.table(bench_rows, title="edgecifar bench on cpu (40 test images)"), width)
    assert all(len(line) <= width for line in text.splitlines())
    assert "…" not in text
    ok = [r for r in bench_rows if r["status"] == "ok"]
    assert len(ok) == len(bench_rows) - 1
    for r in ok:
        line = line_of(text, Path(r["file"]).name)
        assert f"{100 * r['accuracy']:.1f}%" in line
        assert f"{r['latency_ms']:.3f}" in line
        assert report._size(r["bytes"]) in line
    assert "gone.tflite: no such file" in text                      # an error row says why, below the table


def test_bench_table_shows_more_columns_on_a_wider_terminal(bench_rows):
    narrow, wide = (headers(render(report.table(bench_rows), w)) for w in WIDTHS)
    assert {"file", "size", "top-1", "lat ms"} <= narrow < wide
    everything = headers(render(report.table(bench_rows), 400))
    assert wide < everything and {"p99", "load ms", "peak MiB", "spread ms"} <= everything


@pytest.mark.parametrize("width", WIDTHS)
def test_zoo_command_keeps_file_names_and_headline_figures_whole(width):
    entries = zoo.load_manifest().get("files", [])
    if not entries:
        pytest.skip("no models shipped yet")
    script = Path(sys.executable).parent / "edgecifar"
    out = subprocess.run([str(script), "zoo"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": str(width)})
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("val acc:")[0]
    assert all(len(line) <= width for line in table.splitlines())
    assert "…" not in table
    for e in entries:
        line = line_of(table, e["file"])
        assert size(e["bytes"]) in line
        if e.get("bench"):
            assert f"{e['bench']['accuracy']:.1%}" in line and f"{e['bench']['latency_ms']:.3f}" in line
