"""Files written safely: paths that files record travel (a shipped manifest names no one machine's user folder),
outputs are checked before the work and a late failure is one line, and a killed writer's temporaries are told
apart and cleaned up without touching a live writer's."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import (atomic_path, check_writable_dir, check_writable_file, is_temporary, portable_path,
                              remove_stale_temporaries, temporary_of, try_write, write_text)


def test_a_path_under_the_working_directory_is_recorded_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "a" / "model.keras") == "runs/a/model.keras"


def test_a_path_in_the_home_folder_is_recorded_under_a_tilde(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert portable_path(home / "edgecifar-runs" / "zoo" / "model.keras") == "~/edgecifar-runs/zoo/model.keras"


def test_any_other_path_stays_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert portable_path("/opt/models/model.keras") == str(Path("/opt/models/model.keras"))


# --------------------------------------------------------------------------- outputs checked before the work

@pytest.mark.parametrize("case", ["parent is a file", "a folder", "a pipe", "under /proc/self", "under /sys"])
def test_an_output_file_that_cannot_be_written_is_one_error_naming_its_flag_before_any_work(case, tmp_path):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    os.mkfifo(tmp_path / "a-pipe")
    path = {"parent is a file": tmp_path / "a-file" / "r.json", "a folder": tmp_path / "a-folder",
            "a pipe": tmp_path / "a-pipe", "under /proc/self": Path("/proc/self/r.json"),
            "under /sys": Path("/sys/r.json")}[case]
    with pytest.raises(EdgeCifarError) as caught:
        check_writable_file(path, "--json")
    assert str(caught.value).startswith(f"--json {path}: ") and "\n" not in str(caught.value)
    assert not path.is_file() or case == "a pipe"


def test_a_writable_output_file_gets_its_folder_and_no_litter(tmp_path):
    out = tmp_path / "new" / "deeper" / "r.json"
    assert check_writable_file(out, "--json") == out
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_named_with_its_flag(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(EdgeCifarError, match=f"^--confusion {tmp_path / 'a-file'}: is a file, not a folder$"):
        check_writable_dir(tmp_path / "a-file", "--confusion")


def test_a_write_that_fails_after_the_work_is_one_line_naming_the_output(tmp_path):
    def full_disk(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    assert try_write("--csv", tmp_path / "r.csv", full_disk) == f"--csv {tmp_path / 'r.csv'}: not written " \
                                                                "(No space left on device)"
    assert try_write("--csv", tmp_path / "r.csv", lambda p: write_text(p, "a,b\n")) is None
    assert (tmp_path / "r.csv").read_text() == "a,b\n"


# --------------------------------------------------------------------------- temporaries of killed writers

def test_atomic_temporaries_are_told_apart_from_finished_files_by_name(tmp_path):
    for final, suffix in (("x_int8.tflite", None), ("model.keras", None), ("best.weights.h5", ".weights.h5"),
                          ("edgecifar.json", None), ("teacher", ".npz")):
        with atomic_path(tmp_path / final, suffix=suffix) as tmp:
            assert is_temporary(tmp) and temporary_of(tmp) == final, tmp.name
            tmp.write_bytes(b"x")
        assert not is_temporary(tmp_path / final)
    assert is_temporary(".x_int8.tflite.yc38oavx.tflite")
    assert not any(map(is_temporary, ("x_int8.tflite", ".hidden.tflite", ".x_int8.tflite.short.tflite")))


#: A writer that holds an atomic temporary open, says its name, then waits for a line on stdin before finishing.
WRITER = """
import sys
from edgecifar.fileio import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial")
    print(tmp, flush=True)
    sys.stdin.readline()
    tmp.write_bytes(b"done")
"""


def start_writer(final: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_writers_temporary_is_removed_once_no_writer_is_alive_and_a_live_writers_is_kept(tmp_path):
    dead, dead_tmp = start_writer(tmp_path / "a_int8.tflite")
    dead.kill()                                                       # SIGKILL: no cleanup ran
    dead.wait(timeout=30)
    live, live_tmp = start_writer(tmp_path / "b_int8.tflite")
    try:
        assert dead_tmp.exists() and live_tmp.exists()
        assert remove_stale_temporaries(tmp_path, lambda final: final.endswith(".tflite")) == []
        assert dead_tmp.exists() and live_tmp.exists()                # a writer is alive: nothing is touched
        live.communicate("\n", timeout=30)
    finally:
        live.kill()
    assert live.returncode == 0 and (tmp_path / "b_int8.tflite").read_bytes() == b"done"
    assert remove_stale_temporaries(tmp_path, lambda final: final.endswith(".tflite")) == [dead_tmp]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b_int8.tflite"]


def test_a_writer_that_locks_its_own_file_writes_through_an_atomic_path(tmp_path):
    h5py = pytest.importorskip("h5py")                                # Keras' .h5 weights: HDF5 flocks the file
    with atomic_path(tmp_path / "best.weights.h5", suffix=".weights.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f["w"] = np.arange(3)
    with h5py.File(tmp_path / "best.weights.h5", "r") as f:
        assert f["w"][:].tolist() == [0, 1, 2]


def test_only_the_temporaries_of_the_names_asked_for_are_removed(tmp_path):
    dead, dead_tmp = start_writer(tmp_path / "notes.txt")
    dead.kill()
    dead.wait(timeout=30)
    assert remove_stale_temporaries(tmp_path, lambda final: final.endswith(".tflite")) == []
    assert dead_tmp.exists()
