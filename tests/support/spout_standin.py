"""A stand-in for SpoutGL 0.1.1 (Windows only), installed as the module ``SpoutGL`` in tests.

Modelled on the binding's source (``src/PySpoutGL.cpp``) and the Spout 2.007 SDK it wraps
(``Spout.cpp``, ``SpoutGL.cpp``, ``SpoutFrameCount.cpp`` in the jlai/Python-SpoutGL repository):

- ``sendImage(buffer, width, height, glFormat, invert, hostFbo)``: a buffer smaller than
  width * height * bytes-per-pixel or not C-contiguous raises ``BufferError`` (pybind11's
  buffer_error); arguments of the wrong type raise ``TypeError`` (pybind11's overload check).
  Spout needs the calling thread's current OpenGL context (``OpenSpout`` looks for
  ``wglGetCurrentDC``): without one, or for a zero size or an unknown format, it returns False.
  The shared texture is DirectX's: top row first. Pixels are stored as given, rows reversed
  when ``invert`` is true; GL_BGRA_EXT / GL_RGB bytes are converted to the texture's RGBA.
- ``setSenderName`` renames a taken name to NAME_1, NAME_2...; the sender is registered (and
  ``getSenderInfo``/``getSenderList`` list it) from its first sent frame until ``releaseSender``.
- ``receiveImage(buffer, ...)``: with None, only connects; when the sender is new or changed
  size it returns True without copying, ``isUpdated()`` says so (once) and the buffer must be
  re-made at ``getSenderWidth/Height``; ``isFrameNew()`` is False when the sender sent nothing
  since the last copy. The first copy into a new buffer leaves it empty (as SpoutGL's own test
  observes: "Not sure why first frame is empty"); the frame comes with the next call.
- ``createOpenGL`` makes a context current on the calling thread; ``closeOpenGL`` fails (False,
  the context stays) on any other thread, as wglMakeCurrent/wglDeleteContext are per thread.

What is sent is recorded per sender name in ``World.frames`` (RGBA, top row first, as a
receiver of the shared texture sees it).
"""

from __future__ import annotations

import operator
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np

GL_RGBA, GL_BGRA_EXT, GL_RGB, GL_BGR_EXT = 0x1908, 0x80E1, 0x1907, 0x80E0
BYTES_PER_PIXEL = {GL_RGBA: 4, GL_BGRA_EXT: 4, GL_RGB: 3, GL_BGR_EXT: 3}
_current = threading.local()  # the calling thread's current OpenGL context (wglGetCurrentContext)


@dataclass
class Shared:
    """A registered sender's shared texture."""

    pixels: np.ndarray  # H x W x 4 RGBA, top row first
    frame: int = 0  # Spout's frame count


@dataclass
class World:
    """This machine's Spout state (the SDK keeps it in shared memory), and what the stand-in saw."""

    senders: dict[str, Shared] = field(default_factory=dict)
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)  # every frame sent, per name
    syncs: dict[str, int] = field(default_factory=dict)  # setFrameSync calls per name
    contexts: set = field(default_factory=set)  # OpenGL contexts alive: (object id, thread)
    frame_count: bool = True  # SpoutSettings' frame counting
    opengl: bool = True  # False: a machine where no OpenGL context can be made (createOpenGL fails)
    texture_access: bool = True  # False: the shared texture cannot be written (sendImage returns False)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _int(value, what: str) -> int:
    if isinstance(value, float):
        raise TypeError(f"{what}: incompatible function arguments (an integer, got {value!r})")
    return operator.index(value)


def _bool(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what}: incompatible function arguments (a bool, got {value!r})")
    return bool(value)


def _str(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what}: incompatible function arguments (a str, got {value!r})")
    return value


def _view(buffer, nbytes: int) -> memoryview:
    view = memoryview(buffer)  # TypeError for an object without the buffer protocol
    if view.nbytes < nbytes:
        raise BufferError("Buffer not large enough")
    if not view.c_contiguous:
        raise BufferError("Buffer must be contiguous")
    return view.cast("B")


