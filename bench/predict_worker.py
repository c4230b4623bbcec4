"""Classify pixels streamed on stdin with one model file, one JSON line per image. Runtime-only: no TensorFlow.

    python -m edgecifar.bench.predict_worker MODEL [--threads 1] [--runtime auto]

This is the process ``edgecifar predict`` runs a model in, so a file that crashes the native runtime
(a signal, not an exception) takes this process down and not the command: the parent reports the image
it was on and starts a new worker for the rest. Its protocol, lines on stdout that start with
:data:`PREFIX` followed by JSON:

- once loaded: ``{"runtime": "litert"}``, or ``{"error": "<one line>", "exit_code": 2}`` and the worker ends.
  Loading includes one inference of a black image, so a file that loads but cannot run fails here, once;
- then, for each image read from stdin (uint8 [height, width, channels] at the model's input shape), ``{"probabilities":
  [10 floats]}`` or ``{"error": "<one line>"}``, until stdin ends.

Native code that writes to file descriptor 1 would corrupt that protocol: it is pointed at stderr, and the
protocol keeps a private copy of the original descriptor.

Both ends of the protocol live here: :func:`main` is the worker, :class:`ModelWorker` the client that
``edgecifar predict`` drives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from edgecifar.errors import EdgeCifarError, ModelError, one_line
from edgecifar.workers import exit_status

#: Every protocol line starts with this. After loading, the worker says the model's input shape (its contract);
#: then each image on stdin is uint8 [height, width, channels], row-major.
PREFIX = "EDGECIFAR-PREDICT "


def send(out: TextIO, message: dict) -> None:
    """One protocol line, flushed at once (the parent waits for it)."""
    out.write(PREFIX + json.dumps(message) + "\n")
    out.flush()


def load(path: str, threads: int, runtime: str, input_range: tuple[float, float] | None = None,
         labels: tuple[str, ...] | None = None):
    """The model with the user's flags applied, run once on a black image: a file that cannot be prepared or run
    fails here."""
    from edgecifar import runtime as rt

    model = rt.load(path, threads=threads, runtime=runtime, input_range=input_range, labels=labels)
    model.predict(np.zeros((1, *model.contract.shape), np.uint8))
    return model


def serve(model, source: BinaryIO, out: TextIO) -> None:
    """Answer each image on ``source`` until it ends; a runtime error is that image's answer, not the end."""
    shape = model.contract.shape
    size = int(np.prod(shape))
    while len(raw := source.read(size)) == size:
        pixels = np.frombuffer(raw, np.uint8).reshape(1, *shape)
        try:
            probs = model.predict(pixels)[0]
            send(out, {"probabilities": [float(p) for p in np.asarray(probs, np.float32)], "outputs": model.meaning})
        except EdgeCifarError as exc:  # the runtime layer's one line, naming the file
            send(out, {"error": str(exc)})
        except Exception as exc:  # anything else: still one line naming the file
            send(out, {"error": f"{model.path}: {one_line(exc)}"})


def _protocol_stream() -> TextIO:
    """A private copy of stdout for the protocol; file descriptor 1 then goes to stderr (native chatter)."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="ascii")
    os.dup2(2, 1)
    return out


# --------------------------------------------------------------------------- the client: edgecifar predict's side

#: Seconds a worker may take to start and load the model, and to answer one image.
LOAD_TIMEOUT = 300.0
IMAGE_TIMEOUT = 120.0


class ModelCrashed(ModelError):
    """The runtime died (a signal) or hung on a model file: the file's fault, but no usage error (exit 1)."""

    exit_code = 1


class NotClassified(EdgeCifarError):
    """One image the model could not classify (a runtime error, or the runtime crashed on it)."""


