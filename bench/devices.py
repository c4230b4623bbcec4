"""Where a measurement runs: this machine, a Linux board over ssh, or an Android phone over adb.

Each device takes a :class:`Job` (one file at one thread count) and returns the worker's result dict
(see :mod:`edgecifar.bench.worker`), or ``{"status": "error", "error": "<one line>"}``. Nothing here
raises for a bad file or an unreachable device: the bench keeps going with the other rows.

- ``cpu``: ``python -m edgecifar.bench.worker`` in a fresh local process per job.
- ``ssh://user@host[:port]``: the model file and the test images (a .npz) are copied with scp into a
  temporary folder on the board, under names edgecifar makes (:func:`remote_name`: no shell on the board
  ever reads a user's file name), the same worker runs there with ``--remote-python`` (the board needs
  only the base install: ``pip install edgecifar``, no TensorFlow), and its JSON line comes back.
- ``android[:SERIAL]``: the file and TensorFlow Lite's ``benchmark_model`` binary are pushed with adb,
  the binary runs there, and its timing and memory lines are parsed (:mod:`edgecifar.bench.android`).
  ``benchmark_model`` feeds random inputs, so an Android row has latency and memory, not accuracy.
- ``mcu``: TensorFlow Lite for Microcontrollers' interpreter in a fresh local process per file
  (:mod:`edgecifar.bench.mcu`): full-integer ``.tflite`` files only; ops, smallest arena, flash, accuracy
  under its reference kernels and agreement with LiteRT, and which microcontroller classes it fits.

One table of devices, keyed by scheme (as the model registry is by name): each class is ``@register``-ed
with what it can run (suffixes, precisions), whether thread counts mean anything to it, how many test
images it uses by default, and its own command-line options (:class:`Option`); ``edgecifar bench`` builds
its flags from the table and ``open_device`` hands each device only its own. Each device decides in one
place, :meth:`Device.plan`, which files it runs (and why not), at which thread counts. How rows are shown
is :mod:`edgecifar.bench.report`'s business, not a device's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from edgecifar import micro
from edgecifar.bench.android import benchmark_model_row, parse_benchmark_model
from edgecifar.bench.worker import precision_from_name
from edgecifar.errors import EdgeCifarError
from edgecifar.runtime import missing_runtime
from edgecifar.units import plural
from edgecifar.workers import error, parse_worker_output, run_module

#: Model files as the bench lists them, each with the one line saying why it cannot be benched (None: it can).
Files = list[tuple[Path, str | None]]


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
    accuracy: bool = True   # False: timing only (a later round; accuracy is deterministic, round 1 has it)

    def worker_args(self, file: str, images: str) -> list[str]:
        """The worker's arguments; the file last, after "--", so a file named "-h.tflite" is not an option."""
        return ["--images", images, "--threads", str(self.threads), "--runs", str(self.runs),
                "--warmup", str(self.warmup), "--blocks", str(self.blocks), "--batch", str(self.batch),
                "--runtime", self.runtime, *([] if self.accuracy else ["--no-accuracy"]), "--", file]


# --------------------------------------------------------------------------- the table of devices

