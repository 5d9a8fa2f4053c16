"""What a Spout sender or Syphon server (``Sender``) and a Spout receiver or Syphon client
(``Receiver``) do for the bridge, whichever library is behind them, and how they fail.

Both hold a graphics context (OpenGL for Spout, a Metal device for Syphon) that belongs to the
thread that opened it: every call of one sender or receiver comes from that one thread, the
output's or the input's own worker, never the render thread or the event loop.
Pixels cross this boundary as H x W x 4 uint8 RGBA, rows top-first (the bridge's frame layout).
"""

from __future__ import annotations

import re
import sys
from typing import Protocol

import numpy as np

from ..core.errors import BridgeError, ConfigError

KINDS = ("spout", "syphon")
NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")  # printable; Spout keeps 255 bytes, a channel suffix adds 33


class Unavailable(ConfigError):
    """The library is not installed, or cannot run on this platform; the message names the extra."""


class SharingError(BridgeError):
    """The library refused: no graphics context, a name taken, a send that failed."""


class NotFound(BridgeError):
    """No sender of that name; ``available`` lists the ones there are now."""

    def __init__(self, message: str, available: tuple[str, ...]):
        super().__init__(message)
        self.available = available


def name_error(kind: str, name: object) -> str | None:
    """What is wrong with a sender name from an option or a request (one line), or None."""
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return f"a {kind} sender name is 1 to 200 printable characters, got {str(name)[:100]!r}"


def unavailable(what: str, package: str, platform: str, extra: str, exc: BaseException) -> Unavailable:
    """The one line for a missing library: on its platform, the extra to install; elsewhere, which
    platform it needs (a Linux machine never has Spout or Syphon)."""
    here = {"win32": "Windows", "darwin": "macOS"}.get(sys.platform, sys.platform.capitalize())
    if here != platform:
        return Unavailable(f"{what} needs {platform}, and this is {here}: {what} cannot run here "
                           f"(on {platform}: pip install 'turbo-bridge[{extra}]', which brings {package})")
    return Unavailable(f"{what} needs {package}: pip install 'turbo-bridge[{extra}]' ({exc})")


def listed(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)[:20]) or "none"


class Sender(Protocol):
    """One named sender of frames to other programs."""

    name: str

    def open(self) -> None:
        """Take the library, a graphics context and the name; raise ``Unavailable`` or ``SharingError``
        (one line) and hold nothing if it cannot."""

    def send(self, pixels: np.ndarray) -> None:
        """Share one frame (RGBA, rows top-first; any size, a new size resizes the shared texture).
        Raises ``SharingError`` if the library refuses it."""

    def idle(self) -> None:
        """Between frames, at least every 0.1 s: answer what other programs ask (Syphon's discovery)."""

    def close(self) -> None:
        """Let go of the name and the graphics context."""


class Receiver(Protocol):
    """Frames of one named sender of another program."""

    name: str
    error: str | None  # why no frames come now (the sender went away), else None

    def open(self) -> None:
        """Take the library and a graphics context and find the sender; raise ``Unavailable``,
        ``SharingError``, or ``NotFound`` listing the senders there are."""

    def receive(self, timeout: float) -> np.ndarray | None:
        """The sender's next new frame (RGBA, rows top-first, a copy of our own), waiting at most
        ``timeout`` s; None if none came."""

    def close(self) -> None:
        """Let go of the connection and the graphics context."""
