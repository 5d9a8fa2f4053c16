"""A stand-in for the part of Krita's Python API (module ``krita``) the plugin calls.

Modelled on Krita 5.1.5 as observed (a probe run in the Debian package) and on libkis'
sources: ``setPixelData`` copies raw bytes in the layer's pixel format (B, G, R, A for 8-bit
RGBA), returns None and refuses short data with only a warning; it changes neither the undo
stack nor the canvas, which ``refreshProjection`` recomposites; ``addChildNode`` is one "Add
Layer" undo step; ``above=None`` adds on top. Nodes and documents are wrappers as in libkis:
``Krita.activeDocument()``, ``documents()``, ``childNodes()`` and ``nodeByName()`` make a new one
on every call (``Krita.cpp``: ``new Document(...)``); two wrappers of one document or layer are
equal with ``==`` and, as in Krita 5.1.5 (probed: "unhashable type: 'Document'"), unhashable, so
neither ``id()`` nor a dict key can stand for a document. Stricter than Krita on purpose: every
call must come from the main thread, and writes must stay inside the image.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid

import numpy as np

if "PyQt6.QtCore" in sys.modules:  # Krita 6's krita module is built on PyQt6, Krita 5's on PyQt5
    from PyQt6 import QtCore, QtWidgets
else:
    from PyQt5 import QtCore, QtWidgets

log = logging.getLogger("krita")
PIXEL_SIZE = {"U8": 4, "U16": 8, "F16": 8, "F32": 16}


def _gui_thread_only() -> None:
    assert threading.current_thread() is threading.main_thread(), "Krita's API called off the GUI thread"


class _Layer:
    def __init__(self, doc: Document, name: str, kind: str):
        self.doc, self.name, self.kind = doc, name, kind
        self.id = uuid.uuid4()
        self.locked, self.visible, self.opacity = False, True, 255
        self.model, self.depth = doc._model, doc._depth
        size = PIXEL_SIZE[self.depth]
        self.bytes = np.zeros((doc._height, doc._width * size), np.uint8)  # raw pixel bytes, rows top-first
        self.children: list[_Layer] = []
        self.parent: _Layer | None = None


class Node:
    """A wrapper, like libkis' Node: a new one per call, equal when the layer is the same."""

    def __init__(self, layer: _Layer):
        self._layer = layer

    def __eq__(self, other):
        return isinstance(other, Node) and other._layer is self._layer

    __hash__ = None  # sip: a class with operator== and no hash is unhashable (Krita 5.1.5: 'GroupLayer')

    def name(self): _gui_thread_only(); return self._layer.name  # noqa: E702  (one line a method, as the rest)
    def setName(self, name): _gui_thread_only(); self._layer.name = name  # noqa: E702  (one line a method, as the rest)
    def type(self): return self._layer.kind
    def uniqueId(self): return self._layer.id
    def locked(self): return self._layer.locked
    def setLocked(self, value): _gui_thread_only(); self._layer.locked = bool(value)  # noqa: E702  (one line a method, as the rest)
    def visible(self): return self._layer.visible
    def setVisible(self, value): _gui_thread_only(); self._layer.visible = bool(value)  # noqa: E702  (one line a method, as the rest)
    def opacity(self): return self._layer.opacity
    def colorModel(self): return self._layer.model
    def colorDepth(self): return self._layer.depth

    def setOpacity(self, value: int):
        _gui_thread_only()
        self._layer.opacity = max(0, min(255, int(value)))

    def childNodes(self):
        return [Node(child) for child in self._layer.children]  # bottom first, as Krita lists them

    def parentNode(self):
        return Node(self._layer.parent) if self._layer.parent is not None else None

    def addChildNode(self, child: Node, above: Node | None):
        _gui_thread_only()
        layer, siblings = child._layer, self._layer.children
        index = len(siblings) if above is None else siblings.index(above._layer) + 1

        def redo():
            siblings.insert(index, layer)
            layer.parent = self._layer

        def undo():
            siblings.remove(layer)
            layer.parent = None

        redo()
        layer.doc._push("Add Layer", undo, redo)
        return True

    def setPixelData(self, value, x: int, y: int, w: int, h: int):
        _gui_thread_only()
        data = bytes(value)
        size = PIXEL_SIZE[self._layer.depth]
        if len(data) < w * h * size:
            log.warning("Node::setPixelData: not enough data to write to the paint device")
            return None
        assert 0 <= x and 0 <= y and x + w <= self._layer.doc._width and y + h <= self._layer.doc._height, \
            f"write at {(x, y, w, h)} leaves the {self._layer.doc._width}x{self._layer.doc._height} image"
        rows = np.frombuffer(data, np.uint8, count=w * h * size).reshape(h, w * size)
        self._layer.bytes[y:y + h, x * size:(x + w) * size] = rows
        self._layer.doc.pixel_writes += 1
        return None  # Krita 5.1: void

    def pixelData(self, x: int, y: int, w: int, h: int):
        size = PIXEL_SIZE[self._layer.depth]
        return QtCore.QByteArray(self._layer.bytes[y:y + h, x * size:(x + w) * size].tobytes())