def _to_rgba(raw: np.ndarray, fmt: int, width: int, height: int) -> np.ndarray:
    pixels = raw[:width * height * BYTES_PER_PIXEL[fmt]].reshape(height, width, BYTES_PER_PIXEL[fmt])
    if fmt in (GL_BGRA_EXT, GL_BGR_EXT):
        pixels = pixels[..., [2, 1, 0, *([3] if fmt == GL_BGRA_EXT else [])]]
    if pixels.shape[2] == 3:
        pixels = np.concatenate([pixels, np.full((height, width, 1), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(pixels)


def _from_rgba(pixels: np.ndarray, fmt: int) -> np.ndarray:
    if fmt in (GL_BGRA_EXT, GL_BGR_EXT):
        pixels = pixels[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(pixels[..., :BYTES_PER_PIXEL[fmt]])


class SenderInfo:
    def __init__(self, name: str, width: int, height: int):
        self.name, self.width, self.height = name, width, height


class _Spout:
    """What SpoutSender and SpoutReceiver share (pybind11's addCommonDefs)."""

    world: World

    def __init__(self):
        self._context = None  # the OpenGL context this object made: (id, thread)

    def createOpenGL(self) -> bool:
        if not self.world.opengl:
            return False
        if getattr(_current, "context", None) is None:  # else: "OpenGL context exists", nothing made
            self._context = (id(self), threading.get_ident())
            _current.context = self._context
            with self.world.lock:
                self.world.contexts.add(self._context)
        return True

    def closeOpenGL(self) -> bool:
        if self._context is None:
            return True
        if self._context[1] != threading.get_ident():
            return False  # "release of DC and RC failed": a context is current on its own thread only
        _current.context = None
        with self.world.lock:
            self.world.contexts.discard(self._context)
        self._context = None
        return True

    def getSenderInfo(self, name) -> SenderInfo | None:
        name = _str(name, "getSenderInfo()")
        with self.world.lock:
            shared = self.world.senders.get(name)
            return None if shared is None else SenderInfo(name, shared.pixels.shape[1], shared.pixels.shape[0])

    @staticmethod
    def _has_context() -> bool:
        return getattr(_current, "context", None) is not None


class SpoutSender(_Spout):
    def __init__(self):
        super().__init__()
        self._name: str | None = None
        self._registered = False

    def setSenderName(self, name) -> None:
        name = _str(name, "setSenderName()")
        with self.world.lock:
            taken, candidate, i = self.world.senders, name, 1
            while candidate in taken:
                candidate, i = f"{name}_{i}", i + 1
        self._name = candidate

    def sendImage(self, buffer, width, height, glFormat, invert, hostFbo) -> bool:
        width, height = _int(width, "sendImage()"), _int(height, "sendImage()")
        fmt, invert, _ = _int(glFormat, "sendImage()"), _bool(invert, "sendImage()"), _int(hostFbo, "sendImage()")
        if fmt not in BYTES_PER_PIXEL:
            raise ValueError("Unknown GL format")  # getBytesPerPixel's std::invalid_argument
        view = _view(buffer, width * height * BYTES_PER_PIXEL[fmt])
        if not self._has_context() or width <= 0 or height <= 0 or not self.world.texture_access:
            return False
        pixels = _to_rgba(np.frombuffer(view, np.uint8), fmt, width, height)
        if invert:
            pixels = np.ascontiguousarray(pixels[::-1])
        name = self._name or "python"  # no name set: Spout takes the executable's
        with self.world.lock:
            shared = self.world.senders.get(name)
            if shared is None:
                shared = self.world.senders[name] = Shared(pixels)
            shared.pixels, shared.frame = pixels, shared.frame + 1
            self.world.frames.setdefault(name, []).append(pixels)
        self._name, self._registered = name, True
        return True

    def setFrameSync(self, name) -> None:
        name = _str(name, "setFrameSync()")
        with self.world.lock:
            self.world.syncs[name] = self.world.syncs.get(name, 0) + 1

    def releaseSender(self) -> None:
        if self._registered:
            with self.world.lock:
                self.world.senders.pop(self._name, None)
            self._registered = False


class SpoutReceiver(_Spout):
    def __init__(self):
        super().__init__()
        self._name = ""
        self._width = self._height = 0
        self._connected = self._updated = self._new = False
        self._last_frame = 0
        self._filled = True  # the buffer of the last update has had its first (empty) copy

    def setReceiverName(self, name) -> None:
        self._name = _str(name, "setReceiverName()")

    def getSenderList(self) -> list[str]:
        with self.world.lock:
            return list(self.world.senders)

    def receiveImage(self, buffer, glFormat, invert, hostFbo) -> bool:
        fmt, invert, _ = (_int(glFormat, "receiveImage()"), _bool(invert, "receiveImage()"),
                          _int(hostFbo, "receiveImage()"))
        if fmt not in BYTES_PER_PIXEL:
            raise ValueError("Unknown GL format")
        view = None
        if buffer is not None and memoryview(buffer).nbytes:
            view = _view(buffer, self._width * self._height * BYTES_PER_PIXEL[fmt])
            if view.readonly:
                raise BufferError("Buffer is read-only")
        if self._updated:
            return True  # "Return if flagged for update"
        if not self._has_context():
            return False
        with self.world.lock:
            shared = self.world.senders.get(self._name)
            if shared is None:  # no sender, or it closed: released (frame counting too), waiting for it
                self.releaseReceiver()
                return False
            if not self._connected or shared.pixels.shape[:2] != (self._height, self._width):
                self._height, self._width = shared.pixels.shape[:2]
                self._connected = self._updated = True
                self._filled = False
                return True
            if view is None:
                return False
            self._new = shared.frame != self._last_frame or not self.world.frame_count
            if self._new and self._filled:
                out = _from_rgba(shared.pixels[::-1] if invert else shared.pixels, fmt)
                np.frombuffer(view, np.uint8)[:out.size] = out.reshape(-1)
                self._last_frame = shared.frame
            self._filled = True  # the first copy into a new buffer stays empty
        return True

    def isUpdated(self) -> bool:
        updated, self._updated = self._updated, False
        return updated

    def isFrameNew(self) -> bool:
        return self._new

    def isFrameCountEnabled(self) -> bool:
        return self.world.frame_count

    def isConnected(self) -> bool:
        return self._connected

    def getSenderWidth(self) -> int:
        return self._width

    def getSenderHeight(self) -> int:
        return self._height

    def releaseReceiver(self) -> None:
        self._connected, self._width, self._height, self._last_frame = False, 0, 0, 0


def is_buffer_empty(buffer) -> bool:
    view = memoryview(buffer)
    if not view.c_contiguous:
        raise BufferError("Byte buffer must be contiguous")
    return not np.frombuffer(view.cast("B"), np.uint8).any()


def install(monkeypatch) -> World:
    """Make ``import SpoutGL`` (and its ``enums``, ``helpers``) give this stand-in, with a fresh world."""
    world = World()
    module = types.ModuleType("SpoutGL")
    module.SpoutSender = type("SpoutSender", (SpoutSender,), {"world": world})
    module.SpoutReceiver = type("SpoutReceiver", (SpoutReceiver,), {"world": world})
    module.SenderInfo = SenderInfo
    enums = types.ModuleType("SpoutGL.enums")
    enums.GL_RGBA, enums.GL_BGRA_EXT, enums.GL_RGB, enums.GL_BGR_EXT = GL_RGBA, GL_BGRA_EXT, GL_RGB, GL_BGR_EXT
    helpers = types.ModuleType("SpoutGL.helpers")
    helpers.isBufferEmpty = is_buffer_empty
    helpers.getBytesPerPixel = lambda fmt: BYTES_PER_PIXEL[fmt]
    module.enums, module.helpers = enums, helpers
    for name, value in (("SpoutGL", module), ("SpoutGL.enums", enums), ("SpoutGL.helpers", helpers)):
        monkeypatch.setitem(sys.modules, name, value)
    return world
