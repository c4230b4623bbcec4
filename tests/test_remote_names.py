"""Hostile file names never reach a shell: ``edgecifar bench --device ssh://...`` against a REAL OpenSSH server
on 127.0.0.1, with and without its SFTP subsystem (scp then falls back to the legacy protocol, where the remote
path is read by the board's shell), and ``--device android`` with a stand-in adb that hands its ``shell``
arguments to ``sh -c`` as a phone's adbd does. Every hostile file is a copy of the same good model, so each row
must measure exactly what the plain name measures; a command hidden in a name would leave a marker file.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edgecifar.bench.devices import AndroidDevice, Job
from test_remote import QUICK, start_sshd, stop

EDGECIFAR = str(Path(sys.executable).parent / "edgecifar")
MARKER = f"PWNED_{uuid.uuid4().hex[:8]}"   # unique per session: another run's leftovers cannot pass or fail it

#: Names a fuzzing pass tried (issue 24): command substitution, separators, a redirection that hung scp for
#: 316 s, an ssh option, a host:path spec, a space, quotes, a glob, a newline, bytes that are not UTF-8.
HOSTILE = [
    f"$(touch {MARKER}).tflite", f"`touch {MARKER}`.tflite", f";touch {MARKER};.tflite", f"&touch {MARKER}&.tflite",
    f"|touch {MARKER}|.tflite", ">x.tflite", f"-oProxyCommand=touch {MARKER}.tflite", "a:b.tflite", "x y.tflite",
    f"'$(touch {MARKER})'.tflite", "*.tflite", f"new\nline$(touch {MARKER}).tflite",
    os.fsdecode(b"caf\xe9-\xff.tflite"),
]


def markers(*folders: Path) -> list[Path]:
    """Marker files in the folders a hidden command would have run in (and one level below)."""
    return [p for d in folders for pattern in (f"{MARKER}*", f"*/{MARKER}*") for p in d.glob(pattern)]


def hostile_folder(bench_models: Path, tmp_path: Path) -> Path:
    """A folder holding the good int8 model under its plain name and under every hostile name."""
    folder = tmp_path / "models"
    folder.mkdir()
    good = (bench_models / "tiny_int8.tflite").read_bytes()
    for name in ["tiny_int8.tflite", *HOSTILE]:
        (folder / name).write_bytes(good)
    return folder


def run_bounded(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group, killed whole (scp and ssh too) when it outlives ``timeout``."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{cmd[:3]} hung for more than {timeout:.0f} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@pytest.fixture(scope="module", params=["sftp", "legacy scp"])
def board(request, tmp_path_factory):
    """A real sshd on 127.0.0.1, with the SFTP subsystem or without it; yields (bench device flags, label)."""
    d = tmp_path_factory.mktemp("sshd")
    proc, port, key = start_sshd(d, sftp=request.param == "sftp")
    yield ["--device", f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "--ssh-key", str(key),
           "--ssh-known-hosts", str(d / "known_hosts"), "--remote-python", sys.executable], request.param
    stop(proc)


@pytest.mark.slow
def test_hostile_model_names_over_ssh_run_like_the_plain_name_and_no_command_in_them_runs(
        board, bench_models, synthetic_archive, tmp_path):
    flags, label = board
    folder = hostile_folder(bench_models, tmp_path)
    out = tmp_path / "rows.json"
    try:
        proc = run_bounded([EDGECIFAR, "bench", ".", *flags, "--data", str(synthetic_archive), "--json", str(out),
                            "--timeout", "60", *QUICK], cwd=folder, timeout=240)
        found = markers(Path.home(), Path("/tmp"), folder, tmp_path)
    finally:
        for p in markers(Path.home(), Path("/tmp"), folder, tmp_path):   # never leave one behind
            p.unlink()
    assert not found, f"{label}: a command in a file name ran: {found}"
    assert proc.returncode == 0, f"{label}: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == len(HOSTILE) + 1
    plain = rows.pop("tiny_int8.tflite")
    assert plain["status"] == "ok" and plain["images"] == 30
    for name, row in rows.items():
        assert row["status"] == "ok", f"{label}: {name!r}: {row.get('error')}"
        assert (row["accuracy"], row["precision"]) == (plain["accuracy"], plain["precision"]), (label, name)


@pytest.mark.slow
def test_remote_errors_name_the_users_file_not_the_boards_copy(board, broken_models, synthetic_archive, tmp_path):
    flags, label = board
    bad = tmp_path / "$(x) truncated.tflite"
    bad.write_bytes((broken_models / "truncated.tflite").read_bytes())
    out = tmp_path / "rows.json"
    proc = run_bounded([EDGECIFAR, "bench", str(bad), *flags, "--data", str(synthetic_archive), "--json", str(out),
                        *QUICK], cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "error" and "not a loadable TFLite model" in row["error"]
    assert str(bad) in row["error"] and "/tmp/edgecifar-bench." not in row["error"], (label, row["error"])


# --------------------------------------------------------------------------- android: adb shell joins its arguments

@pytest.fixture
def adb_phone(tmp_path, monkeypatch):
    """A stand-in ``adb`` over a folder that plays the phone: ``push`` copies, ``shell`` runs its arguments
    joined by spaces in ``sh -c`` from the phone's home (as adbd does), and the pushed ``benchmark_model``
    prints a timing line only when its ``--graph`` file exists. Returns (phone folder, adb log)."""
    from test_bench_android import ARM64_NIGHTLY_INFO

    phone, bindir, log = tmp_path / "phone", tmp_path / "bin", tmp_path / "adb.log"
    phone.mkdir()
    bindir.mkdir()
    sample = tmp_path / "sample.txt"
    sample.write_text(ARM64_NIGHTLY_INFO)
    adb = bindir / "adb"
    adb.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >> '{log}'
[ "$1" = -s ] && shift 2
cmd=$1; shift
case "$cmd" in
  push) [ "$1" = -- ] && shift; cp "$1" "$2" ;;
  shell) cd '{phone}' && sh -c "$*" ;;
esac
""")
    binary = tmp_path / "benchmark_model"
    binary.write_text(f"""#!/bin/sh
for a in "$@"; do case "$a" in --graph=*) [ -f "${{a#--graph=}}" ] && cat '{sample}' && exit 0 ;; esac; done
echo "ERROR: no graph"; exit 1
""")
    for f in (adb, binary):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return phone, log, binary


