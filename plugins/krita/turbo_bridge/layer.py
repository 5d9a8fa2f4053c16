"""The reference layer in a Krita document, and "keep as layer". GUI thread only.

Facts of Krita's Python API this relies on (checked in Krita 5.1.5 and its sources):
``Node.setPixelData`` copies raw bytes in the layer's own pixel format (B, G, R, A for 8-bit
RGBA), is not undoable and does not update the canvas; ``Document.refreshProjection`` does,
synchronously; ``Node.addChildNode`` is one undoable "Add Layer" step. ``setPixelData`` refuses
short data with only a warning (Krita 5.1 returns nothing, 5.2+ False), so sizes are checked here.
"""

from __future__ import annotations

import logging

from .frames import Picture, Placement

log = logging.getLogger(__name__)

REFERENCE_NAME = "turbo-bridge reference"
PIXEL_FORMAT = ("RGBA", "U8")  # Krita's colour model and depth ids for 8-bit RGBA


class DocumentError(Exception):
    """The document cannot take the frame; the message says what to do."""


def check_format(item, what: str) -> None:
    model, depth = item.colorModel(), item.colorDepth()
    if (model, depth) != PIXEL_FORMAT:
        raise DocumentError(f"{what} is {model}/{depth}; turbo-bridge frames need 8-bit RGBA "
                            "(Image > Convert Image Color Space... > RGB/Alpha, 8-bit integer)")


def write(node, data: bytes, rect: Placement) -> None:
    """``setPixelData`` with the size Krita expects checked first (it only warns on short data)."""
    expected = rect.width * rect.height * 4
    if len(data) != expected:
        raise ValueError(f"{len(data)} bytes for a {rect.width}x{rect.height} BGRA rectangle; expected {expected}")
    if node.setPixelData(data, rect.x, rect.y, rect.width, rect.height) is False:  # Krita 5.2+
        raise DocumentError(f"Krita refused the pixels for layer {node.name()!r}")


def find_reference(doc):
    node = doc.nodeByName(REFERENCE_NAME)
    return node if node is not None and node.type() == "paintlayer" else None


def opacity_byte(percent: int) -> int:
    return round(max(0, min(100, percent)) * 255 / 100)


class ReferenceLayer:
    """Keeps one locked paint layer per document up to date with the newest picture."""

    def __init__(self, opacity_percent: int = 60):
        self.opacity_percent = opacity_percent

    def show(self, doc, picture: Picture) -> None:
        """Write ``picture`` into the document's reference layer (made on first use), in place."""
        check_format(doc, "this document")
        if picture.doc_size != (doc.width(), doc.height()):
            raise ValueError(f"picture fitted for {picture.doc_size}, document is {doc.width()}x{doc.height()}")
        node = find_reference(doc) or self._create(doc)
        check_format(node, f"layer {REFERENCE_NAME!r}")
        for strip in picture.placement.margins(*picture.doc_size):  # clear what an older frame left there
            write(node, bytes(strip.width * strip.height * 4), strip)
        write(node, picture.bgra, picture.placement)

    def set_opacity(self, doc, percent: int) -> bool:
        """Change the layer's opacity; True if the document has the layer (then refresh it)."""
        self.opacity_percent = percent
        node = find_reference(doc) if doc is not None else None
        if node is not None:
            node.setOpacity(opacity_byte(percent))
        return node is not None

    def _create(self, doc):
        previous = doc.activeNode()
        node = doc.createNode(REFERENCE_NAME, "paintlayer")
        node.setLocked(True)  # a reference to paint beside, never on
        node.setOpacity(opacity_byte(self.opacity_percent))
        root = doc.rootNode()
        children = root.childNodes()
        root.addChildNode(node, children[-1] if children else None)  # on top of the painting
        if previous is not None:  # keep painting where you were, not on the locked layer
            doc.setActiveNode(previous)
        log.info("created layer %r", REFERENCE_NAME)
        return node


def keep(doc, picture: Picture, name: str):
    """A normal, unlocked paint layer holding ``picture``, added in one undoable step.

    The pixels go in before the layer joins the document, so undo removes the layer and redo
    brings it back with them. It lands beside the reference layer on the painting's side: just
    under it, or just above it when the reference is the lowest layer of its group (dragged under
    the painting). ``addChildNode(node, above)`` only places a layer above a sibling or on top, so
    under a lowest layer is out of reach in one undo step. Without a reference layer: on top."""
    check_format(doc, "this document")
    if picture.doc_size != (doc.width(), doc.height()):
        raise ValueError(f"picture fitted for {picture.doc_size}, document is {doc.width()}x{doc.height()}")
    node = doc.createNode(name, "paintlayer")
    write(node, picture.bgra, picture.placement)
    reference = find_reference(doc)
    if reference is None:
        doc.rootNode().addChildNode(node, None)
        return node
    parent = reference.parentNode()
    siblings = parent.childNodes()  # bottom first; wrappers compare equal when the layer is the same
    index = next(i for i, sibling in enumerate(siblings) if sibling == reference)
    parent.addChildNode(node, siblings[index - 1] if index > 0 else reference)
    return node


def is_idle(doc) -> bool:
    """True when no stroke or update is running (checked without waiting)."""
    if hasattr(doc, "isIdle"):  # Krita 5.2+
        return doc.isIdle()
    if doc.tryBarrierLock():
        doc.unlock()
        return True
    return False
