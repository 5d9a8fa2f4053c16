"""Another program's Spout sender or Syphon server as an image slot's source: ``PUT /v1/input``
(``/v1/control/NAME``, ``/v1/style``) with ``{"spout": "SENDER"}`` or ``{"syphon": "SERVER"}``.

A ``TextureWatch`` receives on a thread of its own, where the receiver's graphics context lives
(``bridge.texshare``), checks each new frame against the upload limits and hashes it there, and
hands it to the event loop through a one-image slot: a frame the loop has not taken yet is
replaced by the next (counted as skipped), so a fast sender never queues work on the loop. Frames
are handed over only once the watch is ``activate``d, when it has become its slot's source: one
that lost a race with another request's source never shows a frame.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ...core.errors import ValidationError
from ...core.scene import InputImage
from ...texshare import libraries, link
from ...texshare.link import NotFound, Receiver, SharingError
from . import inputs

log = logging.getLogger(__name__)

RECEIVE_WAIT_S = 0.1  # one wait for a frame: how soon the watch notices it is stopped
RETRY_S = 1.0  # after a failed receive, before the next
STOP_WAIT_S = 10.0  # a receiver stuck in its library must not hold up a detach or the daemon's stop


class TextureWatch:
    """Frames of ``receiver``'s sender, each handed to ``deliver`` on the event loop."""

    def __init__(self, kind: str, receiver: Receiver, deliver: Callable[[InputImage], object], field: str):
        self.kind = kind
        self.name = receiver.name
        self.received = 0
        self.skipped = 0
        self.errors = 0
        self.error: str | None = None  # why no frames come now (the sender is gone, too large...)
        self._receiver = receiver
        self._deliver = deliver
        self._stopping = threading.Event()
        self._opened: Future[None] = Future()
        self._slot: InputImage | None = None
        self._slot_lock = threading.Lock()
        self._active = False  # frames wait in the slot until the watch is its image slot's source
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._work, name=f"{field}-{kind}", daemon=True)

    @classmethod
    async def open(cls, kind: str, name: object, own: str | None, deliver: Callable[[InputImage], object],
                   field: str) -> TextureWatch:
        """A started watch of sender ``name``, after the checks at the edge: a valid name, and not the
        daemon's own sender ``own`` (or a channel's ``own.CHANNEL``)."""
        if (problem := link.name_error(kind, name)) is not None:
            raise ValidationError(kind, problem)
        if own and (name == own or name.startswith(own + ".")):
            # Its own frames as its input would render without end, each frame making the next.
            raise ValidationError(kind, f"{name!r} is this daemon's own {kind} sender (--{kind}), not an input: "
                                        "name a sender of another program")
        watch = cls(kind, libraries.receiver(kind, name), deliver, field)
        await watch.start()
        return watch

    async def start(self) -> None:
        """Open the receiver on the watch's thread; a sender that is not there is a ValidationError
        listing the ones that are. ``Unavailable`` (no library here) goes to the caller as it is."""
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        try:
            await asyncio.wrap_future(self._opened)
        except (NotFound, SharingError) as exc:
            raise ValidationError(self.kind, str(exc)) from None
        except BaseException:  # Unavailable, or the request cancelled: the thread must not keep receiving
            self._stopping.set()
            raise

    def activate(self) -> None:
        """On the event loop, once this watch is its slot's source: from now on frames reach ``deliver``."""
        with self._slot_lock:
            self._active = True
            waiting = self._slot is not None
        if waiting:
            self._take()

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, STOP_WAIT_S)  # the receiver lets go on its own thread
        if self._thread.is_alive():
            log.warning("%s receiver %r did not stop within %.0f s; left to finish on its own", self.kind,
                        self.name, STOP_WAIT_S)

    def health(self) -> dict:
        return {"kind": self.kind, "name": self.name, "received": self.received, "skipped": self.skipped,
                "errors": self.errors, "error": self.error}

    def _work(self) -> None:
        try:
            self._receiver.open()
        except BaseException as exc:  # handed to start(), on the event loop
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            while not self._stopping.is_set():
                try:
                    pixels = self._receiver.receive(RECEIVE_WAIT_S)
                    image = None if pixels is None else self._checked(pixels)
                except Exception as exc:  # a worker boundary: report, retry later
                    self.errors += 1
                    self._trouble(f"{self.kind} {self.name!r}: {type(exc).__name__}: {exc}")
                    self._stopping.wait(RETRY_S)
                    continue
                if image is not None:
                    self._hand_over(image)
                elif self._receiver.error is not None:
                    self._trouble(self._receiver.error)
        finally:
            self._receiver.close()

    def _checked(self, pixels: np.ndarray) -> InputImage | None:
        height, width = pixels.shape[:2]
        if max(width, height) > inputs.MAX_INPUT_SIDE:
            self.errors += 1
            self._trouble(f"{self.kind} {self.name!r} sends {width}x{height}; input images must be at most "
                          f"{inputs.MAX_INPUT_SIDE} px a side (scale it down in the sending program)")
            return None
        return InputImage.from_pixels(pixels, self.kind)  # hashed here, off the event loop

    def _trouble(self, message: str) -> None:
        if self.error is None:  # once per episode: a sender that is gone must not flood the log
            log.warning("%s; retrying until it gives frames", message)
        self.error = message

    def _hand_over(self, image: InputImage) -> None:
        if self.error is not None:
            log.info("%s %r gives frames again", self.kind, self.name)
            self.error = None
        with self._slot_lock:
            waiting, self._slot = self._slot is not None, image
            active = self._active
        if waiting:
            self.skipped += 1
            return
        if not active:
            return  # kept in the slot for activate()
        try:
            self._loop.call_soon_threadsafe(self._take)
        except RuntimeError:  # the loop closed: the daemon is stopping
            self._stopping.set()

    def _take(self) -> None:
        with self._slot_lock:
            image, self._slot = self._slot, None
        if image is not None and not self._stopping.is_set():
            self.received += 1
            self._deliver(image)
