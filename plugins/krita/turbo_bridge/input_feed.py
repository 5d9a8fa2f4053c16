"""Pictures out to the daemon, on Krita's GUI thread: the canvas as the input image, layers as
control or style images.

With live input on, the canvas is captured the way frames are written (idle only), at most
every ``INPUT_INTERVAL_MS`` and never more than a tenth of the GUI thread's time, and sent when
it changed. ``canvas.py`` reads the pixels; the connection's ``InputSender`` thread sends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .canvas import ControlShot, InputSender, StyleShot, capture, capture_layer
from .layer import is_idle
from .qt import QtCore

log = logging.getLogger(__name__)

INPUT_INTERVAL_MS = 200


class InputFeed(QtCore.QObject):
    """What one docker sends as pictures, through the sender of its connection (``attach``).

    ``host`` is ``Krita.instance()``; ``report`` puts a line in the docker's status."""

    def __init__(self, host, report: Callable[[str], None], retry_ms: int, parent=None):
        super().__init__(parent)
        self.host = host
        self.retry_ms = retry_ms
        self.live = False  # the canvas is the daemon's input image
        self.captures = 0
        self._report = report
        self._sender: InputSender | None = None  # the connection's; None while not connected
        self._last_capture: bytes | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._capture)

    def attach(self, sender: InputSender) -> None:
        """A new connection's sender: with live input on, the canvas goes out again at once."""
        self._sender = sender
        self._last_capture = None
        if self.live:
            self._timer.start(0)

    def detach(self) -> None:
        """Disconnected: nothing is captured until the next ``attach``."""
        self._sender = None
        self._timer.stop()

    def set_live(self, on: bool) -> None:
        """On: the canvas (or selection) becomes the daemon's input image; off: back to text-to-image."""
        self.live = on
        self._last_capture = None
        if on:
            self._timer.start(0)
        else:
            self._timer.stop()
            if self._sender is not None:
                self._sender.clear()

    def _capture(self) -> None:
        doc = self.host.activeDocument()
        if not self.live or self._sender is None:
            return
        if doc is None or not is_idle(doc):  # no document, or a stroke: look again soon
            self._timer.start(self.retry_ms if doc is not None else INPUT_INTERVAL_MS)
            return
        started = time.perf_counter()
        try:
            shot = capture(doc)
        except Exception as exc:  # a Qt slot: report, never let it reach Krita's event loop
            log.exception("capturing the canvas failed")
            self._report(f"could not read the canvas: {exc}")
            shot = None
        cost_ms = (time.perf_counter() - started) * 1000
        self.captures += 1
        if shot is not None and shot.bgra != self._last_capture:
            self._last_capture = shot.bgra
            self._sender.submit(shot)
        self._timer.start(max(INPUT_INTERVAL_MS, int(10 * cost_ms)))

    def send_layer_as_control(self, layer: str, name: str, preprocess: str, scale: float) -> bool:
        """Send the layer named ``layer`` as ControlNet ``name``'s control image (False: nothing to send)."""
        shot = self._layer_shot(layer if name.strip() else "",
                                "pick a layer and a ControlNet name (the daemon's --controlnet NAME) first")
        if shot is not None:
            self._sender.submit(ControlShot(shot, name.strip(), preprocess, scale))
        return shot is not None

    def send_layer_as_style(self, layer: str, scale: float) -> bool:
        """Send the layer named ``layer`` as the style image (IP-Adapter) at ``scale`` (False: nothing to send)."""
        shot = self._layer_shot(layer, "pick a layer to send as the style image first")
        if shot is not None:
            self._sender.submit(StyleShot(shot, scale))
        return shot is not None

    def _layer_shot(self, layer: str, missing: str):
        """The pixels of the layer named ``layer``, or None (and ``missing`` or why in the status)."""
        doc = self.host.activeDocument()
        node = doc.nodeByName(layer) if doc is not None and layer else None
        if node is None or self._sender is None:
            self._report(missing)
            return None
        shot = capture_layer(doc, node)
        if shot is None:
            self._report(f"could not read layer {layer!r} (8-bit RGBA only)")
        return shot