class ModelWorker:
    """A :mod:`edgecifar.bench.predict_worker` process holding one model; :meth:`classify` sends it one image.

    After a crash the next image starts a new worker; a worker that cannot start again ends the tries (every
    later image gets that one error, no restart loop)."""

    module = "edgecifar.bench.predict_worker"

    def __init__(self, path: Path, threads: int = 1, runtime: str = "auto",
                 input_range: tuple[float, float] | None = None, labels: tuple[str, ...] | None = None):
        self.path, self.threads, self.runtime_choice, self.input_range = path, threads, runtime, input_range
        self.labels = labels         # --labels: applied in the worker, with --input-range, where the file is read
        self.runtime: str | None = None
        self.contract: dict = {}     # the model's input shape, class names and output meaning, as the worker read them
        self.meaning: str | None = None   # probabilities or logits, as found on the last image
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._pending = b""
        self._failed: EdgeCifarError | None = None

    def start(self) -> str:
        """Start a worker and wait until it has loaded the model: the runtime's name. Raises ModelError (the
        file cannot be loaded, exit 2) or ModelCrashed (the runtime crashed or hung loading it, exit 1)."""
        debug = bool(os.environ.get("EDGECIFAR_DEBUG"))
        self._stderr = None if debug else tempfile.TemporaryFile()
        # The model last, after "--": a file named "-h.tflite" is a file, not an option.
        flags = ["--input-range", ",".join(map(repr, self.input_range))] if self.input_range else []
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        with contextlib.ExitStack() as stack:
            if self.labels is not None:   # a file (JSON): any number of names, any characters, never on argv
                names = stack.enter_context(tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".json"))
                json.dump(list(self.labels), names, ensure_ascii=False)
                names.flush()
                flags += ["--labels-file", names.name]
            cmd = [sys.executable, "-m", self.module, "--threads", str(self.threads), "--runtime", self.runtime_choice,
                   *flags, "--", str(self.path)]
            try:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=self._stderr, env=env)
            except OSError as exc:
                raise EdgeCifarError(f"cannot start {sys.executable}: {exc.strerror or exc}") from None
            self._pending = b""
            reply = self._reply(LOAD_TIMEOUT, "loading it")   # the worker has read the names by then
        if "error" in reply:
            self.close()
            raise (ModelError if reply.get("exit_code") == 2 else ModelCrashed)(reply["error"])
        self.runtime, self.contract = reply["runtime"], reply.get("contract") or {}
        return self.runtime

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for one uint8 image at the model's input shape (``contract["shape"]``);
        NotClassified when the runtime failed or crashed on it (the worker is restarted for the next image)."""
        if self._failed:
            raise NotClassified(str(self._failed))
        if self._proc is None:
            try:
                self.start()
            except EdgeCifarError as exc:
                self._failed = exc
                raise NotClassified(str(exc)) from None
        try:
            self._proc.stdin.write(np.ascontiguousarray(pixels, np.uint8).tobytes())
            self._proc.stdin.flush()
        except OSError:  # the worker is gone: its exit status says how
            pass
        try:
            reply = self._reply(IMAGE_TIMEOUT, "on this image")
        except ModelCrashed as exc:
            raise NotClassified(f"{exc}; the other images run in a new process") from None
        if "error" in reply:
            raise NotClassified(reply["error"])
        self.meaning = reply.get("outputs")
        return np.asarray(reply["probabilities"], np.float32)

    def _reply(self, timeout: float, doing: str) -> dict:
        """The worker's next protocol line; ModelCrashed (and the worker gone) when it dies or hangs first."""
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while True:
            line, newline, rest = self._pending.partition(b"\n")
            if newline:
                self._pending = rest
                if line.startswith(PREFIX.encode()):
                    try:
                        return json.loads(line[len(PREFIX):])
                    except ValueError:
                        self.close()
                        raise ModelCrashed(f"{self.path}: the worker wrote a malformed result {doing}") from None
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise ModelCrashed(f"{self.path}: {self._who()} gave no answer within {timeout:.0f} s {doing}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                words = self._last_words()
                how = exit_status(self.close())
                raise ModelCrashed(f"{self.path}: {self._who()} crashed ({how}) {doing}{words}")
            self._pending += chunk

    def _who(self) -> str:
        from edgecifar.runtime import RUNTIME_NAMES

        return RUNTIME_NAMES.get(self.runtime or self.runtime_choice, "the TFLite runtime")

    def _last_words(self) -> str:
        """The last line the dead worker wrote on stderr (an abort's "Check failed..."), as ": <line>"."""
        from edgecifar.runtime import without_tflite_info

        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = without_tflite_info(self._stderr.read()[-4096:].decode("utf-8", "replace"))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return f": {lines[-1][:200]}" if lines else ""

    def close(self) -> int | None:
        """End the worker (closing its stdin ends it; a hung one is killed): its exit status, or None."""
        proc, self._proc = self._proc, None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if proc is None:
            return None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        proc.stdout.close()
        return code


# --------------------------------------------------------------------------- the worker process

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecifar.bench.predict_worker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--input-range", default=None)
    parser.add_argument("--labels-file", default=None, help="the user's class names: a JSON list of strings")
    args = parser.parse_args(argv)
    out = _protocol_stream()
    try:
        from edgecifar.contract import parse_range

        input_range = parse_range(args.input_range) if args.input_range else None
        labels = tuple(str(name) for name in json.loads(Path(args.labels_file).read_text(encoding="utf-8"))) \
            if args.labels_file else None
        model = load(args.model, args.threads, args.runtime, input_range, labels)
    except EdgeCifarError as exc:
        send(out, {"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    except Exception as exc:  # never a traceback: the parent shows one line
        send(out, {"error": f"{args.model}: {one_line(exc)}", "exit_code": 1})
        return 1
    c = model.contract
    send(out, {"runtime": model.runtime, "contract": {"shape": list(c.shape), "labels": list(c.class_names(
        model.classes)), "named": bool(c.labels), "outputs": c.outputs, "range": list(c.input_range or ()),
        "origin": c.origin, "file_origin": model.file_origin, "overrides": list(model.overrides)}})
    serve(model, sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
