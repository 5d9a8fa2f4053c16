"""Frames made ready for a document: fitted to its size (aspect kept, centred), BGRA bytes.

Krita stores 8-bit RGBA pixels as B, G, R, A in memory: the byte order of ``QImage``'s
``Format_ARGB32`` on little-endian machines, and of ``ShmReader(bgra=True)``. Scaling uses
``QImage`` (smooth, safe off the GUI thread), so this runs on the frame worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .qt import QtCore, QtGui

ARGB32 = QtGui.QImage.Format.Format_ARGB32  # B, G, R, A bytes on little-endian machines


@dataclass(frozen=True)
class Placement:
    """Where a fitted frame lands in the document, in document pixels."""

    x: int
    y: int
    width: int
    height: int

    def margins(self, doc_width: int, doc_height: int) -> list[Placement]:
        """The (at most two) strips of the document the frame leaves uncovered."""
        strips = [Placement(0, 0, doc_width, self.y),
                  Placement(0, self.y + self.height, doc_width, doc_height - self.y - self.height),
                  Placement(0, self.y, self.x, self.height),
                  Placement(self.x + self.width, self.y, doc_width - self.x - self.width, self.height)]
        return [s for s in strips if s.width > 0 and s.height > 0]


def fit(frame_width: int, frame_height: int, doc_width: int, doc_height: int) -> Placement:
    """The largest rectangle of the frame's aspect that fits the document, centred."""
    if min(frame_width, frame_height, doc_width, doc_height) <= 0:
        raise ValueError(f"cannot fit a {frame_width}x{frame_height} frame into {doc_width}x{doc_height}")
    scale = min(doc_width / frame_width, doc_height / frame_height)
    width = min(doc_width, max(1, round(frame_width * scale)))
    height = min(doc_height, max(1, round(frame_height * scale)))
    return Placement((doc_width - width) // 2, (doc_height - height) // 2, width, height)


@dataclass(frozen=True)
class Picture:
    """One frame fitted to one document size: ``bgra`` covers ``placement``, rows top-first."""

    seq: int
    frame: np.ndarray  # the frame as received, H x W x 4 BGRA (to fit it again for another size)
    doc_width: int
    doc_height: int
    placement: Placement
    bgra: bytes

    @property
    def doc_size(self) -> tuple[int, int]:
        return self.doc_width, self.doc_height


def place(frame_bgra: np.ndarray, seq: int, doc_width: int, doc_height: int) -> Picture:
    """Fit a BGRA frame to a document; an equal size keeps the frame's bytes as they are."""
    height, width = frame_bgra.shape[:2]
    placement = fit(width, height, doc_width, doc_height)
    if (placement.width, placement.height) == (width, height):
        data = np.ascontiguousarray(frame_bgra).tobytes()
    else:
        data = scale_bgra(frame_bgra, placement.width, placement.height)
    return Picture(seq, frame_bgra, doc_width, doc_height, placement, data)


def scale_bgra(frame_bgra: np.ndarray, width: int, height: int) -> bytes:
    """Smoothly resample H x W x 4 BGRA pixels to ``width`` x ``height``; BGRA bytes back."""
    src_height, src_width = frame_bgra.shape[:2]
    data = np.ascontiguousarray(frame_bgra, dtype=np.uint8).tobytes()
    image = QtGui.QImage(data, src_width, src_height, src_width * 4, ARGB32)
    scaled = image.scaled(width, height, QtCore.Qt.AspectRatioMode.IgnoreAspectRatio,
                          QtCore.Qt.TransformationMode.SmoothTransformation)
    return image_bytes(scaled.convertToFormat(ARGB32))


def image_bytes(image) -> bytes:
    """The rows of an ARGB32 ``QImage`` without padding (BGRA bytes)."""
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    bits = image.constBits()
    bits.setsize(stride * height)
    rows = np.frombuffer(bits, np.uint8).reshape(height, stride)[:, :width * 4]
    return rows.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes (the daemon's ``/v1/frame.png``) to H x W x 4 BGRA pixels."""
    image = QtGui.QImage.fromData(data, "PNG")
    if image.isNull():
        raise ValueError("the daemon sent a frame that is not a readable PNG")
    image = image.convertToFormat(ARGB32)
    return np.frombuffer(image_bytes(image), np.uint8).reshape(image.height(), image.width(), 4).copy()
