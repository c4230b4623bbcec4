"""The untrained latency probe (``python -m research.probe``): specs parse to a model and its keywords or
fail in one line, and a real probe builds, exports to int8 and times a registered model beside a reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import META, batch_pickle, write_archive
from research.probe import ProbeSpec, build, header, markdown, parse_spec, parse_specs, probe_command
from edgecifar.errors import EdgeCifarError


def probe(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research.probe", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def export_sized_archive(tmp_path_factory) -> Path:
    """A CIFAR-format archive as large as export's split needs (5,000 held out + 500 calibration images):
    6 batches of 950 flat-coloured images (quick to write, a class per colour), and 20 test images."""
    labels = np.arange(950) % 10
    ramp = np.arange(32, dtype=np.uint8)[None, :, None, None] * 4
    members = {"batches.meta": META}
    for b in range(6):
        images = (labels[:, None, None, None] * 20 + ramp + b).astype(np.uint8).repeat(3, axis=3).repeat(32, axis=2)
        members[f"data_batch_{b + 1}"] = batch_pickle(images, labels)
    members["test_batch"] = batch_pickle(images[:20], labels[:20])
    return write_archive(tmp_path_factory.mktemp("probe-data") / "cifar-10-python.tar.gz", members)


@pytest.fixture(scope="module")
def reference(export_sized_archive, tmp_path_factory) -> Path:
    """An untrained edge_nano exported to int8 by the probe's own build/save/export steps."""
    from research.probe import export_int8, save

    spec = parse_spec("edge_nano")
    path, problem = export_int8(save(build(spec), spec, tmp_path_factory.mktemp("reference")),
                                str(export_sized_archive), say=lambda msg: None)
    assert problem is None and path.is_file()
    return path


# --------------------------------------------------------------------------- specs

def test_a_spec_is_a_registered_name_and_keywords_parsed_as_python_literals_else_strings():
    assert parse_spec("edge_nano") == ProbeSpec("edge_nano", "edge_nano")
    spec = parse_spec("mnv2_dropout:alpha=1.0,size=96,weights=none,freeze=False")
    assert spec.model == "mnv2_dropout"
    assert dict(spec.kwargs) == {"alpha": 1.0, "size": 96, "weights": "none", "freeze": False}
    assert dict(parse_spec("edge_fast:act=relu").kwargs) == {"act": "relu"}
    assert dict(parse_spec("m:widths=(32, 64),name='a,b'").kwargs) == {"widths": (32, 64), "name": "a,b"}
    assert parse_spec("edge_fast:act=relu").slug == "edge_fast_act_relu"


@pytest.mark.parametrize("text, says", [
    ("", "with a model name first"),
    (":act=relu", "with a model name first"),
    ("edge_fast:", "nothing after ':'"),
    ("edge_fast:relu", "'relu' is not key=value"),
    ("edge_fast:act=", "'act=' is not key=value"),
    ("edge_fast:1act=relu", "is not key=value"),
    ("edge_fast:act=relu,", "a stray comma"),
    ("edge_fast:act=relu,act=gelu", "act given twice"),
])
def test_a_malformed_spec_is_one_error_line_naming_the_spec(text, says):
    with pytest.raises(EdgeCifarError) as err:
        parse_spec(text)
    assert says in str(err.value) and "\n" not in str(err.value) and repr(text.strip()) in str(err.value)


def test_two_specs_that_would_write_the_same_files_are_refused():
    with pytest.raises(EdgeCifarError, match="would write the same files"):
        parse_specs(["edge_nano", "edge_nano"])


