"""Whitening initialisation of a model's first convolution (the CIFAR-10 speed runs' "whitening layer").

The stem's filters become the principal components of the training images' patches, each scaled to
unit variance, in ``+v`` / ``-v`` pairs, and are frozen. The first trainable layer then sees
decorrelated inputs from step one, which is what makes short schedules converge (Keller Jordan's
airbench: eigenvectors of the patch covariance of 5,000 training images, eps 5e-4).

The maths is a pure numpy function of the images; ``whiten_stem`` only writes its result into a layer.
"""

from __future__ import annotations

import numpy as np

from edgecifar.errors import EdgeCifarError

STEM = "stem"      # the layer name edgecifar's plain convnets give their first convolution
EPS = 5e-4
IMAGES = 5000


def patches(x: np.ndarray, k: int) -> np.ndarray:
    """All k x k patches of images ``x [N, H, W, C]`` as rows of length k*k*C, in Keras kernel order (kh, kw, c)."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))   # N, H-k+1, W-k+1, C, k, k
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])


def whitening_kernel(x: np.ndarray, k: int, filters: int, eps: float = EPS) -> np.ndarray:
    """A ``[k, k, C, filters]`` kernel: the top ``filters // 2`` principal directions of the patches of the
    standardised images ``x``, each divided by sqrt(eigenvalue + eps), then the same negated."""
    dims = k * k * x.shape[-1]
    if filters % 2 or not 2 <= filters <= 2 * dims:
        raise EdgeCifarError(f"a whitening stem needs an even number of filters between 2 and {2 * dims} "
                             f"(got {filters})")
    p = patches(x.astype(np.float64), k)
    cov = p.T @ p / len(p)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)                    # ascending
    order = np.argsort(eigenvalues)[::-1][: filters // 2]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    w = np.concatenate([scaled, -scaled], axis=1)                      # dims x filters
    return w.reshape(k, k, x.shape[-1], filters).astype(np.float32)


def stem_layer(model):
    """The model's first convolution, or a one-line error naming the model when it has none."""
    try:
        return model.get_layer(STEM)
    except ValueError:
        raise EdgeCifarError(f"model {model.name!r} has no layer named {STEM!r} to whiten") from None


def whiten_stem(model, images_uint8: np.ndarray, images: int = IMAGES) -> None:
    """Set the model's ``stem`` convolution to the whitening kernel of the first ``images`` training images,
    standardised as the model standardises its input."""
    from edgecifar.models.layers import CIFAR_MEAN, CIFAR_STD

    stem = stem_layer(model)
    kernel = stem.kernel
    kh, kw, cin, filters = kernel.shape
    if kh != kw or getattr(stem, "use_bias", False):
        raise EdgeCifarError(f"model {model.name!r}: the stem must be a square convolution without bias to whiten")
    x = (images_uint8[:images].astype(np.float32) - CIFAR_MEAN) / CIFAR_STD
    kernel.assign(whitening_kernel(x, kh, filters).astype(kernel.dtype))