class Selection:
    """``Document.selection()``'s value: its bounding box (``x y width height``, as libkis' Selection)."""

    def __init__(self, x: int, y: int, width: int, height: int):
        self._box = (x, y, width, height)

    def x(self): return self._box[0]
    def y(self): return self._box[1]
    def width(self): return self._box[2]
    def height(self): return self._box[3]


class Document:
    """A wrapper, like libkis' Document: a new one per ``activeDocument()`` call, ``==`` when the
    document is the same, unhashable. Everything else (and the test hooks) is the document's."""

    def __init__(self, image: _Image):
        object.__setattr__(self, "_image", image)

    def __eq__(self, other):
        return isinstance(other, Document) and other._image is self._image

    __hash__ = None  # Krita 5.1.5: TypeError: unhashable type: 'Document'

    def __getattr__(self, name):
        return getattr(self._image, name)

    def __setattr__(self, name, value):  # test hooks (stroke_running, selection_box) are the document's
        setattr(self._image, name, value)

    def close(self):
        """The document closes: it leaves ``Krita.documents()`` (its views go, no save dialog here)."""
        _gui_thread_only()
        Krita.instance()._close(self._image)
        return True


class _Image:
    """One open document's state, behind any number of ``Document`` wrappers."""

    def __init__(self, width: int, height: int, name: str = "", model: str = "RGBA", depth: str = "U8"):
        self._width, self._height, self._name = width, height, name
        self._model, self._depth = model, depth
        self._root = _Layer(self, "root", "grouplayer")
        background = _Layer(self, "Background", "paintlayer")
        if depth == "U8":
            background.bytes[:] = 255  # white, opaque
        background.parent = self._root
        self._root.children.append(background)
        self._active = background
        self._undo: list = []
        self._redo: list = []
        self._projection = np.zeros((height, width, 4), np.uint8)
        self.stroke_running = False  # test hook: a brush stroke in progress
        self.selection_box: tuple | None = None  # test hook: (x, y, w, h) of the active selection
        self.refreshes = 0
        self.pixel_writes = 0
        self.refreshProjection()

    def width(self): return self._width
    def height(self): return self._height
    def name(self): return self._name
    def colorModel(self): return self._model
    def colorDepth(self): return self._depth
    def rootNode(self): return Node(self._root)

    def selection(self):
        """The active selection, or None (libkis returns a null pointer when there is none)."""
        _gui_thread_only()
        return Selection(*self.selection_box) if self.selection_box else None
    def activeNode(self): return Node(self._active) if self._active is not None else None

    def setActiveNode(self, node: Node):
        _gui_thread_only()
        self._active = node._layer

    def createNode(self, name: str, kind: str):
        _gui_thread_only()
        return Node(_Layer(self, name, kind))

    def nodeByName(self, name: str):
        def walk(layer):
            for child in layer.children:
                if child.name == name:
                    return child
                found = walk(child)
                if found is not None:
                    return found
            return None
        found = walk(self._root)
        return Node(found) if found is not None else None

    def drag_layer(self, node: Node, index: int) -> None:
        """Test hook: the user drags a layer to ``index`` (0 = bottom) among its siblings in the Layers
        docker (Krita's Python API itself has no move; that is not an undo step here)."""
        siblings = node._layer.parent.children
        siblings.remove(node._layer)
        siblings.insert(index, node._layer)

    def tryBarrierLock(self):
        _gui_thread_only()
        return not self.stroke_running

    def unlock(self): pass
    def waitForDone(self): pass

    def refreshProjection(self):
        """Recomposite the visible 8-bit layers, bottom up, "normal" blending with opacity."""
        _gui_thread_only()
        self.refreshes += 1
        if self._depth != "U8":
            return
        out = np.zeros((self._height, self._width, 4), np.float64)
        for layer in self._root.children:
            if not layer.visible or layer.kind != "paintlayer":
                continue
            src = layer.bytes.reshape(self._height, self._width, 4).astype(np.float64) / 255
            alpha = src[..., 3:] * layer.opacity / 255
            out[..., :3] = src[..., :3] * alpha + out[..., :3] * (1 - alpha)
            out[..., 3:] = alpha + out[..., 3:] * (1 - alpha)
        self._projection = np.round(out * 255).astype(np.uint8)

    def pixelData(self, x: int, y: int, w: int, h: int):
        return QtCore.QByteArray(self._projection[y:y + h, x:x + w].tobytes())

    def _push(self, text, undo, redo):
        self._undo.append((text, undo, redo))
        self._redo.clear()

    def _step(self, source: list, target: list, undoing: bool) -> None:
        if source:
            text, undo, redo = source.pop()
            (undo if undoing else redo)()
            target.append((text, undo, redo))

    def undo_texts(self) -> list[str]:
        return [text for text, _, _ in self._undo]


