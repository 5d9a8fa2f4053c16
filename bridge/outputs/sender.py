"""What the outputs that send to other programs share (NDI, Spout, Syphon): ``publish`` leaves the
frame in a one-frame mailbox on the render thread, a worker thread of the output's own sends it,
and a failing send is counted, kept in ``error`` and reported once per failure episode."""

from __future__ import annotations

import logging
import threading

from ..core.frame import Frame
from ..core.output import ErrorReport
from .mailbox import Mailbox

log = logging.getLogger(__name__)


class MailboxSender:
    """The mailbox, the worker thread (running ``_work``) and the counters of a sending output."""

    def __init__(self, kind: str, name: str):
        self.kind = kind  # its key in /v1/health
        self.name = name
        self.sent = 0
        self.errors = 0
        self.error: str | None = None  # set while sends fail; a sent frame clears it
        self.last_error: str | None = None  # stays after recovery
        self._report: ErrorReport = lambda message: None
        self._mailbox = Mailbox()
        self._thread = threading.Thread(target=self._work, name=kind, daemon=True)

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
        raise NotImplementedError

    def _delivered(self) -> None:
        self.sent += 1
        self.error = None

    def _failed(self, message: str) -> None:
        self.errors += 1
        first = self.error is None
        self.error = self.last_error = message
        if first:  # once per failure episode: a broken sender must not flood the log
            log.error("%s", message)
            self._report(message)
