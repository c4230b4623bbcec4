"""The ``edgecifar`` command: a thin click group over the train -> export -> bench stages.

Subcommands are imported only when run (a lazy group, as in click's documentation), so
``edgecifar predict`` on a device never imports TensorFlow, and a bad input becomes one line on
stderr and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from edgecifar import __version__
from edgecifar.errors import EdgeCifarError

#: name -> "module:attribute" of each subcommand, in pipeline order.
COMMANDS: dict[str, str] = {
    "models": "edgecifar.commands:models",
    "train": "edgecifar.train.command:train",
    "export": "edgecifar.export.command:export",
    "bench": "edgecifar.bench.command:bench",
    "predict": "edgecifar.bench.predict:predict",
    "zoo": "edgecifar.commands:zoo",
}


class LazyGroup(click.Group):
    """Import a subcommand's module on first use; turn EdgeCifarError into one line and an exit code."""

    def list_commands(self, ctx):
        return [n for n in COMMANDS if self._available(n)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeCifarError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # a command may say what was saved and how to continue
            click.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecifar")
def main() -> None:
    """Train, export and benchmark CIFAR-10 classifiers for edge devices."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


if __name__ == "__main__":  # pragma: no cover
    main()