class _Action:
    def __init__(self, run):
        self._run = run

    def trigger(self):
        _gui_thread_only()
        self._run()


class Krita:
    _instance: Krita | None = None

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        self._documents: list[_Image] = []
        self._active: _Image | None = None
        self._settings: dict = {}
        self.dock_widget_factories: list = []

    def version(self): return "5.1.5"

    def createDocument(self, width, height, name, model, depth, profile, resolution):
        image = _Image(width, height, name, model, depth)
        self._documents.append(image)
        return Document(image)

    def activeDocument(self):
        """A new wrapper on every call, as libkis' ``Krita::activeDocument`` makes one."""
        _gui_thread_only()
        return Document(self._active) if self._active is not None else None

    def setActiveDocument(self, doc):
        self._active = doc._image if doc is not None else None

    def documents(self):
        return [Document(image) for image in self._documents]

    def _close(self, image: _Image) -> None:
        self._documents.remove(image)
        if self._active is image:
            self._active = None

    def readSetting(self, group, name, default):
        return self._settings.get((group, name), default)

    def writeSetting(self, group, name, value):
        self._settings[(group, name)] = str(value)

    def addDockWidgetFactory(self, factory):
        self.dock_widget_factories.append(factory)

    def action(self, name):
        """Krita's actions work on the active document at the time they are triggered."""
        if name == "edit_undo":
            return _Action(lambda: self._active._step(self._active._undo, self._active._redo, undoing=True))
        if name == "edit_redo":
            return _Action(lambda: self._active._step(self._active._redo, self._active._undo, undoing=False))
        return None


class DockWidget(QtWidgets.QDockWidget):
    def canvasChanged(self, canvas):
        raise NotImplementedError("DockWidget.canvasChanged is pure virtual in Krita")


class DockWidgetFactoryBase:
    DockRight = 1  # KoDockFactoryBase::DockPosition


class DockWidgetFactory(DockWidgetFactoryBase):
    def __init__(self, id_: str, position: int, klass):
        self._id, self._position, self._klass = id_, position, klass

    def id(self): return self._id
    def defaultDockPosition(self): return self._position
    def createDockWidget(self): return self._klass()
