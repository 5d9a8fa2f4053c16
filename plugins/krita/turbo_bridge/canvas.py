"""Live input: the canvas (or the selection) as the daemon's input image, for image-to-image.

``capture`` runs on the GUI thread, only while the image is idle: it reads the merged image
without the reference layer (hidden for the read, so the daemon's own frames never feed back)
and only the selection's bounding box when there is a selection. ``InputSender`` does the rest
on its own thread: flatten over white (transparent canvas is paper), scale down to the frame
size, and ``PUT /v1/input``, latest-wins (a capture made while one is being sent replaces the
one waiting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bridge_client import BridgeHTTPError, HttpClient, to_rgba8
from .frames import fit, scale_bgra
from .layer import find_reference
from .workers import Outbox, Signals, describe


@dataclass(frozen=True)
class Capture:
    bgra: bytes  # rows top-first, Krita's B, G, R, A byte order
    width: int
    height: int


def capture(doc) -> Capture | None:
    """The canvas without the reference layer, or the selection's part of it (GUI thread)."""
    selection = doc.selection()
    if selection is not None and selection.width() > 0 and selection.height() > 0:
        x, y, width, height = selection.x(), selection.y(), selection.width(), selection.height()
    else:
        x, y, width, height = 0, 0, doc.width(), doc.height()
    reference = find_reference(doc)
    hide = reference is not None and reference.visible()
    if hide:
        reference.setVisible(False)
        doc.refreshProjection()
    try:
        data = bytes(doc.pixelData(x, y, width, height))
    finally:
        if hide:
            reference.setVisible(True)
            doc.refreshProjection()
    return Capture(data, width, height) if len(data) == width * height * 4 else None


@dataclass(frozen=True)
class ControlShot:
    """A layer to send as ControlNet ``name``'s control image, preprocessed by the daemon as asked."""

    shot: Capture
    name: str
    preprocess: str  # none (a depth map, lines as they are) or canny (the daemon finds the edges)
    scale: float


@dataclass(frozen=True)
class StyleShot:
    """A layer to send as the style image (IP-Adapter), steering with ``scale``."""

    shot: Capture
    scale: float


def capture_layer(doc, node) -> Capture | None:
    """One layer's pixels over the whole canvas, as painted (GUI thread; its visibility does not matter)."""
    width, height = doc.width(), doc.height()
    data = bytes(node.pixelData(0, 0, width, height))
    return Capture(data, width, height) if len(data) == width * height * 4 else None


def prepared(shot: Capture, frame_size: tuple[int, int] | None) -> np.ndarray:
    """RGBA8 over white, no larger than needed: fitted into the frame size (the daemon scales to
    it anyway), aspect kept."""
    bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
    if frame_size is not None:
        box = fit(shot.width, shot.height, *frame_size)
        if box.width < shot.width:
            bgra = np.frombuffer(scale_bgra(bgra, box.width, box.height), np.uint8).reshape(box.height, box.width, 4)
    alpha = bgra[..., 3:].astype(np.float32) / 255.0
    rgb = bgra[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return to_rgba8(np.concatenate([rgb + 0.5, np.full_like(alpha, 255.0)], axis=2).astype(np.uint8), bgra=True)


class InputSender(Outbox):
    """Sends captures to the daemon, newest first; ``clear`` drops the daemon's input."""

    CLEAR = "clear"

    def __init__(self, url: str, signals: Signals, channel: str = "main"):
        super().__init__("turbo-bridge input")
        self.client = HttpClient(url, timeout=5.0, channel=channel)
        self.signals = signals
        self.sent = 0
        self.frame_size: tuple[int, int] | None = None  # set by the GUI thread from the frames
        self._pending: Capture | str | None = None

    def submit(self, shot: Capture | ControlShot | StyleShot) -> None:
        with self._lock:
            self._pending = shot
        self._wake.set()

    def clear(self) -> None:
        with self._lock:
            self._pending = self.CLEAR
        self._wake.set()

    def _take(self):
        work, self._pending = self._pending, None
        return work

    def _deliver(self, work) -> None:
        try:
            if work == self.CLEAR:
                self.client.clear_input()
                self.signals.status.emit("live input off")
                return
            if isinstance(work, ControlShot):
                answer = self.client.put_input(prepared(work.shot, self.frame_size), control=work.name)
                self.client.patch({"controls": {work.name: {"preprocess": work.preprocess, "scale": work.scale}}})
                self.signals.status.emit(f"layer sent as control {work.name!r} ({answer['width']}x{answer['height']}, "
                                         f"{work.preprocess})")
                return
            if isinstance(work, StyleShot):  # the daemon scales it to its image encoder's size
                answer = self.client.put_input(prepared(work.shot, None), style=True)
                self.client.patch({"style_scale": work.scale})
                self.signals.status.emit(f"layer sent as style image ({answer['width']}x{answer['height']}, "
                                         f"scale {work.scale:g})")
                return
            answer = self.client.put_input(prepared(work, self.frame_size))
            self.sent += 1
            if answer["changed"]:
                self.signals.status.emit(f"canvas sent ({answer['width']}x{answer['height']})")
        except BridgeHTTPError as exc:
            self.signals.status.emit(f"input refused: {exc.message}")
        except OSError as exc:
            self.signals.status.emit(f"input not sent: {describe(exc)}")
