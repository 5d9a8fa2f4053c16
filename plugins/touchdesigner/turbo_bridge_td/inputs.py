"""Live input: the Input TOP's image, each time it changes, into an input segment of this
process that the daemon polls (image-to-image; the daemon must run on this machine). The
Control page's TOPs go the same way, each into a control segment of its ControlNet name
(``ControlSender``), with that ControlNet's scale sent when it changes, and the Style page's TOP
into a style segment (``StyleSender``).

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
from .control import channel

CONTROL_SLOTS = (1, 2)  # Control TOPs on the Control page (network.py)


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
    control: str | None = None  # None: the input image; a name: that ControlNet's control image
    style = False  # True: the style image (StyleSender)
    what = "input"

    def __init__(self, comp):
        self.comp = comp
        self.writer: client.ShmInputWriter | None = None
        self.written = 0
        self._last: np.ndarray | None = None
        self._attached_to: str | None = None  # the daemon URL the segment was told to
        self._outcome: str | None = None  # set by the worker thread, shown by the main thread
        self._worker: threading.Thread | None = None

    def _wanted(self):
        """(sending on, the TOP)."""
        return bool(self.comp.par.Sendinput.eval()), self.comp.par.Inputtop.eval()

    def _segment_name(self) -> str:
        return segment_name(self.comp)

    def frame_start(self, url: str, token: str, status) -> None:
        par = self.comp.par
        on, top = self._wanted()
        if not on:
            if self.writer is not None:
                self.stop(url, token)
                status(self.what, "off")
            return
        if str(par.Source.eval()) != "shm":
            status(self.what, "Send Input needs Frame Source shm: the daemon polls a segment on this machine")
            return
        if top is None:
            status(self.what, "choose an Input TOP")
            return
        image = top.numpyArray(delayed=True)
        if image is None:  # the first delayed download is not there yet (or the TOP has no image)
            status(self.what, f"waiting for an image from {top.path}")
            return
        image = as_rgba(image)
        if self._last is None or image.shape != self._last.shape or not np.array_equal(image, self._last):
            self._write(image)
        if self._attached_to != url and (self._worker is None or not self._worker.is_alive()):
            self._attached_to = url
            name, control, style = self.writer.name, self.control, self.style
            self._run(lambda client: client.attach_input(name, control=control, style=style), url, token)
        if self._outcome is not None:
            status(self.what, self._outcome)

    def _write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        geometry = self.writer.geometry if self.writer is not None else None
        if geometry is None or width > geometry.max_width or height > geometry.max_height:
            self._close_writer()
            self.writer = client.ShmInputWriter(self._segment_name(), width, height)
            self._attached_to = None  # a new segment: the daemon must attach it again
        self.writer.write(image, flip=True)  # TOPs hold rows bottom-first, floats 0-1
        self._last = image.copy()
        self.written += 1

    def _run(self, call, url: str, token: str) -> None:
        name = channel(self.comp)  # here, on TouchDesigner's thread: parameters are read nowhere else

        def work() -> None:
            try:
                reply = call(client.HttpClient(url, token=token or None, channel=name))
                if "shm" in reply or "cleared" in reply:  # (a scale change's reply leaves the status)
                    self._outcome = f"sending to {reply.get('shm') or 'daemon'}" if "shm" in reply else "off"
            except (client.BridgeHTTPError, OSError) as exc:  # no daemon yet: the next reconnect tries again
                self._outcome = f"daemon did not take the {self.what}: {exc}"

        self._worker = threading.Thread(target=work, name="turbo-bridge-input", daemon=True)
        self._worker.start()

    def reattach(self) -> None:
        """After a reconnect (a restarted daemon forgets the segment): tell the daemon again."""
        self._attached_to = None

    def stop(self, url: str, token: str) -> None:
        """Back to text-to-image: the daemon drops the input, the segment goes."""
        if self._attached_to is not None:
            control, style = self.control, self.style
            self._run(lambda client: client.clear_input(control=control, style=style), url, token)
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


class StyleSender(InputSender):
    """The Style page's TOP into a style segment (the daemon's --ip-adapter style image); its scale,
    Style Scale, travels over OSC like the page's other parameters."""

    style = True
    what = "style"

    def _wanted(self):
        top = self.comp.par.Styletop.eval()
        return top is not None, top

    def _segment_name(self) -> str:
        return segment_name(self.comp).replace("-input-", "-style-")[:100]


class ControlSender(InputSender):
    """Control page slot N: its TOP into a control segment of the ControlNet named there, and its
    scale (``controls`` NAME -> scale) whenever it changes."""

    def __init__(self, comp, slot: int):
        super().__init__(comp)
        self.slot = slot
        self.what = f"control{slot}"
        self._scale_sent: tuple[str, float] | None = None

    def _wanted(self):
        top = getattr(self.comp.par, f"Control{self.slot}top").eval()
        return self.control is not None and top is not None, top

    def _segment_name(self) -> str:
        base = segment_name(self.comp).replace("-input-", f"-control{self.slot}-")
        return base[:100]

    def frame_start(self, url: str, token: str, status) -> None:
        name = str(getattr(self.comp.par, f"Control{self.slot}name").eval()).strip() or None
        if name != self.control:  # another ControlNet (or none): the old one's image is dropped first
            if self.control is not None:
                self.stop(url, token)
            self.control, self._scale_sent = name, None
        super().frame_start(url, token, status)
        if self.control is None or self.writer is None:
            return
        scale = float(getattr(self.comp.par, f"Control{self.slot}scale").eval())
        wanted = (self.control, scale)
        if wanted != self._scale_sent and (self._worker is None or not self._worker.is_alive()):
            self._scale_sent = wanted
            self._run(lambda client: client.patch({"controls": {wanted[0]: wanted[1]}}), url, token)
