"""Live input: the Input TOP's image, each time it changes, into an input segment of this
process that the daemon polls (image-to-image; the daemon must run on this machine).

Every frame start (with Send Input on) the TOP's image is read with ``numpyArray(delayed=True)``
(the GPU download of this call lands at the next call, so the main thread never waits on the
GPU: the daemon sees an image one frame late) and compared with the last one written: an
unchanged image writes nothing. Mono (1 channel) and RG (2 channel) TOPs become RGBA. The segment is told to the daemon once, over HTTP on a worker thread (never the main
thread), and again after a reconnect.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ._client import client


def segment_name(comp) -> str:
    """This control COMP's input segment: the frame segment's name, '-input-', the COMP's id."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", str(comp.par.Shmname.eval()).strip() or "turbo-bridge")
    return f"{base}-input-{comp.id}"[:100]


def as_rgba(image: np.ndarray) -> np.ndarray:
    """A TOP's pixels (H x W x C, C 1-4, as ``numpyArray`` gives them) as H x W x 3 or 4:
    one channel is grey, two are red and green (a TOP's channels are r, g, b, a)."""
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 2:
        return np.concatenate([image, np.zeros_like(image[..., :1])], axis=2)
    return image


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
        if top is None:
            status("input", "choose an Input TOP")
            return
        image = top.numpyArray(delayed=True)
        if image is None:  # the first delayed download is not there yet (or the TOP has no image)
            status("input", f"waiting for an image from {top.path}")
            return
        image = as_rgba(image)
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
        def work() -> None:
            try:
                reply = call(client.HttpClient(url, token=token or None))
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