def test_hostile_model_names_on_android_are_pushed_under_names_edgecifar_makes(adb_phone, tmp_path, monkeypatch):
    phone, log, binary = adb_phone
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.chdir(folder)                      # a relative name starting with "-" is not an adb option
    dev = AndroidDevice(benchmark_binary=str(binary), remote_dir=str(phone / "edgecifar"))
    try:
        for name in HOSTILE:
            (folder / name).write_bytes(b"model")
            row = dev.run(Job(file=Path(name), images=Path("unused.npz"), runs=5, warmup=1))
            assert row["status"] == "ok", (name, row.get("error"))
    finally:
        dev.close()
    assert not markers(phone, folder, tmp_path), "a command in a file name ran on the phone"
    remote_side = log.read_bytes().decode(errors="surrogateescape")
    for name in sorted(HOSTILE, key=len, reverse=True):   # only a local, absolute path names the user's file
        remote_side = remote_side.replace(str((folder / name).resolve()), "<local>")
    for name in HOSTILE:   # the phone never saw it
        assert Path(name).stem not in remote_side, name


# --------------------------------------------------------------------------- options hidden in names, locally

@pytest.mark.parametrize("url", ["ssh://-oProxyCommand=touch@host", "ssh://pi@-oProxyCommand=touch",
                                 "ssh://pi@board -oProxyCommand=x", "ssh://pi x@board"])
def test_an_ssh_url_whose_user_or_host_ssh_would_read_as_an_option_is_refused(url):
    from edgecifar.bench.devices import SSHDevice
    from edgecifar.errors import EdgeCifarError

    with pytest.raises(EdgeCifarError, match="expected ssh://user@host"):
        SSHDevice.parse(url)


@pytest.mark.slow
def test_a_model_named_like_an_option_is_measured_as_a_file_on_this_machine(bench_models, synthetic_archive,
                                                                          tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(bench_models / "tiny_int8.tflite", folder / "-h_int8.tflite")   # the worker's --help, as a name
    out = tmp_path / "rows.json"
    proc = run_bounded([EDGECIFAR, "bench", ".", "--data", str(synthetic_archive), "--json", str(out), *QUICK],
                       cwd=folder, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok" and row["file"] == "-h_int8.tflite" and row["images"] == 30
