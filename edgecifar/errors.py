"""User-facing errors: the CLI prints their message as one line and exits non-zero, no traceback."""


class EdgeCifarError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""

    exit_code = 2

    def __str__(self) -> str:
        # Library messages (tarfile, converters) may span lines; the user gets exactly one.
        return " ".join(super().__str__().split())


class DataError(EdgeCifarError):
    """CIFAR-10 data is missing, corrupt or malformed."""


class ModelError(EdgeCifarError):
    """A model file or registry name is unusable."""


class MissingDependency(EdgeCifarError):
    """An optional dependency (TensorFlow for training/export) is not installed."""


def one_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first non-empty line of an exception (converters and runtimes raise pages of MLIR or C++ text)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def require_tensorflow() -> None:
    """Fail with one line naming the extra to install when TensorFlow is absent."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a base-only venv
        raise MissingDependency(
            f"this command needs TensorFlow ({exc.name} is not installed): "
            "pip install 'edgecifar[train]'"
        ) from None
