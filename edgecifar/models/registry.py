"""The model registry: each architecture is a function decorated ``@register``, created by name.

Every registered builder returns a Keras model honouring the project's contract: input
``[N, 32, 32, 3]`` raw RGB pixels 0-255 (float32), all normalisation and resizing inside the model,
output 10 class probabilities in CIFAR-10 label order. Exported files are therefore self-contained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgecifar.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture."""

    name: str
    build: Callable[..., Any]
    description: str
    family: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str | None = None, *, family: str = "custom") -> Callable[[Callable], Callable]:
    """Register ``fn`` under ``name`` (default: its function name); its docstring's first line describes it."""

    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelSpec(key, fn, doc[0] if doc else "", family)
        return fn

    return deco


def get(name: str) -> ModelSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create(name: str, **kwargs: Any):
    """Build the registered model ``name`` (a fresh, untrained Keras model)."""
    model = get(name).build(**kwargs)
    return model


def names() -> list[str]:
    _load_builtin()
    return list(_REGISTRY)


def specs() -> list[ModelSpec]:
    _load_builtin()
    return list(_REGISTRY.values())


def _load_builtin() -> None:
    """Import the modules whose decorators fill the registry (they import Keras, hence lazily)."""
    from edgecifar.models import ladder, mobilenet, resnet, edge  # noqa: F401
