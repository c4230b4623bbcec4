"""Model registry and architectures (imports Keras lazily, on first use of the registry)."""

from edgecifar.models.registry import ModelSpec, create, get, names, register, specs

__all__ = ["ModelSpec", "create", "get", "names", "register", "specs"]
