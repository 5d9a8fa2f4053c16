"""Live input: the Input TOP's image, each time it changes, into an input segment of this
process that the daemon polls (image-to-image; the daemon must run on this machine). The
Control page's TOPs go the same way, each into a control segment of its ControlNet name
(``ControlSender``), with that ControlNet's scale sent when it changes, and the Style page's TOP
into a style segment (``StyleSender``).

Every frame start (with Send Input on) costs the main thread little and no more at 1920x1080:
the TOP is scaled on TouchDesigner's GPU to what the daemon uses and downloaded only when it
changed (``downscale.py``, with ``numpyArray(delayed=True)``: the main thread never waits on the
GPU, the daemon sees an image one frame late); converting it to 8 bits, dropping an unchanged one
and writing the segment happen on the sender's uploader thread (``upload.py``). The segment is
told to the daemon over HTTP on a worker thread (never the main thread), again after a
reconnect and when the uploader made a larger segment.
"""

from __future__ import annotations

import re
import threading

from ._client import client
from .control import channel
from .downscale import Downscaler
from .upload import Uploader

CONTROL_SLOTS = (1, 2)  # Control TOPs on the Control page (network.py)
STYLE_LIMIT = (512, 512)  # a style image's largest size: the image encoder sees 224 x 224


def segment_name(comp) -> str:
    """This control COMP's input segment: the frame segment's name, '-input-', the COMP's id
    (the uploader appends a serial)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", str(comp.par.Shmname.eval()).strip() or "turbo-bridge")
    return f"{base}-input-{comp.id}"[:90]


class InputSender:
    control: str | None = None  # None: the input image; a name: that ControlNet's control image
    style = False  # True: the style image (StyleSender)
    what = role = "input"
    keep_aspect = False  # the daemon stretches input (and control) images to the frame

    def __init__(self, comp):
        self.comp = comp
        self.scaler = Downscaler(comp, self.role)
        self.uploader: Uploader | None = None
        self._attached: tuple | None = None  # (daemon URL, segment generation) the daemon was told
        self._outcome: str | None = None  # set by the worker thread, shown by the main thread
        self._worker: threading.Thread | None = None

    @property
    def written(self) -> int:
        return self.uploader.written if self.uploader is not None else 0

    def _wanted(self):
        """(sending on, the TOP)."""
        return bool(self.comp.par.Sendinput.eval()), self.comp.par.Inputtop.eval()

    def _segment_name(self) -> str:
        return segment_name(self.comp)

    def _limit(self) -> tuple[int, int]:
        """The largest image worth sending: the frame's size."""
        return int(self.comp.par.Width.eval()), int(self.comp.par.Height.eval())

    def frame_start(self, url: str, token: str, status) -> None:
        par = self.comp.par
        on, top = self._wanted()
        if not on:
            if self.uploader is not None:
                self.stop(url, token)
                status(self.what, "off")
            return
        if str(par.Source.eval()) != "shm":
            status(self.what, "Send Input needs Frame Source shm: the daemon polls a segment on this machine")
            return
        if top is None:
            status(self.what, "choose an Input TOP")
            return
        if self.scaler.operators() is None:
            status(self.what, f"no {self.role}_select / {self.role}_fit TOPs in {self.comp.path}: "
                              "run the setup script again (a new network)")
            return
        if self.uploader is None:
            self.uploader = Uploader(self._segment_name())
            self.scaler.forget()  # the new uploader gets the current image
        image = self.scaler.take(top, self._limit(), self.keep_aspect)
        if image is not None:  # a new image (None: unchanged, or its delayed download not back yet)
            self.uploader.submit(image)
        uploader = self.uploader
        if uploader.error is not None:
            status(self.what, f"could not write the {self.what} segment: {uploader.error}")
            return
        if uploader.generation == 0:
            status(self.what, f"waiting for an image from {top.path}")
            return
        wanted = (url, uploader.generation)
        if self._attached != wanted and (self._worker is None or not self._worker.is_alive()):
            self._attached = wanted
            name, control, style = uploader.name, self.control, self.style
            self._run(lambda client: client.attach_input(name, control=control, style=style), url, token)
        if self._outcome is not None:
            status(self.what, self._outcome)

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
        self._attached = None

    def stop(self, url: str, token: str) -> None:
        """Back to text-to-image: the daemon drops the input; the uploader ends and unlinks the segment."""
        if self._attached is not None:
            control, style = self.control, self.style
            self._run(lambda client: client.clear_input(control=control, style=style), url, token)
        self._attached = None
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None

    def join(self, timeout: float) -> bool:
        if self._worker is not None:
            self._worker.join(timeout)
            return not self._worker.is_alive()
        return True


class StyleSender(InputSender):
    """The Style page's TOP into a style segment (the daemon's --ip-adapter style image); its scale,
    Style Scale, travels over OSC like the page's other parameters."""

    style = True
    what = role = "style"
    keep_aspect = True  # the image encoder crops it: its aspect is the daemon's business

    def _wanted(self):
        top = self.comp.par.Styletop.eval()
        return top is not None, top

    def _segment_name(self) -> str:
        return segment_name(self.comp).replace("-input-", "-style-")

    def _limit(self) -> tuple[int, int]:
        return STYLE_LIMIT


class ControlSender(InputSender):
    """Control page slot N: its TOP into a control segment of the ControlNet named there, and its
    scale (``controls`` NAME -> scale) whenever it changes."""

    def __init__(self, comp, slot: int):
        self.slot = slot
        self.what = self.role = f"control{slot}"
        super().__init__(comp)
        self._scale_sent: tuple[str, float] | None = None

    def _wanted(self):
        top = getattr(self.comp.par, f"Control{self.slot}top").eval()
        return self.control is not None and top is not None, top

    def _segment_name(self) -> str:
        return segment_name(self.comp).replace("-input-", f"-control{self.slot}-")

    def frame_start(self, url: str, token: str, status) -> None:
        name = str(getattr(self.comp.par, f"Control{self.slot}name").eval()).strip() or None
        if name != self.control:  # another ControlNet (or none): the old one's image is dropped first
            if self.control is not None:
                self.stop(url, token)
            self.control, self._scale_sent = name, None
        super().frame_start(url, token, status)
        if self.control is None or self.uploader is None:
            return
        scale = float(getattr(self.comp.par, f"Control{self.slot}scale").eval())
        wanted = (self.control, scale)
        if wanted != self._scale_sent and (self._worker is None or not self._worker.is_alive()):
            self._scale_sent = wanted
            self._run(lambda client: client.patch({"controls": {wanted[0]: wanted[1]}}), url, token)