@dataclass(frozen=True)
class Option:
    """A bench flag that belongs to one kind of device: ``--ssh-key`` becomes SSHDevice(key=...)."""

    flag: str             # "--ssh-key"; the click parameter is its name with underscores
    field: str            # the device's constructor keyword
    help: str
    existing_file: bool = False

    @property
    def param(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


class Device:
    """What every device declares; subclasses are registered with :func:`register`."""

    scheme: ClassVar[str]                          # "cpu", "ssh://", "android", "mcu"
    usage: ClassVar[str]                           # how it is written on the command line
    suffixes: ClassVar[tuple[str, ...]] = (".tflite", ".onnx")
    precisions: ClassVar[tuple[str, ...] | None] = None   # None: any precision
    threaded: ClassVar[bool] = True                # False: one row per file, --threads ignored
    timed: ClassVar[bool] = True                   # False: no latency is measured (--runs/--warmup moot)
    default_images: ClassVar[int | None] = None    # test images when --limit is not given (None: all)
    host_runtimes: ClassVar[bool] = False          # True: runs files with this install's runtimes, on this CPU
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def matches(cls, spec: str) -> bool:
        if cls.scheme.endswith("://"):
            return spec.startswith(cls.scheme)
        return spec == cls.scheme or spec.startswith(cls.scheme + ":")

    @classmethod
    def open(cls, spec: str, **options) -> "Device":
        return cls(**options)

    def refusal(self, path: Path) -> str | None:
        """Why this device cannot run ``path`` (one line), or None."""
        if path.suffix.lower() not in self.suffixes:
            return f"{path}: {self.scheme} devices run {' and '.join(self.suffixes)} files only"
        return None

    def plan(self, files: Files, threads: list[int], named: bool) -> "Plan":
        """What this device runs of ``files``, at which of ``threads``: the one place that decides it.

        Files the user named are all kept (one it cannot run gets an error row saying why: the user asked for
        it). Default files it cannot run are left out, named in one line by reason, and so, on a device that
        uses this install's runtimes, are those no runtime installed here loads (an error when none is left).
        Planning a plan again changes nothing, so :func:`edgecifar.bench.core.run_bench` may re-check it.
        """
        threads = list(threads) if self.threaded else list(threads[:1])
        if named:
            return Plan([(path, problem or self.refusal(path)) for path, problem in files], threads)
        refused = {p: why.removeprefix(f"{p}: ") for p, problem in files if not problem and (why := self.refusal(p))}
        kept = [(p, problem) for p, problem in files if p not in refused]
        skipped = []
        if refused:
            groups = {why: [p.name for p, r in refused.items() if r == why] for why in refused.values()}
            skipped.append(f"skipped {plural(len(refused), 'file')} {self.name} cannot run: "
                           + "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items()))
        if self.host_runtimes:
            kept, missing = runnable_here(kept)
            skipped += [missing] if missing else []
        return Plan(kept, threads, tuple(skipped))

    def run(self, job: "Job") -> dict:  # pragma: no cover - every device overrides it
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Plan:
    """What a device will run (:meth:`Device.plan`): each file with its problem (the listing's, or why this
    device cannot run it: an error row), the thread counts that mean something to it, and one line per kind of
    default file it left out."""

    files: Files
    threads: list[int]
    skipped: tuple[str, ...] = ()


def runnable_here(files: Files) -> tuple[Files, str | None]:
    """The files a runtime installed here can run, and one line saying what was skipped (None if nothing).

    For the default paths only: a file the user names is benched regardless, and fails in its own row.
    """
    kept: Files = []
    skipped: dict[str, list[Path]] = {}
    for path, problem in files:
        missing = None if problem else missing_runtime(path)
        if missing:
            skipped.setdefault(missing, []).append(path)
        else:
            kept.append((path, problem))
    if not skipped:
        return kept, None
    parts = [f"{plural(len(paths), ' and '.join(sorted({p.suffix for p in paths})) + ' file')}: {missing}"
             for missing, paths in skipped.items()]
    line = "skipped " + "; ".join(parts)
    if not kept:
        raise EdgeCifarError(f"nothing this install can run: {line}")
    return kept, line


DEVICES: dict[str, type[Device]] = {}


def register(cls: type[Device]) -> type[Device]:
    """Add a device class to the table; a scheme or a flag registered twice is refused."""
    if cls.scheme in DEVICES:
        raise ValueError(f"device scheme {cls.scheme!r} registered twice")
    taken = {o.flag for d in DEVICES.values() for o in d.options}
    clash = taken & {o.flag for o in cls.options}
    if clash:
        raise ValueError(f"device option(s) {sorted(clash)} registered twice")
    DEVICES[cls.scheme] = cls
    return cls


def open_device(spec: str, **options) -> Device:
    """``cpu`` | ``ssh://user@host[:port]`` | ``android[:SERIAL]`` | ``mcu`` -> a device.

    ``options`` are bench parameters by name (``ssh_key=...``); None means not given. A given option that
    belongs to another kind of device is an error naming its flag.
    """
    spec = "cpu" if spec == "local" else spec
    cls = next((d for d in DEVICES.values() if d.matches(spec)), None)
    if cls is None:
        raise EdgeCifarError(f"unknown device {spec!r}: use {', '.join(d.usage for d in DEVICES.values())}")
    mine = {o.param: o for o in cls.options}
    every = {o.param: (d, o) for d in DEVICES.values() for o in d.options}
    for name, value in options.items():
        if value is None or name in mine:
            continue
        if name in every:
            raise EdgeCifarError(f"{every[name][1].flag} is for {every[name][0].usage} devices, not {spec}")
        raise EdgeCifarError(f"unknown device option {name!r}")
    kwargs = {mine[n].field: v for n, v in options.items() if n in mine and v is not None}
    return cls.open(spec, **kwargs)


def click_options(fn: Callable) -> Callable:
    """One click flag per device option in the table (the bench command's device flags)."""
    import click

    for cls in reversed(list(DEVICES.values())):
        for o in reversed(cls.options):
            kind = click.Path(exists=True, dir_okay=False) if o.existing_file else str
            fn = click.option(o.flag, o.param, type=kind, default=None, help=f"{o.help} ({cls.usage})")(fn)
    return fn


# --------------------------------------------------------------------------- this machine

@register
class LocalDevice(Device):
    """Run the worker in a fresh local process per job."""

    scheme = usage = name = "cpu"
    module = "edgecifar.bench.worker"
    host_runtimes = True

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def arguments(self, job: Job) -> list[str]:
        return job.worker_args(str(job.file), str(job.images))

    def run(self, job: Job) -> dict:
        return run_module(self.python, self.module, self.arguments(job), job.timeout)


# --------------------------------------------------------------------------- a Linux board over ssh

# No user or host starts with "-" (ssh would read it as an option) or holds a space or control character.
_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s-][^@/:\s]*)@)?(?P<host>\[[^\]\s]+\]|[^:/@\s-][^:/@\s]*)"
                     r"(?::(?P<port>\d+))?/?$")
