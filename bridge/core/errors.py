"""Errors that cross module boundaries."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class for errors the daemon reports to its users."""


class ValidationError(BridgeError):
    """A parameter change was rejected; ``field`` names the offending field (or None)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def to_json(self) -> dict:
        return {"error": {"field": self.field, "message": self.message}}


class ModelNotFoundError(BridgeError):
    """The requested model is neither a local folder nor in the hub cache and can't be fetched."""



class ConfigError(BridgeError):
    """The daemon was started with options it refuses (the message says what to change)."""


class UnsupportedModelError(ConfigError):
    """``--model`` names a file or folder of an architecture the daemon does not run (exit code 2)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` (CUDA), ``MemoryError`` and torch's CPU allocator failing.

    Judged by class name and message, so nothing outside ``bridge.pipeline`` imports torch.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc).lower()
    return bool(names & {"OutOfMemoryError", "MemoryError"}) or "out of memory" in text \
        or "can't allocate memory" in text  # DefaultCPUAllocator
