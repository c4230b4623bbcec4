"""``edgecifar bench --device ssh://...`` against a REAL OpenSSH server started on 127.0.0.1 for the test.

The "board" is this machine: sshd listens on a free loopback port with a host key and a client key
made here, and ``--remote-python`` is this interpreter (which has edgecifar installed). Files and the
test images really travel by scp, and the worker really runs in the ssh session. Skips (saying why)
when sshd or the ssh client is missing: ``.ci/run`` installs openssh-server before the tests.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecifar.bench.devices import SSHDevice
from edgecifar.cli import main
from edgecifar.errors import EdgeCifarError

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
QUICK = ["--runs", "10", "--warmup", "2", "--limit", "30"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    return path


def start_sshd(d: Path, sftp: bool = True):
    """Start a real sshd in ``d`` on a free loopback port; returns (process, port, client key)."""
    if SSHD is None:
        pytest.skip("sshd not installed (apt-get install openssh-server); .ci/run installs it")
    if not (shutil.which("ssh") and shutil.which("scp") and shutil.which("ssh-keygen")):
        pytest.skip("ssh client tools not installed (apt-get install openssh-client)")
    if not os.path.isdir("/run/sshd"):
        if os.geteuid() != 0:
            pytest.skip("sshd needs /run/sshd, which only root can create here")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key, client_key = keygen(d / "host_key"), keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    config = d / "sshd_config"
    config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {d / 'sshd.pid'}
{'Subsystem sftp internal-sftp' if sftp else ''}
""")
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text().strip()[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port, client_key
        except OSError:
            time.sleep(0.1)
    stop(proc)
    pytest.skip("sshd did not open its port within 15 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd (with SFTP, as boards have) on 127.0.0.1; yields (user, port, client key, known_hosts)."""
    d = tmp_path_factory.mktemp("sshd")
    proc, port, key = start_sshd(d)
    yield getpass.getuser(), port, key, d / "known_hosts"
    stop(proc)


def ssh_bench(sshd, *args):
    user, port, key, known = sshd
    return CliRunner().invoke(main, ["bench", *args, "--device", f"ssh://{user}@127.0.0.1:{port}",
                                     "--ssh-key", str(key), "--ssh-known-hosts", str(known),
                                     "--remote-python", sys.executable, *QUICK], catch_exceptions=False)


@pytest.mark.slow
def test_bench_over_real_ssh_copies_files_runs_the_worker_there_and_brings_back_the_figures(
        sshd, bench_models, broken_models, synthetic_archive, tmp_path):
    before = set(glob.glob("/tmp/edgecifar-bench.*"))
    remote_json, local_json = tmp_path / "remote.json", tmp_path / "local.json"
    files = [str(bench_models / "tiny_int8.tflite"), str(bench_models / "tiny_fp32.onnx"),
             str(broken_models / "truncated.tflite")]
    result = ssh_bench(sshd, *files, "--data", str(synthetic_archive), "--json", str(remote_json))
    assert result.exit_code == 1, result.output          # the truncated file fails, the others do not
    assert "Traceback" not in result.output
    rows = {Path(r["file"]).name: r for r in json.loads(remote_json.read_text())["rows"]}
    user, port = sshd[0], sshd[1]
    for name in ("tiny_int8.tflite", "tiny_fp32.onnx"):
        r = rows[name]
        assert r["status"] == "ok", r["error"]
        assert r["device"] == f"ssh://{user}@127.0.0.1:{port}"
        assert r["tensorflow_imported"] is False
        assert r["latency_ms"] > 0 and r["p99_ms"] >= r["p90_ms"] and r["throughput_ips"] > 0
        assert r["peak_rss_mb"] > 0 and r["images"] == 30
    assert rows["truncated.tflite"]["status"] == "error"
    assert "not a loadable TFLite model" in rows["truncated.tflite"]["error"]
    # Same files, same images, locally: the same predictions, so the same accuracy.
    local = CliRunner().invoke(main, ["bench", *files[:2], "--data", str(synthetic_archive), "--json",
                                      str(local_json), *QUICK])
    assert local.exit_code == 0, local.output
    for r in json.loads(local_json.read_text())["rows"]:
        assert rows[Path(r["file"]).name]["accuracy"] == r["accuracy"]
    assert set(glob.glob("/tmp/edgecifar-bench.*")) == before   # the board's temporary folder is removed


@pytest.mark.slow
def test_unreachable_ssh_board_gives_each_row_a_clear_error(bench_models, synthetic_archive, tmp_path):
    if not shutil.which("ssh"):
        pytest.skip("ssh client not installed")
    port = free_port()                                   # nothing listens there
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["bench", str(bench_models / "tiny_int8.tflite"), str(bench_models / "tiny_fp32.onnx"),
                                       "--device", f"ssh://nobody@127.0.0.1:{port}", "--ssh-known-hosts",
                                       str(tmp_path / "kh"), "--data", str(synthetic_archive), "--json", str(out), *QUICK])
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == "error"
        assert f"ssh://nobody@127.0.0.1:{port} unreachable" in r["error"]
        assert "Connection refused" in r["error"] and "\n" not in r["error"]


@pytest.mark.slow
def test_remote_python_without_edgecifar_is_explained(sshd, bench_models, synthetic_archive, tmp_path):
    # A board whose python has no edgecifar: an empty venv (no packages at all).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    bare = str(tmp_path / "bare" / "bin" / "python")
    user, port, key, known = sshd
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["bench", str(bench_models / "tiny_int8.tflite"), "--device",
                                       f"ssh://{user}@127.0.0.1:{port}", "--ssh-key", str(key),
                                       "--ssh-known-hosts", str(known), "--remote-python", bare,
                                       "--data", str(synthetic_archive), "--json", str(out), *QUICK])
    assert result.exit_code == 1
    row = json.loads(out.read_text())["rows"][0]
    assert f"edgecifar is not installed for {bare}" in row["error"]