#: What ``mktemp -d`` on a board may answer: anything else is not used as a folder name in a remote command.
_REMOTE_DIR_RE = re.compile(r"/[A-Za-z0-9._/-]+")
#: The suffixes a copy on a board or phone keeps (runtimes choose by suffix; .npz holds the test images).
REMOTE_SUFFIXES = frozenset({*Device.suffixes, ".npz"})


def remote_name(local: Path, index: int) -> str:
    """The name a copy of ``local`` gets on a board or phone: ``<tag>-<index><suffix>``, made here.

    Why: the remote side never sees a name the user (or an archive) chose, so no shell, scp or adb there
    can read a command, an option or a redirection in it (issue 24: ``$(touch PWNED).tflite`` ran on the
    board). Only a suffix from :data:`REMOTE_SUFFIXES` survives, lowercased; the tag (from the local path)
    tells copies apart to a person looking at the board.
    """
    tag = hashlib.sha1(os.fsencode(Path(local).resolve())).hexdigest()[:8]
    suffix = Path(local).suffix.lower()
    return f"{tag}-{index}{suffix if suffix in REMOTE_SUFFIXES else ''}"


def local_argument(local: Path) -> str:
    """``local`` for scp's or adb's command line: absolute, so a name starting with "-" is not an option and
    ``a:b.tflite`` is not scp's ``host:path``."""
    return str(Path(local).resolve())


def name_local_files(result: dict, copies: dict[str, Path]) -> dict:
    """A remote result whose error names the user's files, not their copies on the device."""
    if result.get("error"):
        for remote, local in copies.items():
            result["error"] = result["error"].replace(remote, str(local))
    return result