def test_the_table_shows_no_accuracy_and_says_why_a_row_failed():
    rows = [{"file": "a_int8.tflite", "status": "ok", "parameters": 71034, "macs": 7_520_000, "bytes": 81152,
             "latency_ms": 0.0781, "vs_reference": 0.109, "spread_lo_ms": 0.077, "spread_hi_ms": 0.079,
             "accuracy": 0.1},
            {"file": "b_int8.tflite", "status": "error", "error": "int8 export failed: no | kernel", "bytes": None}]
    text = markdown(rows, ["edge_nano", "edge_fast:act=relu"], "head")
    assert "| edge_nano | 71,034 | 7.52M | 81,152 B | 0.078 | 0.109 | 0.077–0.079 |" in text
    assert "| edge_fast:act=relu | – | – | – | – | – | error: int8 export failed: no / kernel |" in text
    assert "10.0%" not in text and "top-1" not in text


def test_the_header_states_runtime_threads_batch_rounds_host_cpu_reference_and_command():
    rows = [{"runtime": "litert", "versions": {"ai-edge-litert": "2.3.0"}}]
    head = header(rows, 3, Path("runs/ref_int8.tflite"), "python -m research.probe edge_nano --reference x",
                  "AMD EPYC", "abc123", runs=200, blocks=5, warmup=20)
    assert "runtime litert 2.3.0, 1 thread, batch 1, 3 interleaved rounds; latency = the median of the round " \
           "medians (each the median of 5 block medians of 200 runs after 20 warm-up)" in head
    assert "host CPU AMD EPYC; × ref = latency as a fraction of ref_int8.tflite's" in head
    assert head.endswith("Command: `python -m research.probe edge_nano --reference x`; commit abc123.")
    assert "\n" not in head


# --------------------------------------------------------------------------- the command

def test_a_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path):
    started = probe("edge_fast:relu", "--reference", str(tmp_path / "none.tflite"), "--out", str(tmp_path / "out"),
                    env=os.environ.copy())
    assert (started.returncode, started.stdout) == (2, "")
    assert started.stderr == "error: 'edge_fast:relu': 'relu' is not key=value\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec, says", [
    ("no_such_model", "unknown model 'no_such_model'; known: "),
    ("edge_nano:width=3", "edge_nano:width=3: cannot build edge_nano (edge_nano() got an unexpected keyword argument"),
])
def test_an_unknown_model_or_keyword_exits_2_with_one_line_and_writes_nothing(spec, says, reference,
                                                                             export_sized_archive, tmp_path):
    result = CliRunner().invoke(probe_command, [spec, "--reference", str(reference), "--out", str(tmp_path / "out"),
                                                "--data", str(export_sized_archive)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {says}") and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_probe_builds_exports_and_times_an_untrained_model_beside_the_reference(reference, export_sized_archive,
                                                                                   tmp_path):
    table = tmp_path / "results" / "probe.md"
    env = {**os.environ, "EDGECIFAR_DATA": str(export_sized_archive), "EDGECIFAR_OFFLINE": "1"}
    done = probe("edge_nano", "--reference", str(reference), "--out", str(tmp_path / "work"), "--rounds", "1",
                 "--markdown", str(table), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = table.read_text()
    assert text == done.stdout
    head = text.splitlines()[0]
    assert "1 thread, batch 1, 1 round" in head and "host CPU " in head
    assert f"`python -m research.probe edge_nano --reference {reference}" in head
    row = next(line for line in text.splitlines() if line.startswith("| edge_nano |"))
    params, macs, size, latency, vs_ref, spread = (c.strip() for c in row.strip("|").split("|")[1:])
    assert params == "71,034" and macs == "7.52M"
    written = tmp_path / "work" / "edge_nano" / "edge_nano_int8.tflite"
    assert int(size.removesuffix(" B").replace(",", "")) == written.stat().st_size
    assert float(latency) > 0 and float(vs_ref) > 0 and re.fullmatch(r"\d+\.\d{3}–\d+\.\d{3}", spread)
    reference_row = r"^\| reference: edge_nano_int8\.tflite \| 71,034 \| 7\.52M \| [\d,]+ B \| [\d.]+ \| 1\.000 \|"
    assert re.search(reference_row, text, re.M)
