"""Spout (Windows) through SpoutGL 0.1.1, pybind11 over the Spout 2.007 SDK: a sender of the
daemon's frames (``SpoutSender``) and a receiver of another program's (``SpoutReceiver``).

Spout shares DirectX 11 textures and SpoutGL reaches them from OpenGL: each side makes its own
hidden OpenGL window and context (``createOpenGL``) on the thread that uses it, where Spout's
calls find it as the current context (``OpenSpout`` fails without one: nothing is sent).
Pixels go as ``GL_RGBA`` bytes with ``invert`` False: Spout's shared texture keeps DirectX's
row order, top row first, which is the frames' own; a receiver asks for them the same way.
"""

from __future__ import annotations

import time

import numpy as np

from .link import NotFound, SharingError, listed, unavailable

RECEIVE_POLL_S = 1 / 240  # Spout has no frame callback: a receiver looks this often (cheap without a new frame)
UNCOUNTED_POLL_S = 1 / 60  # a sender without frame counting makes every look a copy: look less often


def load(use: str):
    """SpoutGL, its GL_RGBA and isBufferEmpty; ``Unavailable`` in one line where it cannot be had."""
    try:
        import SpoutGL
        from SpoutGL.enums import GL_RGBA
        from SpoutGL.helpers import isBufferEmpty
    except ImportError as exc:
        raise unavailable(use, "SpoutGL", "Windows", "spout", exc) from None
    return SpoutGL, GL_RGBA, isBufferEmpty


def _opengl(spout, role: str, name: str):
    """A hidden OpenGL window and context of this thread for a SpoutGL sender or receiver."""
    if not spout.createOpenGL():
        raise SharingError(f"Spout {role} {name!r}: no OpenGL context could be made on this machine "
                           "(Spout needs a graphics driver with OpenGL and DirectX 11)")
    return spout


class SpoutSender:
    """Shares each frame as the Spout sender ``name``."""

    def __init__(self, name: str):
        self.name = name
        self._sender = None
        self._rgba = 0

    def open(self) -> None:
        spout_gl, self._rgba, _ = load("--spout")
        sender = _opengl(spout_gl.SpoutSender(), "sender", self.name)
        # Spout would quietly send as NAME_1 next to a sender already called NAME: refuse instead,
        # so receivers set to NAME get what they expect (as a taken segment name is refused).
        if sender.getSenderInfo(self.name) is not None:
            sender.closeOpenGL()
            raise SharingError(f"a Spout sender named {self.name!r} exists already (another program or daemon); "
                               "choose another --spout name (or channel name)")
        sender.setSenderName(self.name)
        self._sender = sender

    def send(self, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        if not self._sender.sendImage(np.ascontiguousarray(pixels), width, height, self._rgba, False, 0):
            raise SharingError(f"Spout refused a {width}x{height} frame for sender {self.name!r} "
                               "(Spout's log, SpoutSettings, says why)")
        self._sender.setFrameSync(self.name)  # wakes receivers that wait on the sender's frames

    def idle(self) -> None:
        pass  # Spout senders are found through shared memory: nothing to answer between frames

    def close(self) -> None:
        self._sender.releaseSender()
        self._sender.closeOpenGL()


class SpoutReceiver:
    """Frames of the Spout sender ``name`` (a TouchDesigner Syphon Spout Out TOP, Resolume, OBS...)."""

    def __init__(self, name: str):
        self.name = name
        self.error: str | None = None
        self._receiver = None
        self._buffer: np.ndarray | None = None
        self._resized = False
        self._rgba = 0
        self._is_empty = None
        self._poll_s = RECEIVE_POLL_S

    def open(self) -> None:
        spout_gl, self._rgba, self._is_empty = load('{"spout": SENDER} images')
        receiver = _opengl(spout_gl.SpoutReceiver(), "receiver", self.name)
        senders = tuple(receiver.getSenderList())
        if self.name not in senders:
            receiver.closeOpenGL()
            raise NotFound(f"no Spout sender named {self.name!r}; senders now: {listed(senders)}", senders)
        receiver.setReceiverName(self.name)  # only this one: Spout waits for it if it goes away
        self._poll_s = RECEIVE_POLL_S if receiver.isFrameCountEnabled() else UNCOUNTED_POLL_S
        self._receiver = receiver

    def receive(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + timeout
        while (pixels := self._look()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(self._poll_s, left))  # polled: Spout offers no callback for a new frame
        return pixels

    def _look(self) -> np.ndarray | None:
        receiver = self._receiver
        received = receiver.receiveImage(self._buffer, self._rgba, False, 0)
        if receiver.isUpdated():  # connected, or the sender's size changed: receive into a new buffer
            self._buffer = np.zeros((receiver.getSenderHeight(), receiver.getSenderWidth(), 4), np.uint8)
            self._resized = True
            return None
        if not received:
            if self._buffer is not None:
                self.error = f"Spout sender {self.name!r} is gone; waiting for it to come back"
            return None
        self.error = None
        if self._buffer is None or not receiver.isFrameNew():
            return None
        # The first image after a new buffer can come back all zeros (SpoutGL's own test skips it).
        if self._resized and self._is_empty(self._buffer):
            return None
        self._resized = False
        return self._buffer.copy()

    def close(self) -> None:
        self._receiver.releaseReceiver()
        self._receiver.closeOpenGL()