@register
@dataclass
class SSHDevice(Device):
    """A Linux board reached with the system's ``ssh``/``scp`` (key auth, never a password prompt)."""

    scheme: ClassVar[str] = "ssh://"
    usage: ClassVar[str] = "ssh://user@host[:port]"
    options: ClassVar[tuple[Option, ...]] = (
        Option("--ssh-key", "key", "Private key for the board.", existing_file=True),
        Option("--ssh-known-hosts", "known_hosts", "known_hosts file for the board (default: ssh's own)."),
        Option("--remote-python", "remote_python",
               "Python on the board that has edgecifar (base install) on its path (default: python3)."),
    )

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
    _legacy: bool = field(default=False, repr=False)   # the board has no SFTP server: scp -O

    @classmethod
    def parse(cls, url: str, **kwargs) -> "SSHDevice":
        m = _SSH_RE.match(url)
        if not m:
            raise EdgeCifarError(f"{url}: not an ssh device (expected ssh://user@host[:port])")
        return cls(host=m["host"].strip("[]"), user=m["user"], port=int(m["port"] or 22), **kwargs)

    @classmethod
    def open(cls, spec: str, **options) -> "SSHDevice":
        return cls.parse(spec, **options)

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
        cmd = ["ssh", *self._options(), "-p", str(self.port), "--", self.target, command]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _scp(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy with scp; boards without an SFTP server (which new scp uses) get the legacy protocol (-O),
        where the board's shell reads ``remote``: it is always a name :func:`remote_name` made."""
        first = None
        for legacy in ([["-O"]] if self._legacy else [[], ["-O"]]):   # once SFTP failed, the next copies skip it
            cmd = ["scp", "-q", *legacy, *self._options(), "-P", str(self.port), "--", local_argument(local),
                   f"{self.target}:{remote}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            if proc.returncode == 0:
                self._legacy = bool(legacy)
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
            if proc.returncode != 0 or not _REMOTE_DIR_RE.fullmatch(folder):
                self._failed = f"{self.name} unreachable: {_last_line(proc.stderr, proc.returncode)}"
                raise EdgeCifarError(self._failed)
            self._remote_dir = folder
        return self._remote_dir

    def _copy(self, local: Path) -> str:
        """Copy ``local`` once into the remote folder, under a name made here; return its remote path."""
        key = Path(local).resolve()
        if key not in self._copied:
            remote = f"{self._prepare()}/{remote_name(key, len(self._copied))}"
            self._scp(key, remote)
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
        result = name_local_files(parse_worker_output(proc.stdout, proc.stderr, proc.returncode),
                                  {model: job.file, images: job.images})
        if result.get("precision_guess"):  # the board saw only edgecifar's name for the file: the user's says more
            result["precision_guess"] = precision_from_name(job.file) or result["precision_guess"]
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

@register
@dataclass
class AndroidDevice(Device):
    """A phone reached with ``adb``; runs TensorFlow Lite's ``benchmark_model`` there."""

    scheme: ClassVar[str] = "android"
    usage: ClassVar[str] = "android[:SERIAL]"
    suffixes: ClassVar[tuple[str, ...]] = (".tflite",)
    options: ClassVar[tuple[Option, ...]] = (
        Option("--benchmark-binary", "benchmark_binary",
               "TensorFlow Lite's benchmark_model built for the phone.", existing_file=False),
    )

    serial: str | None = None
    benchmark_binary: str | None = None
    remote_dir: str = "/data/local/tmp/edgecifar"
    adb: str = "adb"
    _ready: bool = field(default=False, repr=False)
    _failed: str | None = field(default=None, repr=False)
    _pushed: dict = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, spec: str, **kwargs) -> "AndroidDevice":
        _, _, serial = spec.partition(":")
        return cls(serial=serial or None, **kwargs)

    @classmethod
    def open(cls, spec: str, **options) -> "AndroidDevice":
        return cls.parse(spec, **options)

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
            self._checked("push", local_argument(Path(self.benchmark_binary)), f"{self.remote_dir}/benchmark_model")
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
            remote = self._push(job.file)
            cmd = (f"{shlex.quote(self.remote_dir)}/benchmark_model --graph={shlex.quote(remote)} "
                   f"--num_threads={job.threads} --num_runs={job.runs} --warmup_runs={job.warmup}")
            proc = self._adb("shell", cmd, timeout=job.timeout)
        except EdgeCifarError as exc:
            return error(str(exc))
        except subprocess.TimeoutExpired:
            return error(f"{self.name}: benchmark_model timed out after {job.timeout:.0f} s")
        row = name_local_files(benchmark_model_row(parse_benchmark_model(proc.stdout + "\n" + proc.stderr)),
                               {remote: job.file})
        row.setdefault("threads", job.threads)
        return row

    def _push(self, local: Path) -> str:
        """Push ``local`` once, under a name made here (adb shell joins its arguments into one command line
        for the phone's shell); return its path on the phone."""
        key = Path(local).resolve()
        if key not in self._pushed:
            remote = f"{self.remote_dir}/{remote_name(key, len(self._pushed))}"
            self._checked("push", local_argument(key), remote)
            self._pushed[key] = remote
        return self._pushed[key]

    def close(self) -> None:
        if self._ready:
            try:
                self._adb("shell", f"rm -rf {shlex.quote(self.remote_dir)}", timeout=60)
            except (subprocess.SubprocessError, OSError):
                pass
            self._ready = False
            self._pushed.clear()


# --------------------------------------------------------------------------- a microcontroller

@register
class MCUDevice(Device):
    """TensorFlow Lite for Microcontrollers' interpreter on this CPU, one fresh process per file."""

    scheme = usage = name = "mcu"
    module = "edgecifar.bench.mcu"
    suffixes = micro.SUFFIXES
    precisions = micro.PRECISIONS
    threaded = False          # TFLite Micro runs one thread
    timed = False             # this CPU is not the chip: no latency is claimed
    default_images = 1000     # reference kernels: ~9 ms per image for ResNet-8 on this CPU

    def __init__(self, python: str | None = None):
        if not micro.installed():
            raise EdgeCifarError(f"--device mcu needs TFLite Micro ({micro.INSTALL})")
        self.python = python or sys.executable
        self._lacking: dict[tuple, list[str]] = {}

    def refusal(self, path: Path) -> str | None:
        """Every reason a microcontroller cannot run ``path``, in one line read from the file (no manifest
        needed): not a .tflite file; not full-integer (where it computes in float); ops TFLite Micro lacks, as
        its own interpreter names them; a batch that grows at run time (test-time augmentation).

        A default ``bench --device mcu`` skips such files in one line; a file the check cannot judge (corrupt,
        or one TFLite Micro crashes on) is left to its run, which says what is wrong in its row.
        """
        from edgecifar import tflite_graph

        problem = super().refusal(path)
        if problem or not path.is_file():
            return problem
        try:
            graph = tflite_graph.read(path)
        except EdgeCifarError:
            return None
        lacking = self.lacking(path) if graph.full_integer else []   # the check stops at a float op
        reasons = [text for found, text in (
            (not graph.full_integer, f"not full-integer: {graph.float_part()}"),
            (bool(lacking), f"uses {' and '.join(lacking)}, which TensorFlow Lite Micro lacks"),
            (graph.batch_grows, "stacks test-time-augmentation views in its batch at run time, where TensorFlow "
                                "Lite Micro keeps the stored batch of 1"),
        ) if found]
        return f"{path}: {', and '.join(reasons)}" if reasons else None   # no ";": a list of reasons can use it

    def lacking(self, path: Path) -> list[str]:
        """The ops of ``path`` TFLite Micro has no kernel for, as its own interpreter says (the check, in a
        process of its own: a hostile file can crash it), asked once per file and version of it."""
        try:
            info = path.stat()
        except OSError:
            return []   # gone since it was listed: its run says so
        key = (path.resolve(), info.st_size, info.st_mtime_ns)
        if key not in self._lacking:
            self._lacking[key] = list((self.check(path).get("figures") or {}).get("unsupported_ops") or [])
        return self._lacking[key]

    def run(self, job: Job) -> dict:
        args = ["--images", str(job.images), "--", str(job.file)]   # "--": a file named "-h.tflite" is a file
        return micro.crash_named(run_module(self.python, self.module, args, job.timeout), job.file)

    def check(self, path: Path, timeout: float = 300.0) -> dict:
        """Ops, smallest arena and fit of one file, without images (export's check too), in its own process."""
        return micro.check_in_process(path, timeout, self.python)
