"""The output contract: where a channel's frames go (shared memory, PNG files, a recording, NDI...).

An output is made by the app's output registry (``bridge.app.outputs``) for one channel, started
once, handed every frame of that channel on the render thread, and closed once. The engine sees
outputs only through this protocol; it never imports a concrete one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .errors import ConfigError
from .frame import Frame

ErrorReport = Callable[[str], None]
"""Called by an output, from any thread, with one line when it starts failing (OSC ``/bridge/error``)."""


class OutputError(ConfigError):
    """An output that cannot start (its name or folder is taken, its library is missing).

    The message names what is in the way and what to do about it. At daemon start: exit 2;
    when a channel is created: HTTP 409, and no channel is made.
    """


class Output(Protocol):
    """One destination of a channel's frames."""

    kind: str
    """What kind of output it is: its key in ``/v1/health`` (``shm``, ``png_files``, ``record``, ``ndi``)."""

    def start(self, report: ErrorReport) -> None:
        """Take what the output needs (a segment, a folder, a library); raise ``OutputError`` if it cannot.

        Runs off the event loop. A failed start leaves nothing behind (``close`` is not called).
        ``report`` is for failures that happen later (a full disk, a vanished folder): call it once
        per failure episode, not once per frame.
        """

    def publish(self, frame: Frame) -> None:
        """Take one frame, on the render thread: a copy or a hand-off, never an encode or a file write.

        Never raises: a failure is kept in ``error`` and reported, and frames keep rendering.
        """

    def close(self, timeout: float) -> None:
        """Let go of everything ``start`` took, waiting at most ``timeout`` s for work in flight (a
        recording's last frames). Runs off the event loop; called once, after a successful start."""

    @property
    def error(self) -> str | None:
        """Why the output is failing now (``/v1/health`` says ``degraded`` while it is set), else None."""

    def health(self) -> dict:
        """A small JSON-able dict of counters and state for ``/v1/health``."""


OutputFactory = Callable[[str], Sequence[Output]]
"""The outputs of the channel of that name, made but not started (the app's output registry)."""