@pytest.mark.slow
def test_boards_without_sftp_get_files_over_the_legacy_scp_protocol(tmp_path, bench_models):
    proc, port, key = start_sshd(tmp_path, sftp=False)
    dev = SSHDevice(host="127.0.0.1", user=getpass.getuser(), port=port, key=str(key),
                    known_hosts=str(tmp_path / "known_hosts"))
    try:
        remote = dev._copy(bench_models / "tiny_int8.tflite")
        assert Path(remote).read_bytes() == (bench_models / "tiny_int8.tflite").read_bytes()  # same machine
    finally:
        dev.close()
        stop(proc)
    assert not Path(remote).exists()


@pytest.mark.slow
def test_the_board_needs_only_the_base_install_for_tflite_files(bench_models, tmp_path):
    """The worker an ssh board runs, in an environment with only the base packages (no TensorFlow,
    no onnxruntime): TFLite files measure fine, ONNX files get a clear error row."""
    from conftest import separable_images
    from edgecifar.bench.devices import parse_worker_output
    from test_predict import base_only_site

    env = base_only_site(tmp_path)
    x, y = separable_images(10, seed=5)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=x, y=y)
    results = {}
    for name in ("tiny_int8.tflite", "tiny_fp32.onnx"):
        proc = subprocess.run([sys.executable, "-S", "-m", "edgecifar.bench.worker", str(bench_models / name),
                               "--images", str(npz), "--runs", "5", "--warmup", "1"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        results[name] = parse_worker_output(proc.stdout, proc.stderr, proc.returncode)
    assert results["tiny_int8.tflite"]["status"] == "ok" and results["tiny_int8.tflite"]["runtime"] == "litert"
    assert results["tiny_fp32.onnx"]["status"] == "error"
    assert "onnxruntime is not installed" in results["tiny_fp32.onnx"]["error"]


@pytest.mark.parametrize("url, user, host, port", [
    ("ssh://pi@raspberrypi.local", "pi", "raspberrypi.local", 22),
    ("ssh://root@10.0.0.7:2222", "root", "10.0.0.7", 2222),
    ("ssh://board", None, "board", 22),
    ("ssh://me@[::1]:2200", "me", "::1", 2200),
])
def test_ssh_device_urls_parse(url, user, host, port):
    dev = SSHDevice.parse(url)
    assert (dev.user, dev.host, dev.port) == (user, host, port)


@pytest.mark.parametrize("url", ["ssh://", "ssh://a@b:port", "ssh://a@b:22/extra/path"])
def test_bad_ssh_device_urls_are_one_line_errors(url):
    with pytest.raises(EdgeCifarError, match="expected ssh://user@host"):
        SSHDevice.parse(url)
