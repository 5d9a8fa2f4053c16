"""Live input: the Input TOP's image, each time it changes, into an input segment of this
process that the daemon polls (image-to-image; the daemon must run on this machine).

Every frame start (with Send Input on) the TOP's image is read with ``numpyArray()`` (which
cooks it if it needs to) and compared with the last one written: an unchanged image writes
nothing. The segment is told to the daemon once, over HTTP on a worker thread (never the main
thread), and again after a reconnect.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ._client import client
from .control import channel


def segment_name(comp) -> str:
    """This control COMP's input segment: the frame segment's name, '-input-', the COMP's id."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", str(comp.par.Shmname.eval()).strip() or "turbo-bridge")
    return f"{base}-input-{comp.id}"[:100]


class InputSender:
    def __init__(self, comp):
        self.comp = comp
        self.writer: client.ShmInputWriter | None = None
        self.written = 0
        self._last: np.ndarray | None = None
        self._attached_to: str | None = None  # the daemon URL the segment was told to
        self._outcome: str | None = None  # set by the worker thread, shown by the main thread
        self._worker: threading.Thread | None = None

    def frame_start(self, url: str, token: str, status) -> None:
        par = self.comp.par
        if not par.Sendinput.eval():
            if self.writer is not None:
                self.stop(url, token)
                status("input", "off")
            return
        if str(par.Source.eval()) != "shm":
            status("input", "Send Input needs Frame Source shm: the daemon polls a segment on this machine")
            return
        top = par.Inputtop.eval()
        image = top.numpyArray() if top is not None else None
        if image is None:
            status("input", "choose an Input TOP (one that has an image)")
            return
        if self._last is None or image.shape != self._last.shape or not np.array_equal(image, self._last):
            self._write(image)
        if self._attached_to != url and (self._worker is None or not self._worker.is_alive()):
            self._attached_to = url
            self._run(lambda client: client.attach_input(self.writer.name), url, token)
        if self._outcome is not None:
            status("input", self._outcome)

    def _write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        geometry = self.writer.geometry if self.writer is not None else None
        if geometry is None or width > geometry.max_width or height > geometry.max_height:
            self._close_writer()
            self.writer = client.ShmInputWriter(segment_name(self.comp), width, height)
            self._attached_to = None  # a new segment: the daemon must attach it again
        self.writer.write(image, flip=True)  # TOPs hold rows bottom-first, floats 0-1
        self._last = image.copy()
        self.written += 1

    def _run(self, call, url: str, token: str) -> None:
        name = channel(self.comp)  # here, on TouchDesigner's thread: parameters are read nowhere else

        def work() -> None:
            try:
                reply = call(client.HttpClient(url, token=token or None, channel=name))
                self._outcome = f"sending to {reply.get('shm') or 'daemon'}" if "shm" in reply else "off"
            except (client.BridgeHTTPError, OSError) as exc:  # no daemon yet: the next reconnect tries again
                self._outcome = f"daemon did not take the input: {exc}"

        self._worker = threading.Thread(target=work, name="turbo-bridge-input", daemon=True)
        self._worker.start()

    def reattach(self) -> None:
        """After a reconnect (a restarted daemon forgets the segment): tell the daemon again."""
        self._attached_to = None

    def stop(self, url: str, token: str) -> None:
        """Back to text-to-image: the daemon drops the input, the segment goes."""
        if self._attached_to is not None:
            self._run(lambda client: client.clear_input(), url, token)
        self._attached_to = None
        self._close_writer()

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self._last = None, None

    def join(self, timeout: float) -> bool:
        if self._worker is not None:
            self._worker.join(timeout)
            return not self._worker.is_alive()
        return True
