"""Your own architecture without editing the package: ``edgecifar train RECIPE --model net.py:build``.

The file is your code and runs as such (it is imported, like a ``conftest.py``): name only files you wrote or
trust. ``build(input_shape, classes)`` returns an uncompiled Keras model that takes raw pixels 0..255, float32,
``[N, *input_shape]``, and returns ``[N, classes]`` probabilities; a model ending in logits gets a softmax
appended (said once). The recipe supplies every training setting (optimizer, schedule, epochs, augmentation...);
settings that reach into our own architectures (a frozen MobileNetV2 backbone) are refused with it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecifar.errors import EdgeCifarError, ModelError, one_line


@dataclass(frozen=True)
class UserModel:
    """A builder named on the command line: where it is, and the file's hash (recorded in metrics.json)."""

    spec: str            # "path/to/net.py:build", as given
    path: Path
    function: str
    sha256: str

    def describe(self) -> dict:
        return {"file": str(self.path), "function": self.function, "sha256": self.sha256[:16]}


def parse(spec: str) -> UserModel:
    """``PATH.py:FUNCTION`` (``:build`` when omitted), checked before TensorFlow loads: one line when wrong."""
    file, _, function = spec.rpartition(":") if spec.rpartition(":")[2].isidentifier() else (spec, "", "build")
    path = Path(file or spec).expanduser()
    if path.suffix != ".py":
        raise EdgeCifarError(f"--model {spec}: expected a Python file and its builder, e.g. net.py:build")
    if not path.is_file():
        raise EdgeCifarError(f"--model {spec}: {path} is not a file")
    return UserModel(spec, path.resolve(), function or "build", hashlib.sha256(path.read_bytes()).hexdigest())


def load_builder(user: UserModel) -> Callable:
    """Import the file (under a module name of its own, so it shadows nothing) and return its builder."""
    name = f"edgecifar_user_model_{user.sha256[:12]}"
    spec = importlib.util.spec_from_file_location(name, user.path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # Keras' serialisation looks classes up by module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"{user.path}: cannot import it ({type(exc).__name__}: {one_line(exc)})") from None
    builder = getattr(module, user.function, None)
    if not callable(builder):
        raise ModelError(f"{user.path}: no function {user.function}(input_shape, classes) in it")
    params = [p for p in inspect.signature(builder).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(params) > 2:
        raise ModelError(f"{user.path}: {user.function} takes {len(params)} arguments; edgecifar calls it with "
                         "(input_shape, classes)")
    return builder


def build(user: UserModel, input_shape: tuple[int, int, int], classes: int, say: Callable[[str], None]):
    """The user's model for this data, checked against the contract every stage relies on."""
    import keras
    import numpy as np

    try:
        model = load_builder(user)(tuple(input_shape), int(classes))
    except EdgeCifarError:
        raise
    except Exception as exc:
        raise ModelError(f"{user.spec}: the builder failed ({type(exc).__name__}: {one_line(exc)})") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"{user.spec}: the builder returned {type(model).__name__}, not a keras.Model")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{user.spec}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; a classifier "
                         "has one of each")
    got_in, got_out = tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
    if got_in != tuple(input_shape) or got_out != (classes,):
        raise ModelError(f"{user.spec}: the model maps {list(got_in)} to {list(got_out)}; this data needs "
                         f"{list(input_shape)} pixels to {classes} classes (build(input_shape, classes) gets both)")
    probe = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (4, *input_shape)).astype("float32")))
    if not ((probe >= 0).all() and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3)):
        say(f"model: {user.spec} ends in logits; a softmax is appended (training and export use probabilities)")
        out = keras.layers.Activation("softmax", dtype="float32", name="scores")(model.outputs[0])
        model = keras.Model(model.inputs, out, name=model.name)
    return model
