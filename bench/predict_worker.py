"""Classify pixels streamed on stdin with one model file, one JSON line per image. Runtime-only: no TensorFlow.

    python -m edgecifar.bench.predict_worker MODEL [--threads 1] [--runtime auto]

This is the process ``edgecifar predict`` runs a model in, so a file that crashes the native runtime
(a signal, not an exception) takes this process down and not the command: the parent reports the image
it was on and starts a new worker for the rest. Its protocol, lines on stdout that start with
:data:`PREFIX` followed by JSON:

- once loaded: ``{"runtime": "litert"}``, or ``{"error": "<one line>", "exit_code": 2}`` and the worker ends.
  Loading includes one inference of a black image, so a file that loads but cannot run fails here, once;
- then, for each image read from stdin (``IMAGE_BYTES`` bytes: uint8 [32, 32, 3]), ``{"probabilities":
  [10 floats]}`` or ``{"error": "<one line>"}``, until stdin ends.

Native code that writes to file descriptor 1 would corrupt that protocol: it is pointed at stderr, and the
protocol keeps a private copy of the original descriptor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import BinaryIO, TextIO

import numpy as np

from edgecifar import INPUT_SHAPE
from edgecifar.errors import EdgeCifarError, one_line

#: Every protocol line starts with this.
PREFIX = "EDGECIFAR-PREDICT "
#: One image on stdin: uint8 [32, 32, 3], row-major.
IMAGE_BYTES = int(np.prod(INPUT_SHAPE))


def send(out: TextIO, message: dict) -> None:
    """One protocol line, flushed at once (the parent waits for it)."""
    out.write(PREFIX + json.dumps(message) + "\n")
    out.flush()


def load(path: str, threads: int, runtime: str):
    """The model, run once on a black image: a file that cannot be prepared or run fails here."""
    from edgecifar import runtime as rt

    model = rt.load(path, threads=threads, runtime=runtime)
    model.predict(np.zeros((1, *INPUT_SHAPE), np.uint8))
    return model


def serve(model, source: BinaryIO, out: TextIO) -> None:
    """Answer each image on ``source`` until it ends; a runtime error is that image's answer, not the end."""
    while len(raw := source.read(IMAGE_BYTES)) == IMAGE_BYTES:
        pixels = np.frombuffer(raw, np.uint8).reshape(1, *INPUT_SHAPE)
        try:
            probs = model.predict(pixels)[0]
            send(out, {"probabilities": [float(p) for p in np.asarray(probs, np.float32)]})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecifar.bench.predict_worker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", default="auto")
    args = parser.parse_args(argv)
    out = _protocol_stream()
    try:
        model = load(args.model, args.threads, args.runtime)
    except EdgeCifarError as exc:
        send(out, {"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    except Exception as exc:  # never a traceback: the parent shows one line
        send(out, {"error": f"{args.model}: {one_line(exc)}", "exit_code": 1})
        return 1
    send(out, {"runtime": model.runtime})
    serve(model, sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
