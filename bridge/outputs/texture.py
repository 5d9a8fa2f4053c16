"""Spout and Syphon out (``--spout NAME``, ``--syphon NAME``): every frame of a channel shared
with other programs on this machine as a GPU texture, through a ``bridge.texshare`` sender.

``publish`` runs on the render thread and only leaves the frame in a one-frame mailbox (latest
wins: a frame the sender had no time for is counted as skipped). The sender lives on a worker
thread of its own from start to close: its graphics context (OpenGL for Spout, Metal for
Syphon) belongs to that thread. ``start`` waits for that thread to open it, so a missing library,
a taken name or a machine without the graphics stack fails the start in one line.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, TimeoutError as OpenTimeout

from ..core.errors import BridgeError
from ..core.frame import Frame
from ..core.output import ErrorReport, OutputError
from ..texshare.link import Sender
from .mailbox import Mailbox

log = logging.getLogger(__name__)

IDLE_S = 0.1  # while no frame comes: how often the sender answers other programs (Syphon's discovery)
OPEN_TIMEOUT_S = 30.0  # making a graphics context takes milliseconds; a stuck driver must not hang the start


class TextureOutput:
    """An output that shares each frame through ``sender`` (a Spout sender or a Syphon server)."""

    def __init__(self, kind: str, sender: Sender):
        self.kind = kind  # "spout" or "syphon": its key in /v1/health
        self.name = sender.name
        self.sent = 0
        self.errors = 0
        self.error: str | None = None  # set while sends fail; a sent frame clears it
        self.last_error: str | None = None  # stays after recovery
        self._sender = sender
        self._report: ErrorReport = lambda message: None
        self._mailbox = Mailbox()
        self._opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._work, name=kind, daemon=True)

    def start(self, report: ErrorReport = lambda message: None) -> None:
        self._report = report
        self._thread.start()
        try:
            self._opened.result(OPEN_TIMEOUT_S)
        except BridgeError as exc:  # Unavailable, SharingError: the thread has let go of everything
            raise OutputError(str(exc)) from None
        except OpenTimeout:
            self._mailbox.close()  # the thread closes the sender once (if ever) its open returns
            raise OutputError(f"--{self.kind} {self.name!r}: the graphics driver did not open a context "
                              f"within {OPEN_TIMEOUT_S:.0f} s") from None
        except Exception as exc:  # the library failing in a way it does not document: still one line
            raise OutputError(f"--{self.kind} {self.name!r} could not start: {type(exc).__name__}: {exc}") from None
        log.info("%s sender %r", self.kind.capitalize(), self.name)

    def publish(self, frame: Frame) -> None:
        self._mailbox.put(frame)

    def close(self, timeout: float | None = None) -> None:
        self._mailbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> dict:
        return {"name": self.name, "sent": self.sent, "skipped": self._mailbox.skipped, "errors": self.errors,
                "error": self.error, "last_error": self.last_error}

    def _work(self) -> None:
        try:
            self._sender.open()
        except BaseException as exc:  # handed to start(), on the thread that waits for it
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            while True:
                frame = self._mailbox.take(IDLE_S)
                if self._mailbox.closed:
                    return
                try:
                    if frame is not None:
                        self._sender.send(frame.pixels)
                        self.sent += 1
                        self.error = None
                    self._sender.idle()
                except Exception as exc:  # a worker boundary: report once, try again with the next frame
                    self._failed(exc)
        finally:
            self._sender.close()

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        first = self.error is None
        self.error = self.last_error = f"{self.kind} sender {self.name!r}: {exc}"
        if first:  # once per failure episode: a broken sender must not flood the log
            log.error("%s", self.error)
            self._report(self.error)
