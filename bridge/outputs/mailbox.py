"""A one-frame mailbox between the render thread and an output's worker thread: the newest frame wins."""

from __future__ import annotations

import threading

from ..core.frame import Frame


class Mailbox:
    """``put`` (the render thread) never waits: it replaces a frame the worker has not taken yet,
    counted in ``skipped``. ``take`` (the worker) waits for a frame or the close."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._frame: Frame | None = None
        self.closed = False
        self.skipped = 0

    def put(self, frame: Frame) -> None:
        with self._wake:
            if self._frame is not None:
                self.skipped += 1
            self._frame = frame
            self._wake.notify()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame; None once closed, or after ``timeout`` s without one."""
        with self._wake:
            self._wake.wait_for(lambda: self._frame is not None or self.closed, timeout)
            if self.closed:
                return None
            frame, self._frame = self._frame, None
            return frame

    def put_back(self, frame: Frame) -> None:
        """A frame the worker could not deliver, to try again: kept unless a newer one came meanwhile."""
        with self._wake:
            if self._frame is None:
                self._frame = frame

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s (a back-off); True if closed meanwhile."""
        with self._wake:
            return self._wake.wait_for(lambda: self.closed, timeout)

    def close(self) -> None:
        with self._wake:
            self.closed = True
            self._wake.notify_all()
