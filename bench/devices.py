"""Where a measurement runs: this machine, a Linux board over ssh, or an Android phone over adb.

Each device takes a :class:`Job` (one file at one thread count) and returns the worker's result dict
(see :mod:`edgecifar.bench.worker`), or ``{"status": "error", "error": "<one line>"}``. Nothing here
raises for a bad file or an unreachable device: the bench keeps going with the other rows.

- ``cpu``: ``python -m edgecifar.bench.worker`` in a fresh local process per job.
- ``ssh://user@host[:port]``: the model file and the test images (a .npz) are copied with scp into a
  temporary folder on the board, the same worker runs there with ``--remote-python`` (the board needs
  only the base install: ``pip install edgecifar``, no TensorFlow), and its JSON line comes back.
- ``android[:SERIAL]``: the file and TensorFlow Lite's ``benchmark_model`` binary are pushed with adb,
  the binary runs there, and its timing and memory lines are parsed (:func:`parse_benchmark_model`).
  ``benchmark_model`` feeds random inputs, so an Android row has latency and memory, not accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgecifar.bench.worker import PREFIX
from edgecifar.errors import EdgeCifarError


@dataclass(frozen=True)
class Job:
    """One measurement: a model file at one thread count, with the test images as a .npz."""

    file: Path
    images: Path
    threads: int = 1
    runs: int = 200
    warmup: int = 20
    blocks: int = 5
    batch: int = 32
    runtime: str = "auto"
    timeout: float = 900.0

    def worker_args(self, file: str, images: str) -> list[str]:
        return [file, "--images", images, "--threads", str(self.threads), "--runs", str(self.runs),
                "--warmup", str(self.warmup), "--blocks", str(self.blocks), "--batch", str(self.batch),
                "--runtime", self.runtime]


def error(message: str, **extra) -> dict:
    return {"status": "error", "error": message, **extra}


def parse_worker_output(stdout: str, stderr: str, returncode: int | None) -> dict:
    """The worker's JSON line, or an error naming what went wrong (a crash, a missing package...)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(PREFIX):
            try:
                return json.loads(line[len(PREFIX):])
            except json.JSONDecodeError:
                return error("worker printed a malformed result line")
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return error(f"worker crashed ({name})")
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit code {returncode}"
    return error(f"worker failed: {last}")


# --------------------------------------------------------------------------- this machine

class LocalDevice:
    """Run the worker in a fresh local process per job."""

    name = "cpu"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, job: Job) -> dict:
        cmd = [self.python, "-m", "edgecifar.bench.worker", *job.worker_args(str(job.file), str(job.images))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=job.timeout, env=env)
        except subprocess.TimeoutExpired:
            return error(f"worker timed out after {job.timeout:.0f} s")
        except OSError as exc:
            return error(f"cannot start {self.python}: {exc.strerror or exc}")
        return parse_worker_output(proc.stdout, proc.stderr, proc.returncode)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- a Linux board over ssh

_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$")


