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
from concurrent.futures import Future
from concurrent.futures import TimeoutError as OpenTimeout

from ..core.errors import BridgeError
from ..core.output import ErrorReport, OutputError
from ..texshare.link import Sender
from .sender import MailboxSender

log = logging.getLogger(__name__)

IDLE_S = 0.1  # while no frame comes: how often the sender answers other programs (Syphon's discovery)
OPEN_TIMEOUT_S = 30.0  # making a graphics context takes milliseconds; a stuck driver must not hang the start


class TextureOutput(MailboxSender):
    """An output that shares each frame through ``sender`` (a Spout sender or a Syphon server)."""

    def __init__(self, kind: str, sender: Sender):
        super().__init__(kind, sender.name)  # kind: "spout" or "syphon"
        self._sender = sender
        self._opened: Future[None] = Future()

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
                        self._delivered()
                    self._sender.idle()
                except Exception as exc:  # a worker boundary: report once, try again with the next frame
                    self._failed(f"{self.kind} sender {self.name!r}: {exc}")
        finally:
            self._sender.close()
