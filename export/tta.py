"""The one table of test-time augmentations an exported file can carry (``export --tta [KIND]``).

The --tta flag, the file name, the model wrapper and the MACs all read it; there is no if/elif over kinds.
Wrappers are named as ``"module:function"`` (as edgecifar.cli.COMMANDS names its commands) so that the
CLI can check a kind before Keras loads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgecifar.errors import EdgeCifarError


@dataclass(frozen=True)
class Tta:
    """One kind of test-time augmentation built into the exported model."""

    suffix: str         # appended to the model name: NAME{suffix}_{precision}.tflite
    views: int          # images the network sees per input image: how many times the plain model's MACs
    wrapper: str        # "module:function", keras.Model -> keras.Model with the same contract
    help: str

    def wrap(self, model):
        """The model with this augmentation inside it (imports Keras)."""
        module, attr = self.wrapper.split(":")
        return getattr(importlib.import_module(module), attr)(model)


TTA: dict[str, Tta] = {
    "flip": Tta("_tta", 2, "edgecifar.models.layers:with_flip_tta", "the image and its mirror, averaged"),
    "crops": Tta("_tta6", 6, "edgecifar.models.layers:with_crop_tta",
                 "the image and its mirror (1/4 each), then both shifted one pixel down-right and one pixel "
                 "up-left (1/8 each; airbench94's second TTA level)"),
}

DEFAULT = "flip"  # what a bare --tta means (the only kind before crops existed)


def get(kind: str) -> Tta:
    """The row of ``kind``; an unknown kind is one error line (exit 2)."""
    try:
        return TTA[kind]
    except KeyError:
        raise EdgeCifarError(f"--tta {kind}: unknown kind; known: {', '.join(TTA)} (a bare --tta means "
                             f"{DEFAULT} and goes after MODEL)") from None
