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
    prefix_ops: int     # TFLite operators the wrapper puts before the network, in graph order (see network_options)

    def wrap(self, model):
        """The model with this augmentation inside it (imports Keras)."""
        module, attr = self.wrapper.split(":")
        return getattr(importlib.import_module(module), attr)(model)


TTA: dict[str, Tta] = {
    "flip": Tta("_tta", 2, "edgecifar.models.layers:with_flip_tta", "the image and its mirror, averaged",
                prefix_ops=2),       # REVERSE_V2, CONCATENATION
    "crops": Tta("_tta6", 6, "edgecifar.models.layers:with_crop_tta",
                 "the image and its mirror (1/4 each), then both shifted one pixel down-right and one pixel "
                 "up-left (1/8 each; airbench94's second TTA level)",
                 prefix_ops=7),      # MIRROR_PAD, 2 STRIDED_SLICE, 3 REVERSE_V2, CONCATENATION
}

DEFAULT = "flip"  # what a bare --tta means (the only kind before crops existed)


def get(kind: str) -> Tta:
    """The row of ``kind``; an unknown kind is one error line (exit 2)."""
    try:
        return TTA[kind]
    except KeyError:
        raise EdgeCifarError(f"--tta {kind}: unknown kind; known: {', '.join(TTA)} (a bare --tta means "
                             f"{DEFAULT} and goes after MODEL)") from None


def network_options(options: dict, kind: str | None) -> dict:
    """Format options as the converter needs them for a file with TTA ``kind``: ``float_ops`` counts the
    network's operators, so the wrapper's own come first and are added. Without this, ``--int8-float-ops 13``
    on mnv2_ft160 kept the stem to block_2_add in float in the plain file but only 3 of its convolutions in the
    six-view file (7 operators of 13 went to the views), which lost 0.95 points against Keras instead of 0.10."""
    if not kind or not options.get("float_ops"):
        return options
    return {**options, "float_ops": options["float_ops"] + get(kind).prefix_ops}