@dataclass
class SSHDevice:
    """A Linux board reached with the system's ``ssh``/``scp`` (key auth, never a password prompt)."""

    host: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    remote_python: str = "python3"
    known_hosts: str | None = None
    connect_timeout: int = 10
    _remote_dir: str | None = field(default=None, repr=False)
    _copied: dict = field(default_factory=dict, repr=False)
    _failed: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, **kwargs) -> "SSHDevice":
        m = _SSH_RE.match(url)
        if not m:
            raise EdgeCifarError(f"{url}: not an ssh device (expected ssh://user@host[:port])")
        return cls(host=m["host"].strip("[]"), user=m["user"], port=int(m["port"] or 22), **kwargs)

    @property
    def name(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.key:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return opts

    def _ssh(self, command: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self._options(), "-p", str(self.port), self.target, command]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _scp(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy with scp; boards without an SFTP server (which new scp uses) get the legacy protocol (-O)."""
        first = None
        for legacy in ([], ["-O"]):
            cmd = ["scp", "-q", *legacy, *self._options(), "-P", str(self.port), str(local), f"{self.target}:{remote}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            if proc.returncode == 0:
                return
            first = first or _last_line(proc.stderr, proc.returncode)
        raise EdgeCifarError(f"scp {local.name} to {self.name} failed: {first}")

    def _prepare(self) -> str:
        if self._failed:
            raise EdgeCifarError(self._failed)
        if self._remote_dir is None:
            if shutil.which("ssh") is None or shutil.which("scp") is None:
                self._failed = "ssh/scp not found on PATH (install openssh-client)"
                raise EdgeCifarError(self._failed)
            try:
                proc = self._ssh("mktemp -d /tmp/edgecifar-bench.XXXXXX", timeout=self.connect_timeout + 30)
            except subprocess.TimeoutExpired:
                self._failed = f"{self.name}: no answer within {self.connect_timeout + 30} s"
                raise EdgeCifarError(self._failed) from None
            folder = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            if proc.returncode != 0 or not folder.startswith("/"):
                self._failed = f"{self.name} unreachable: {_last_line(proc.stderr, proc.returncode)}"
                raise EdgeCifarError(self._failed)
            self._remote_dir = folder
        return self._remote_dir

    def _copy(self, local: Path) -> str:
        """Copy ``local`` once into the remote folder; return its remote path."""
        key = str(Path(local).resolve())
        if key not in self._copied:
            tag = hashlib.sha1(key.encode()).hexdigest()[:8]
            remote = f"{self._prepare()}/{tag}-{Path(local).name}"
            self._scp(Path(local), remote)
            self._copied[key] = remote
        return self._copied[key]

    def run(self, job: Job) -> dict:
        try:
            images = self._copy(job.images)
            model = self._copy(job.file)
            args = " ".join(shlex.quote(a) for a in job.worker_args(model, images))
            command = f"TF_CPP_MIN_LOG_LEVEL=2 {shlex.quote(self.remote_python)} -m edgecifar.bench.worker {args}"
            proc = self._ssh(command, timeout=job.timeout)
        except EdgeCifarError as exc:
            return error(str(exc))
        except subprocess.TimeoutExpired:
            return error(f"{self.name}: worker timed out after {job.timeout:.0f} s")
        if proc.returncode == 255:  # ssh's own failure, not the worker's
            return error(f"{self.name}: {_last_line(proc.stderr, proc.returncode)}")
        result = parse_worker_output(proc.stdout, proc.stderr, proc.returncode)
        if result.get("status") != "ok" and re.search(r"No module named '?edgecifar", proc.stderr or ""):
            result["error"] = (f"{self.name}: edgecifar is not installed for {self.remote_python} "
                               "(pip install edgecifar on the board, or pass --remote-python)")
        return result

    def close(self) -> None:
        if self._remote_dir:
            try:
                self._ssh(f"rm -rf {shlex.quote(self._remote_dir)}", timeout=60)
            except (subprocess.SubprocessError, OSError):
                pass
            self._remote_dir = None
            self._copied.clear()


def _last_line(text: str, returncode: int | None = None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {returncode}"


# --------------------------------------------------------------------------- Android over adb

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TIMINGS_RE = re.compile(rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
                         rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})")
_STATS_RE = re.compile(r"(?<![\w(])count=(\d+)((?:\s+\w+=" + _NUM + r")*)")
_PAIR_RE = re.compile(rf"(\w+)=({_NUM})")
_DELTA_RE = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init=({_NUM}) overall=({_NUM})")
_PEAK_RE = re.compile(rf"Peak memory footprint \(MB\): init=({_NUM}) overall=({_NUM})")
_PERIODIC_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_SIZE_RE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_ERROR_RE = re.compile(r"(?:^|\s)ERROR: (.+?)\s*$")


def parse_benchmark_model(text: str) -> dict:
    """Timing and memory figures from TensorFlow Lite ``benchmark_model`` output (any version's format).

    Times come back in milliseconds. Handles plain lines, ``INFO:``-prefixed lines and logcat lines;
    the older ``Peak memory footprint (MB): init= overall=`` (peak RSS), the newer ``Memory footprint
    delta from the start of the tool (MB)`` (growth since start) and the optional ``Overall peak
    memory footprint (MB) via periodic monitoring``. Without a timings line, ``error`` says why.
    """
    out: dict = {}
    lines = text.splitlines()
    timing_line = None
    for i, line in enumerate(lines):
        m = _TIMINGS_RE.search(line)
        if m:
            timing_line = i
            init, first, warm, avg = (float(v) for v in m.groups())
            out.update(init_ms=init / 1e3, first_ms=first / 1e3, warmup_avg_ms=warm / 1e3, avg_ms=avg / 1e3)
    # The regular runs' statistics: the last "count=" line before the timings (op-profiling tables
    # print more "Timings (microseconds): count=..." lines after it).
    end = timing_line if timing_line is not None else len(lines)
    for line in reversed(lines[:end]):
        if "Timings (microseconds)" in line:
            continue
        m = _STATS_RE.search(line)
        if m:
            out["runs"] = int(m.group(1))
            for key, value in _PAIR_RE.findall(m.group(2)):
                if key in ("min", "max", "std", "p5", "median", "p95"):  # first/avg come from the timings line
                    out[f"{key}_ms"] = float(value) / 1e3
            break
    for line in lines:
        if m := _DELTA_RE.search(line):
            out.update(mem_init_mb=float(m.group(1)), mem_overall_mb=float(m.group(2)), mem_kind="delta")
        elif m := _PEAK_RE.search(line):
            out.update(mem_init_mb=float(m.group(1)), mem_overall_mb=float(m.group(2)), mem_kind="peak")
        if m := _PERIODIC_RE.search(line):
            out["peak_mem_mb"] = float(m.group(1))
        if m := _SIZE_RE.search(line):
            out["model_mb"] = float(m.group(1))
    if "avg_ms" not in out:
        errors = [m.group(1) for line in lines if (m := _ERROR_RE.search(line))]
        failed = any("Benchmarking failed" in line for line in lines)
        reason = errors[0] if errors else ("Benchmarking failed" if failed else "no timing lines in its output")
        out["error"] = f"benchmark_model: {reason}"
    return out


def benchmark_model_row(parsed: dict) -> dict:
    """A bench row (worker-result shape) from :func:`parse_benchmark_model`'s figures."""
    if "error" in parsed:
        return error(parsed["error"])
    nan = float("nan")
    median = parsed.get("median_ms", parsed["avg_ms"])
    memory = parsed.get("peak_mem_mb")
    if memory is None and parsed.get("mem_kind") == "peak":
        memory = parsed.get("mem_overall_mb")
    note = "latency: benchmark_model on random inputs (median if printed, else mean); accuracy not measured"
    if memory is None and "mem_overall_mb" in parsed:
        note += f"; memory = growth since start ({parsed['mem_overall_mb']:.1f} MB), not peak RSS"
    return {
        "status": "ok", "runtime": "benchmark_model", "images": 0, "correct": 0,
        "accuracy": nan, "ci_low": nan, "ci_high": nan,
        "latency": {"runs": parsed.get("runs", 0), "blocks": 1, "median_ms": median,
                    "p90_ms": nan, "p99_ms": nan,  # benchmark_model prints p95 at most (kept below)
                    "mean_ms": parsed["avg_ms"], "min_ms": parsed.get("min_ms", nan),
                    "spread_lo_ms": parsed.get("min_ms", nan), "spread_hi_ms": parsed.get("max_ms", nan),
                    "iqr_ms": nan},
        "throughput_ips": nan, "load_ms": parsed.get("init_ms", nan),
        "peak_rss_mb": memory if memory is not None else nan,
        "note": note, "benchmark_model": parsed,
    }


@dataclass
class AndroidDevice:
    """A phone reached with ``adb``; runs TensorFlow Lite's ``benchmark_model`` there."""

    serial: str | None = None
    benchmark_binary: str | None = None
    remote_dir: str = "/data/local/tmp/edgecifar"
    adb: str = "adb"
    _ready: bool = field(default=False, repr=False)
    _failed: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, spec: str, **kwargs) -> "AndroidDevice":
        _, _, serial = spec.partition(":")
        return cls(serial=serial or None, **kwargs)

    @property
    def name(self) -> str:
        return f"android:{self.serial}" if self.serial else "android"

    def _adb(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
        cmd = [self.adb, *(["-s", self.serial] if self.serial else []), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _checked(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
        proc = self._adb(*args, timeout=timeout)
        if proc.returncode != 0:
            raise EdgeCifarError(f"{self.name}: adb {args[0]} failed: {_last_line(proc.stderr or proc.stdout, proc.returncode)}")
        return proc

    def _prepare(self) -> None:
        if self._failed:
            raise EdgeCifarError(self._failed)
        if self._ready:
            return
        try:
            if shutil.which(self.adb) is None:
                raise EdgeCifarError("adb not found on PATH (install Android platform-tools)")
            if not self.benchmark_binary or not Path(self.benchmark_binary).is_file():
                raise EdgeCifarError("pass --benchmark-binary PATH: TensorFlow Lite's benchmark_model built "
                                     "for the phone (e.g. android_aarch64_benchmark_model)")
            self._checked("shell", f"mkdir -p {shlex.quote(self.remote_dir)}", timeout=60)
            self._checked("push", str(self.benchmark_binary), f"{self.remote_dir}/benchmark_model")
            self._checked("shell", f"chmod +x {shlex.quote(self.remote_dir)}/benchmark_model", timeout=60)
        except EdgeCifarError as exc:
            self._failed = str(exc)
            raise
        except subprocess.TimeoutExpired:
            self._failed = f"{self.name}: adb timed out"
            raise EdgeCifarError(self._failed) from None
        self._ready = True

    def run(self, job: Job) -> dict:
        if job.file.suffix.lower() != ".tflite":
            return error(f"{self.name}: benchmark_model runs .tflite files only")
        try:
            self._prepare()
            remote = f"{self.remote_dir}/{job.file.name}"
            self._checked("push", str(job.file), remote)
            cmd = (f"{shlex.quote(self.remote_dir)}/benchmark_model --graph={shlex.quote(remote)} "
                   f"--num_threads={job.threads} --num_runs={job.runs} --warmup_runs={job.warmup}")
            proc = self._adb("shell", cmd, timeout=job.timeout)
        except EdgeCifarError as exc:
            return error(str(exc))
        except subprocess.TimeoutExpired:
            return error(f"{self.name}: benchmark_model timed out after {job.timeout:.0f} s")
        row = benchmark_model_row(parse_benchmark_model(proc.stdout + "\n" + proc.stderr))
        row.setdefault("threads", job.threads)
        return row

    def close(self) -> None:
        if self._ready:
            try:
                self._adb("shell", f"rm -rf {shlex.quote(self.remote_dir)}", timeout=60)
            except (subprocess.SubprocessError, OSError):
                pass


def open_device(spec: str, ssh_key: str | None = None, remote_python: str = "python3",
                known_hosts: str | None = None, benchmark_binary: str | None = None):
    """``cpu`` | ``ssh://user@host[:port]`` | ``android[:SERIAL]`` -> a device."""
    if spec in ("cpu", "local"):
        return LocalDevice()
    if spec.startswith("ssh://"):
        return SSHDevice.parse(spec, key=ssh_key, remote_python=remote_python, known_hosts=known_hosts)
    if spec == "android" or spec.startswith("android:"):
        return AndroidDevice.parse(spec, benchmark_binary=benchmark_binary)
    raise EdgeCifarError(f"unknown device {spec!r}: use cpu, ssh://user@host[:port] or android[:SERIAL]")
