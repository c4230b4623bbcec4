"""edgecifar train --strategy: two real MultiWorkerMirroredStrategy workers on 127.0.0.1 train like one
process with the same global batch; a killed worker fails the run with one line and --resume finishes
it; --workers/--task-index write the standard TF_CONFIG."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecifar.cli import main
from edgecifar.errors import EdgeCifarError
from edgecifar.train import distributed, recipes
from edgecifar.train.runner import RunConfig, run

# 350 training images (400 minus 50 for validation) in global batches of 45: seven full batches split
# 23/22 between two replicas and a last batch of 35 split 18/17, so uneven splits are covered too.
BATCH = 45


def _free_ports(n: int) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def _train_cmd(archive, epochs: int, batch: int) -> list[str]:
    return [sys.executable, "-m", "edgecifar", "train", "baseline", "--epochs", str(epochs), "--batch-size", str(batch),
            "--data", str(archive), "--val-size", "50", "--quiet"]


def _start_workers(archive, tmp_path: Path, chief_out: Path, epochs: int, batch: int, *extra: str):
    """Two worker processes (task 0 = chief writes ``chief_out``); each gets its own TMPDIR."""
    workers = ",".join(_free_ports(2))
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmp_path / f"tmp{i}")}
        env.pop("TF_CONFIG", None)
        (tmp_path / f"tmp{i}").mkdir(exist_ok=True)
        out = chief_out if i == 0 else tmp_path / "worker1-out"
        cmd = _train_cmd(archive, epochs, batch) + ["--strategy", "multi-worker", "--workers", workers,
                                                    "--task-index", str(i), "--worker-timeout", "60",
                                                    "--out", str(out), *extra]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return procs


def _finish(procs, timeout=300) -> list[tuple[int, str]]:
    """Wait for every process; return (exit code, stdout and stderr); kill any left over."""
    results = []
    try:
        for p in procs:
            output, _ = p.communicate(timeout=timeout)
            results.append((p.returncode, output))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return results


def _single(archive, out: Path, epochs: int, batch: int) -> dict:
    return run(RunConfig(recipes.get("baseline").with_overrides(epochs=epochs, batch_size=batch), out=out,
                         data=str(archive), val_size=50, progress=False))


def _history(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "history.csv").open()))


def _assert_same_training(run_dir: Path, ref_dir: Path, rel: float):
    rows, ref = _history(run_dir), _history(ref_dir)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in ref], rtol=rel)


@pytest.fixture(scope="module")
def single_process_run(synthetic_archive, tmp_path_factory):
    """The reference: one process, global batch BATCH, seed 0, two epochs."""
    out = tmp_path_factory.mktemp("single") / "run"
    start = time.perf_counter()
    metrics = _single(synthetic_archive, out, 2, BATCH)
    return out, metrics, time.perf_counter() - start


# --------------------------------------------------------------------------- cluster flags

def test_workers_and_task_index_write_the_standard_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = distributed.write_tf_config("10.0.0.1:2222, 10.0.0.2:2223", 1)
    expected = {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2223"]}, "task": {"type": "worker", "index": 1}}
    assert config == expected and json.loads(os.environ["TF_CONFIG"]) == expected
    assert distributed.read_tf_config() == expected
    assert not distributed.is_chief(expected)
    assert distributed.is_chief(distributed.tf_config(["a:1", "b:2"], 0))
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["w:1"]}, "task": {"type": "worker", "index": 0}}
    assert not distributed.is_chief(with_chief)
    assert distributed.is_chief({**with_chief, "task": {"type": "chief", "index": 0}})


@pytest.mark.parametrize("workers, index, message", [
    ("127.0.0.1:1,127.0.0.1:2", 2, "--task-index 2 is out of range"),
    ("127.0.0.1", 0, "is not host:port"),
    ("127.0.0.1:70000", 0, "is not host:port"),
    ("h:1,h:1", 0, "lists a worker twice"),
    ("h:1,h:2", None, "--workers needs --task-index"),
])
def test_bad_workers_or_task_index_fail_with_one_line(workers, index, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(EdgeCifarError, match=message):
        distributed.write_tf_config(workers, index)
    assert "TF_CONFIG" not in os.environ


@pytest.mark.parametrize("args, tf_config, message", [
    (["--workers", "h:1,h:2", "--task-index", "0"], None, "go with --strategy multi-worker"),
    (["--strategy", "multi-worker", "--task-index", "0"], None, "--task-index needs --workers"),
    (["--strategy", "multi-worker"], None, "needs the cluster: set TF_CONFIG"),
    (["--strategy", "multi-worker"], "{not json", "TF_CONFIG is not a valid cluster description"),
    (["--strategy", "multi-worker"], json.dumps({"cluster": {"ps": ["h:1"], "worker": ["h:2"]},
                                                 "task": {"type": "worker", "index": 0}}), "only 'chief' and 'worker'"),
])
def test_the_cli_rejects_an_incomplete_cluster_with_one_line(args, tf_config, message, monkeypatch, synthetic_archive,
                                                            tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = CliRunner().invoke(main, ["train", "baseline", "--data", str(synthetic_archive), "--out",
                                       str(tmp_path / "run"), *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


# --------------------------------------------------------------------------- real clusters

@pytest.mark.slow
def test_two_workers_train_like_one_process_with_the_same_global_batch(synthetic_archive, tmp_path,
                                                                      single_process_run):
    import keras

    from edgecifar import data
    from edgecifar.metrics import accuracy

    chief = tmp_path / "chief"
    start = time.perf_counter()
    results = _finish(_start_workers(synthetic_archive, tmp_path, chief, 2, BATCH))
    cluster_seconds = time.perf_counter() - start
    for i, (code, err) in enumerate(results):
        assert code == 0, f"worker {i} failed:\n{err[-3000:]}"

    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["strategy"] == "multi-worker" and metrics["workers"] == 2 and metrics["replicas"] == 2
    assert metrics["epochs"] == 2 and metrics["batch_size"] == BATCH
    model = keras.models.load_model(chief / "model.keras")
    ds = data.load(synthetic_archive)
    assert round(accuracy(np.asarray(model.predict(ds.x_test.astype(np.float32), verbose=0)), ds.y_test), 4) \
        == metrics["test_accuracy"]
    # Only the chief writes: the other worker's --out never appears and its temporary folder is gone.
    assert not (tmp_path / "worker1-out").exists() and not list((tmp_path / "tmp1").iterdir())
    assert "the chief wrote the run directory" in results[1][1].replace("\n", " ")

    ref_dir, ref, single_seconds = single_process_run
    _assert_same_training(chief, ref_dir, rel=1e-4)
    assert abs(metrics["test_accuracy"] - ref["test_accuracy"]) <= 0.01
    assert abs(metrics["val_accuracy"] - ref["val_accuracy"]) <= 0.02
    print(f"\ntwo workers: test accuracy {metrics['test_accuracy']:.4f} in {cluster_seconds:.1f} s wall; "
          f"one process: {ref['test_accuracy']:.4f} in {single_seconds:.1f} s wall")


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_replicas_trains_like_one_process(synthetic_archive, tmp_path,
                                                                       single_process_run):
    out = tmp_path / "mirrored"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", distributed.CPU_REPLICAS_ENV: "2"}
    result = subprocess.run(_train_cmd(synthetic_archive, 2, BATCH) + ["--strategy", "mirrored", "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "mirrored" and metrics["replicas"] == 2 and (out / "model.keras").exists()
    ref_dir, ref, _ = single_process_run
    _assert_same_training(out, ref_dir, rel=1e-4)
    assert abs(metrics["test_accuracy"] - ref["test_accuracy"]) <= 0.01


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_with_one_line_and_resume_continues_it(synthetic_archive, tmp_path):
    epochs, batch = 6, 16
    chief = tmp_path / "chief"
    procs = _start_workers(synthetic_archive, tmp_path, chief, epochs, batch)
    state = chief / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and procs[0].poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 2:
            break
        time.sleep(0.05)
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    (code, err), _ = _finish(procs, timeout=180)
    detect_seconds = time.perf_counter() - killed_at

    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert errors[0].startswith("error: worker 0: lost contact with another worker") and "--resume" in errors[0]
    print(f"\n{errors[0]}")
    done_at_kill = json.loads(state.read_text())["epochs_done"]
    assert 2 <= done_at_kill < epochs, "the worker must be killed mid-run"
    assert not (chief / "model.keras").exists()

    results = _finish(_start_workers(synthetic_archive, tmp_path, chief, epochs, batch, "--resume"))
    for i, (code, err) in enumerate(results):
        assert code == 0, f"resumed worker {i} failed:\n{err[-3000:]}"
    assert f"resuming {chief} after epoch {done_at_kill}/{epochs}" in results[0][1].replace("\n", "")
    assert f"after epoch {done_at_kill}/{epochs}" in results[1][1].replace("\n", "")
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and [int(r["epoch"]) for r in _history(chief)] == list(range(1, epochs + 1))

    # The resumed cluster continued exactly where the checkpoint stopped: it matches one uninterrupted process.
    straight = _single(synthetic_archive, tmp_path / "straight", epochs, batch)
    _assert_same_training(chief, tmp_path / "straight", rel=1e-3)
    assert abs(metrics["test_accuracy"] - straight["test_accuracy"]) <= 0.01
    print(f"\nkilled worker detected in {detect_seconds:.1f} s; resumed after epoch {done_at_kill}")


@pytest.mark.slow
def test_workers_started_with_different_settings_refuse_to_train(synthetic_archive, tmp_path):
    workers = ",".join(_free_ports(2))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    procs = [subprocess.Popen(_train_cmd(synthetic_archive, 1, batch) + [
        "--strategy", "multi-worker", "--workers", workers, "--task-index", str(i), "--worker-timeout", "60",
        "--out", str(tmp_path / f"out{i}")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for i, batch in enumerate([32, 64])]
    for i, (code, output) in enumerate(_finish(procs, timeout=180)):
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, output[-3000:]
        assert f"worker {i}: the workers were started with different settings" in errors[0]
    assert not (tmp_path / "out0" / "checkpoint").exists()
