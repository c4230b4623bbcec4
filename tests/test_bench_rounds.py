"""``edgecifar bench --rounds N --reference FILE``: the whole list measured N times round-robin, so a drifting
machine slows every file alike; latency = median of the round medians; "× ref" = median of same-round ratios.
Ordering and bookkeeping through a device that records its calls, the maths on numbers, and a real 2-round
run of the console script on small LiteRT files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import small_model
from edgecifar.bench import core, rounds
from edgecifar.bench.devices import Device, Job, parse_worker_output
from edgecifar.errors import EdgeCifarError

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv
QUICK = ["--runs", "10", "--warmup", "2", "--limit", "40"]

medians = st.lists(st.floats(min_value=1e-3, max_value=1e3, allow_nan=False), min_size=1, max_size=9)


class RecordingDevice(Device):
    """A device whose one-thread latencies are given per (file name, round), n threads running n times faster,
    and which records every job it runs (and runs any file, unless a test gives it a ``refusal``)."""

    scheme = usage = name = "fake"

    def __init__(self, latency: dict[tuple[str, int], float], fail: dict[tuple[str, int], str] | None = None):
        self.latency, self.fail, self.jobs = latency, fail or {}, []

    def run(self, job: Job) -> dict:
        self.jobs.append(job)
        key = (job.file.name, sum(j.file == job.file and j.threads == job.threads for j in self.jobs))
        if key in self.fail:
            return {"status": "error", "error": self.fail[key]}
        ms = self.latency[key] / job.threads
        result = {"status": "ok", "runtime": "fake", "threads": job.threads,
                  "latency": {"median_ms": ms, "spread_lo_ms": 0.9 * ms, "spread_hi_ms": 1.1 * ms, "runs": 10,
                              "blocks": 5, "p90_ms": 1.5 * ms, "p99_ms": 2 * ms},
                  "throughput_ips": 1e3 / ms, "peak_rss_mb": 100.0 * len(self.jobs)}
        if job.accuracy:
            result.update(images=4, correct=3, accuracy=0.75)
        return result

    def refusal(self, path: Path) -> str | None:
        return None

    def close(self) -> None:
        pass


def files(*names: str) -> list[tuple[Path, str | None]]:
    return [(Path("/nonexistent") / n, None) for n in names]


def run(device, names, n_rounds=1, threads=(1,), reference=None, seen=None) -> list[dict]:
    images, labels = np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64)
    on_row = (lambda row, r: seen.append((Path(row["file"]).name, r))) if seen is not None else None
    ref = Path("/nonexistent") / reference if reference else None
    return core.run_bench(files(*names), images, labels, device, list(threads), Job(file=Path(), images=Path()),
                          on_row=on_row, rounds=n_rounds, reference=ref)


# --------------------------------------------------------------------------- order and bookkeeping

def test_rounds_measure_every_file_and_thread_count_before_any_again():
    device = RecordingDevice({(n, r): 1.0 for n in "abc" for r in (1, 2, 3)})
    run(device, "abc", n_rounds=3, threads=(1, 2))
    order = [(j.file.name, j.threads) for j in device.jobs]
    one_round = [(n, t) for n in "abc" for t in (1, 2)]
    assert order == one_round * 3


def test_tail_latencies_and_throughput_are_medians_over_rounds_so_a_slow_first_round_does_not_set_them():
    device = RecordingDevice({("a", 1): 9.0, ("a", 2): 1.0, ("a", 3): 2.0})
    [row] = run(device, "a", n_rounds=3)
    assert row["latency_ms"] == 2.0
    assert (row["p90_ms"], row["p99_ms"], row["throughput_ips"]) == (3.0, 4.0, 500.0)
    assert row["peak_rss_mb"] == 100.0          # memory: round 1's, the round that also ran the accuracy pass


def test_one_round_keeps_its_own_tail_latencies():
    [row] = run(RecordingDevice({("a", 1): 9.0}), "a")
    assert (row["p90_ms"], row["p99_ms"], row["throughput_ips"]) == (13.5, 18.0, 1e3 / 9)


def test_accuracy_is_measured_in_the_first_round_only_and_kept():
    device = RecordingDevice({(n, r): 1.0 for n in "ab" for r in (1, 2, 3)})
    rows = run(device, "ab", n_rounds=3)
    assert [j.accuracy for j in device.jobs] == [True, True, False, False, False, False]
    assert "--no-accuracy" not in device.jobs[0].worker_args("f", "i")
    assert "--no-accuracy" in device.jobs[-1].worker_args("f", "i")
    assert all(r["accuracy"] == 0.75 and r["images"] == 4 for r in rows)


def test_a_row_over_rounds_is_the_median_of_its_round_medians_with_their_range_as_spread():
    device = RecordingDevice({("a", 1): 2.0, ("a", 2): 3.0, ("a", 3): 1.0})
    [row] = run(device, "a", n_rounds=3)
    assert row["rounds"] == 3 and row["round_medians_ms"] == [2.0, 3.0, 1.0]
    assert (row["latency_ms"], row["spread_lo_ms"], row["spread_hi_ms"]) == (2.0, 1.0, 3.0)


def test_one_round_rows_are_as_before_with_a_round_count():
    device = RecordingDevice({("a", 1): 2.0})
    [row] = run(device, "a")
    assert row["rounds"] == 1 and "round_medians_ms" not in row and "vs_reference" not in row
    assert (row["latency_ms"], row["spread_lo_ms"], row["spread_hi_ms"]) == (2.0, 1.8, 2.2)  # the worker's blocks
    assert core.fields([row]) == [f for f in core.FIELDS if f not in core.OPTIONAL]


def test_vs_reference_is_the_median_of_same_round_ratios_per_thread_count():
    # The machine runs 2x slower in round 2: ratios in the same round cancel it.
    lat = {("ref", 1): 1.0, ("ref", 2): 2.0, ("ref", 3): 1.0, ("m", 1): 0.3, ("m", 2): 0.6, ("m", 3): 0.3}
    rows = {r["file"].rsplit("/", 1)[1]: r for r in run(RecordingDevice(lat), ["ref", "m"], 3, reference="ref")}
    assert rows["ref"]["vs_reference"] == 1.0
    assert rows["m"]["vs_reference"] == pytest.approx(0.3)
    assert rows["m"]["latency_ms"] / rows["ref"]["latency_ms"] == pytest.approx(0.3)
    # One round: the plain ratio; each thread count against the reference at the same count.
    rows = run(RecordingDevice({("ref", 1): 1.0, ("m", 1): 0.25}), ["m", "ref"], threads=(1, 2), reference="ref")
    assert [r["latency_ms"] for r in rows] == [0.25, 0.125, 1.0, 0.5]
    assert [(r["threads"], r["vs_reference"]) for r in rows] == [(1, 0.25), (2, 0.25), (1, 1.0), (2, 1.0)]


def test_an_error_row_is_made_once_not_once_per_round():
    device = RecordingDevice({("ok", r): 1.0 for r in (1, 2, 3)})
    device.refusal = lambda path: f"{path}: refused" if path.name == "refused" else None
    seen: list = []
    rows = run(device, ["ok", "refused"], n_rounds=3, seen=seen, reference="ok")
    assert [j.file.name for j in device.jobs] == ["ok"] * 3
    assert seen.count(("refused", 1)) == 1 and len(seen) == 4
    bad = rows[1]
    assert bad["status"] == "error" and bad["error"].endswith("refused") and bad["vs_reference"] is None
    assert "round_medians_ms" not in bad


def test_a_row_that_fails_in_a_later_round_is_an_error_naming_the_round_and_is_not_run_again():
    device = RecordingDevice({(n, r): 1.0 for n in "ab" for r in (1, 2, 3)}, fail={("b", 2): "worker crashed"})
    rows = run(device, "ab", n_rounds=3)
    assert [j.file.name for j in device.jobs] == ["a", "b", "a", "b", "a"]
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "error"
    assert rows[1]["error"] == "round 2: worker crashed"


# --------------------------------------------------------------------------- what a device runs: its plan

class OneThreadTFLite(Device):
    """A device that runs .tflite files only, on one thread."""

    scheme = usage = name = "tfl"
    suffixes = (".tflite",)
    threaded = False


def test_a_device_leaves_default_files_it_cannot_run_out_in_one_line_by_reason_and_keeps_named_ones_with_it():
    a, b, c, d = (Path("/nonexistent") / n for n in ("a.tflite", "b.onnx", "c.onnx", "d.tflite"))
    listed = [(a, None), (b, None), (c, None), (d, f"{d}: no such file")]
    default = OneThreadTFLite().plan(listed, [1, 2], named=False)
    assert default.files == [(a, None), (d, f"{d}: no such file")] and default.threads == [1]
    assert default.skipped == ("skipped 2 files tfl cannot run: b.onnx, c.onnx (tfl devices run .tflite files only)",)
    named = OneThreadTFLite().plan(listed, [1, 2], named=True)
    assert named.files == [(a, None), (b, f"{b}: tfl devices run .tflite files only"),
                           (c, f"{c}: tfl devices run .tflite files only"), (d, f"{d}: no such file")]
    assert named.skipped == ()


def test_a_plan_planned_again_is_the_same_plan_so_run_bench_may_recheck_it():
    listed = [(Path("/nonexistent") / n, None) for n in ("a.tflite", "b.onnx")]
    for device, threads in ((OneThreadTFLite(), [1]), (RecordingDevice({}), [1, 2, 4])):
        for named in (False, True):
            plan = device.plan(listed, [1, 2, 4], named)
            again = device.plan(plan.files, plan.threads, named=True)
            assert (again.files, again.threads) == (plan.files, plan.threads) and plan.threads == threads


# --------------------------------------------------------------------------- the maths

def test_round_robin_order_is_every_key_per_round():
    assert rounds.round_robin(["a", "b"], 3) == [(1, "a"), (1, "b"), (2, "a"), (2, "b"), (3, "a"), (3, "b")]
    assert rounds.round_robin(["a"], 1) == [(1, "a")]


@given(medians)
def test_the_latency_over_rounds_lies_within_the_round_medians(values):
    out = rounds.over_rounds(values)
    assert out["spread_lo_ms"] == min(values) and out["spread_hi_ms"] == max(values)
    assert out["spread_lo_ms"] <= out["latency_ms"] <= out["spread_hi_ms"]
    assert out["latency_ms"] == pytest.approx(float(np.median(values)))


@given(st.lists(st.tuples(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3), st.floats(0.5, 2.0)), min_size=1, max_size=9))
def test_drift_that_slows_a_whole_round_leaves_the_ratio_to_the_reference_unchanged(cells):
    own, ref, drift = (list(c) for c in zip(*cells))
    steady = rounds.vs_reference(own, ref)
    drifted = rounds.vs_reference([o * d for o, d in zip(own, drift)], [r * d for r, d in zip(ref, drift)])
    assert drifted == pytest.approx(steady, rel=1e-9)


def test_vs_reference_of_known_rounds():
    assert rounds.vs_reference([0.3], [1.0]) == pytest.approx(0.3)
    assert rounds.vs_reference([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 1.0
    assert rounds.vs_reference([1.0, 2.0, 9.0], [2.0, 2.0, 3.0]) == 1.0           # ratios 0.5, 1, 3
    assert np.isnan(rounds.vs_reference([1.0, 2.0], [1.0]))                         # a round missing
    assert np.isnan(rounds.vs_reference([1.0], [float("nan")]))                     # nothing timed
    assert np.isnan(rounds.vs_reference([1.0], [0.0]))


def test_the_reference_is_found_by_path_or_by_a_unique_name(tmp_path):
    a, b, c = tmp_path / "x" / "m.tflite", tmp_path / "y" / "m.tflite", tmp_path / "y" / "ref.tflite"
    listed = [(a, None), (b, None), (c, None)]
    assert core.find_reference(listed, tmp_path / "x" / ".." / "x" / "m.tflite") == a
    assert core.find_reference(listed, Path("ref.tflite")) == c
    with pytest.raises(EdgeCifarError, match="2 benched files have that name"):
        core.find_reference(listed, Path("m.tflite"))
    with pytest.raises(EdgeCifarError, match="not among the benched files"):
        core.find_reference(listed, tmp_path / "z" / "ref.tflite")
    with pytest.raises(EdgeCifarError, match="ref.tflite: no such file"):
        core.find_reference([(c, f"{c}: no such file")], c)
    refusing = RecordingDevice({})   # a file the device cannot run: its plan says why, and so does --reference
    refusing.refusal = lambda p: f"{p}: refused" if p == c else None
    with pytest.raises(EdgeCifarError, match="ref.tflite: refused"):
        core.find_reference(refusing.plan(listed, [1], named=True).files, c)


# --------------------------------------------------------------------------- the command and its worker

def edgecifar(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGECIFAR, "bench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EDGECIFAR_OFFLINE": "1"})


def test_a_reference_not_among_the_files_is_one_line_exit_2_and_nothing_written(synthetic_archive, tmp_path):
    out, other = tmp_path / "r.json", tmp_path / "other_int8.tflite"
    shutil.copy(small_model(), other)
    proc = edgecifar(str(small_model()), "--reference", str(other), "--json", str(out), "--data",
                     str(synthetic_archive), *QUICK)
    assert proc.returncode == 2
    assert proc.stderr == f"error: --reference {other}: not among the benched files (name it among the PATHs too)\n"
    assert proc.stdout == "" and not out.exists()


@pytest.mark.slow
def test_the_worker_skips_the_accuracy_pass_when_asked(bench_models, tmp_path):
    from conftest import separable_images

    x, y = separable_images(20, seed=3)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=x, y=y)
    proc = subprocess.run([sys.executable, "-m", "edgecifar.bench.worker", str(bench_models / "tiny_int8.tflite"),
                           "--images", str(npz), "--runs", "5", "--warmup", "1", "--no-accuracy"],
                          capture_output=True, text=True, timeout=120)
    result = parse_worker_output(proc.stdout, proc.stderr, proc.returncode)
    assert proc.returncode == 0 and result["status"] == "ok", proc.stderr
    assert "accuracy" not in result and "predictions" not in result
    assert result["latency"]["median_ms"] > 0 and result["latency"]["runs"] == 5


@pytest.mark.slow
def test_two_rounds_with_a_reference_through_the_console_script(bench_models, synthetic_archive, tmp_path):
    out, table, md = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md"
    names = ("tiny_int8.tflite", "tiny_fp32.tflite")
    proc = edgecifar(*(str(bench_models / n) for n in names), "--rounds", "2", "--reference", "tiny_int8.tflite",
                     "--data", str(synthetic_archive), *QUICK, "--json", str(out), "--csv", str(table),
                     "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr
    assert "2 rounds, round-robin" in proc.stderr
    progress = [line.split(": ")[0].strip() for line in proc.stderr.splitlines() if "round " in line and "/2:" in line]
    assert progress == ["round 1/2", "round 1/2", "round 2/2", "round 2/2"]
    doc = json.loads(out.read_text())
    assert doc["meta"]["rounds"] == 2 and doc["meta"]["reference"] == str(bench_models / "tiny_int8.tflite")
    rows = {Path(r["file"]).name: r for r in doc["rows"]}
    assert set(rows) == set(names)
    for r in rows.values():
        assert r["status"] == "ok" and r["rounds"] == 2 and len(r["round_medians_ms"]) == 2
        assert r["latency_ms"] == pytest.approx(float(np.median(r["round_medians_ms"])))
        assert (r["spread_lo_ms"], r["spread_hi_ms"]) == (min(r["round_medians_ms"]), max(r["round_medians_ms"]))
        assert r["images"] == 40 and r["accuracy"] > 0.5          # from round 1
        assert r["vs_reference"] > 0
    assert rows["tiny_int8.tflite"]["vs_reference"] == 1.0
    with table.open() as fh:
        cells = list(csv.DictReader(fh))
    assert {c["rounds"] for c in cells} == {"2"} and "round_medians_ms" not in cells[0]
    assert float(next(c for c in cells if c["file"].endswith("tiny_int8.tflite"))["vs_reference"]) == 1.0
    assert "| × ref |" in md.read_text() and "median over 2 interleaved rounds" in md.read_text()
    assert "median over 2 interleaved rounds" in proc.stdout and "× ref = latency as a fraction of " \
        "tiny_int8.tflite's" in proc.stdout


@pytest.mark.slow
def test_a_device_that_times_nothing_ignores_rounds_and_reference_in_one_line(bench_models, synthetic_archive):
    from click.testing import CliRunner

    from edgecifar import micro
    from edgecifar.cli import main

    if not micro.installed():
        pytest.skip(f"tflite-micro not installed ({micro.INSTALL})")
    result = CliRunner().invoke(main, ["bench", str(bench_models / "tiny_int8.tflite"), "--device", "mcu", "--rounds",
                                       "3", "--reference", "tiny_int8.tflite", "--limit", "5", "--data",
                                       str(synthetic_archive)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bench: --rounds and --reference ignored: mcu measures no latency\n" in result.stderr
    assert result.stderr.count("tiny_int8.tflite (1 thread)") == 1 and "× ref" not in result.stdout
