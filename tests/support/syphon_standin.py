"""A stand-in for syphon-python 0.2.0 (macOS only) and the bits of PyObjC's ``Metal`` it uses,
installed as the modules ``syphon`` (``syphon.utils.raw``, ``syphon.utils.numpy``) and ``Metal``.

Modelled on syphon-python 0.2.0's sources (the wheel's ``syphon/*.py``) and Syphon.framework's
headers and ``SyphonMetalServer.m`` / ``SyphonMetalClient.m``:

- ``SyphonMetalServer(name, device=None, command_queue=None)``; ``publish_frame_texture(texture,
  region=None, size=None, is_flipped=False, command_buffer=None, auto_commit=True)`` encodes a
  copy of the texture (of the server's device) into the command buffer: the copy happens when
  the buffer is committed (the GPU runs it), rows reversed when ``is_flipped``. The server's
  surface is BGRA8Unorm, Metal's first row on top. Waiting on a buffer never committed would
  block for ever: here it raises.
- Textures (``create_mtl_texture``, RGBA8Unorm by default) take bytes row by row from the top;
  ``copy_image_to_mtl_texture`` asserts an (m, n, 4) image, and bytes that do not fill the
  texture exactly raise (Metal would read past them or leave rows stale).
- Discovery goes over distributed notifications, delivered to an object only while its thread
  runs its run loop (``SyphonServerDirectory.update_run_loop``; ``servers`` runs it for
  ``run_loop_interval``). A process's shared directory asks every server to announce itself
  when it is first used: a server that existed before answers only once its own thread has run
  its run loop since; a server started later announces itself.
- Autoreleased objects (a command buffer, a texture descriptor, the directory's list, the run
  loop's date) are kept until a pool drains, and nothing drains one on a thread of a plain
  Python process but ``objc.autorelease_pool()``: each made outside one is counted, per thread,
  in ``World.unpooled`` (a leak that grows with every frame).
- ``SyphonMetalClient(description, new_frame_handler=...)``: ``has_new_frame`` (from the start
  when the server has a frame: ``SyphonClientBase``'s last frame id starts at 0) until
  ``new_frame_image`` (a BGRA8Unorm texture) takes it; the handler runs on the publishing
  side's thread; ``is_valid`` is False once the server stopped.

Every frame published is recorded per server name in ``World.frames`` (RGBA, top row first).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import types
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

RGBA8, BGRA8 = 70, 80  # MTLPixelFormatRGBA8Unorm, MTLPixelFormatBGRA8Unorm


@dataclass
class World:
    """This machine's Syphon servers, the process's shared directory, and what the stand-in saw."""

    servers: dict[str, SyphonMetalServer] = field(default_factory=dict)  # by uuid, while running
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    directory_asked: int | None = None  # tick of the shared directory's announce request
    unpooled: Counter = field(default_factory=Counter)  # autoreleased objects made outside a pool, by thread
    ticks: itertools.count = field(default_factory=lambda: itertools.count(1))
    changed: threading.Condition = field(default_factory=threading.Condition)


_pools = threading.local()


@contextlib.contextmanager
def autorelease_pool():
    _pools.depth = getattr(_pools, "depth", 0) + 1
    try:
        yield
    finally:
        _pools.depth -= 1


def _autoreleased(world: World) -> None:
    if not getattr(_pools, "depth", 0):
        world.unpooled[threading.current_thread().name] += 1


class Texture:
    def __init__(self, device, width: int, height: int, pixel_format: int):
        if pixel_format not in (RGBA8, BGRA8):
            raise ValueError(f"the stand-in knows RGBA8Unorm and BGRA8Unorm, got {pixel_format}")
        self.device, self._format = device, pixel_format
        self.bytes = np.zeros((height, width, 4), np.uint8)  # in the texture's own byte order

    def width(self) -> int:
        return self.bytes.shape[1]

    def height(self) -> int:
        return self.bytes.shape[0]

    def pixelFormat(self) -> int:
        return self._format

    def replaceRegion_mipmapLevel_withBytes_bytesPerRow_(self, region, level, data, bytes_per_row) -> None:
        data = bytes(data)
        if bytes_per_row != self.width() * 4 or len(data) != self.height() * bytes_per_row:
            raise ValueError(f"{len(data)} bytes at {bytes_per_row} a row for a {self.width()}x{self.height()} "
                             "texture: Metal would read past them or leave rows stale")
        self.bytes[...] = np.frombuffer(data, np.uint8).reshape(self.bytes.shape)

    def rgba(self) -> np.ndarray:
        return self.bytes[..., [2, 1, 0, 3]] if self._format == BGRA8 else self.bytes.copy()


class CommandBuffer:
    def __init__(self, queue):
        self.queue, self._encoded, self.committed = queue, [], False

    def commit(self) -> None:
        if self.committed:
            raise RuntimeError("a Metal command buffer can be committed once")
        self.committed = True
        for run in self._encoded:  # the GPU runs what was encoded
            run()

    def commitAndWaitUntilSubmitted(self) -> None:
        self.commit()

    def waitUntilCompleted(self) -> None:
        if not self.committed:
            raise RuntimeError("waitUntilCompleted on a command buffer never committed blocks for ever")


class CommandQueue:
    def __init__(self, device):
        self.device = device

    def commandBuffer(self) -> CommandBuffer:
        _autoreleased(self.device.world)
        return CommandBuffer(self)


class Device:
    world: World

    def newCommandQueue(self) -> CommandQueue:
        return CommandQueue(self)


@dataclass
class SyphonServerDescription:
    uuid: str
    name: str
    app_name: str
    icon: object
    raw: dict


class SyphonMetalServer:
    world: World

    def __init__(self, name, device=None, command_queue=None, *, is_private=False):
        if not isinstance(name, str):
            raise TypeError(f"a server name is an NSString, got {name!r}")
        self.device = device or self.Device()
        self.command_queue = command_queue or self.device.newCommandQueue()
        self._name, self.uuid, self.frame, self._stopped = name, str(uuid.uuid4()), 0, False
        self.surface: np.ndarray | None = None  # BGRA, top row first
        self.owner = threading.get_ident()
        self.clients: list[SyphonMetalClient] = []
        with self.world.changed:
            self.created, self.answered = next(self.world.ticks), 0
            self.world.servers[self.uuid] = self
            self.world.changed.notify_all()

    @property
    def name(self) -> str:
        return self._name

    @property
    def has_clients(self) -> bool:
        return any(client.is_valid for client in self.clients)

    def publish_frame_texture(self, texture, region=None, size=None, is_flipped=False, command_buffer=None,
                              auto_commit=True) -> None:
        if self._stopped:
            raise RuntimeError("Syphon server is stopped")
        if not isinstance(texture, Texture) or texture.device is not self.device:
            raise TypeError("publish_frame_texture needs an MTLTexture of the server's device")
        x, y, width, height = region or (0, 0, texture.width(), texture.height())
        command_buffer = command_buffer or self.command_queue.commandBuffer()
        command_buffer._encoded.append(lambda: self._publish(texture, (x, y, width, height), bool(is_flipped)))
        if auto_commit:
            command_buffer.commitAndWaitUntilSubmitted()

    def _publish(self, texture: Texture, region, flipped: bool) -> None:
        x, y, width, height = region
        rgba = texture.rgba()[y:y + height, x:x + width]
        rgba = np.ascontiguousarray(rgba[::-1] if flipped else rgba)
        with self.world.changed:
            self.surface, self.frame = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]), self.frame + 1
            self.world.frames.setdefault(self._name, []).append(rgba)
            clients = list(self.clients)
        for client in clients:  # the frame handler runs on the publishing side's thread
            client._announce()

    def stop(self) -> None:
        with self.world.changed:
            self._stopped = True
            self.world.servers.pop(self.uuid, None)
            self.world.changed.notify_all()

    def description(self) -> SyphonServerDescription:
        return SyphonServerDescription(self.uuid, self._name, "standin", None,
                                       {"SyphonServerDescriptionUUIDKey": self.uuid})


class SyphonServerDirectory:
    world: World

    def __init__(self):
        self.run_loop_interval = 1.0
        self._closed = False

    def update_run_loop(self) -> None:
        """This thread's run loop, for ``run_loop_interval`` s or until something arrives: its
        servers answer the announce requests made meanwhile."""
        world, me = self.world, threading.get_ident()
        with world.changed:
            now = next(world.ticks)
            for server in world.servers.values():
                if server.owner == me and server.answered < now:
                    server.answered = now
                    world.changed.notify_all()
            _autoreleased(world)  # NSDate.dateWithTimeIntervalSinceNow_
            world.changed.wait(self.run_loop_interval)

    @property
    def servers(self) -> list[SyphonServerDescription]:
        world = self.world
        with world.changed:
            if world.directory_asked is None:  # the shared directory is made: it asks who is there
                world.directory_asked = next(world.ticks)
        self.update_run_loop()
        _autoreleased(world)  # the directory's servers array
        with world.changed:
            asked = world.directory_asked
            return [s.description() for s in world.servers.values() if s.created > asked or s.answered > asked]

    def close(self) -> None:
        self._closed = True


class SyphonMetalClient:
    world: World

    def __init__(self, description, device=None, *, new_frame_handler=None, callback_loop=None):
        if not isinstance(description, SyphonServerDescription):
            raise TypeError("SyphonMetalClient needs a SyphonServerDescription from the directory")
        if callback_loop is not None:
            raise NotImplementedError("the stand-in calls handlers on the publishing thread only")
        with self.world.changed:
            server = self.world.servers.get(description.raw["SyphonServerDescriptionUUIDKey"])
            if server is None:
                raise RuntimeError("Syphon could not create the client")
            server.clients.append(self)
        self.device = device or self.Device()
        self._server, self._handler, self._seen, self._stopped = server, new_frame_handler, 0, False
        self._in_handler = threading.local()

    @property
    def is_valid(self) -> bool:
        return not self._stopped and not self._server._stopped

    @property
    def has_new_frame(self) -> bool:
        return self.is_valid and self._server.frame > self._seen

    @property
    def new_frame_image(self) -> Texture | None:
        if self._stopped or self._server.surface is None:
            return None
        with self.world.changed:
            surface, self._seen = self._server.surface, self._server.frame
        texture = Texture(self.device, surface.shape[1], surface.shape[0], BGRA8)
        texture.bytes[...] = surface
        return texture

    def _announce(self) -> None:
        if self._handler is not None and not self._stopped:
            self._in_handler.active = True
            try:
                self._handler(self)
            finally:
                self._in_handler.active = False

    def stop(self) -> None:
        if getattr(self._in_handler, "active", False):
            raise RuntimeError("Cannot stop a client from a native frame callback")
        self._stopped = True


def create_mtl_texture(device, width, height, pixel_format=RGBA8) -> Texture:
    _autoreleased(device.world)  # the MTLTextureDescriptor
    return Texture(device, int(width), int(height), pixel_format)


def copy_image_to_mtl_texture(image: np.ndarray, texture: Texture) -> None:
    assert len(image.shape) == 3, "Image has to be of shape (m, n, 4)"
    assert image.shape[2] == 4, "Image has to be of shape (m, n, 4)"
    texture.replaceRegion_mipmapLevel_withBytes_bytesPerRow_(None, 0, image.tobytes(), texture.width() * 4)


def copy_mtl_texture_to_image(texture: Texture) -> np.ndarray:
    if texture.pixelFormat() not in (BGRA8, RGBA8):
        raise Exception("Not correct pixel format (expected MTLPixelFormatBGRA8Unorm or MTLPixelFormatRGBA8Unorm)")
    return np.frombuffer(texture.bytes.tobytes(), np.uint8).reshape(texture.height(), texture.width(), 4)


def install(monkeypatch) -> World:
    """Make ``import syphon`` (with ``syphon.utils.raw``, ``syphon.utils.numpy``) and ``import Metal``
    give this stand-in, with a fresh world."""
    world = World()
    syphon = types.ModuleType("syphon")
    device = type("Device", (Device,), {"world": world})
    for cls in (SyphonMetalServer, SyphonServerDirectory, SyphonMetalClient):
        setattr(syphon, cls.__name__, type(cls.__name__, (cls,), {"world": world, "Device": device}))
    syphon.SyphonServerDescription = SyphonServerDescription
    utils, raw, numpy_utils = (types.ModuleType(f"syphon.utils{suffix}") for suffix in ("", ".raw", ".numpy"))
    raw.create_mtl_texture = create_mtl_texture
    numpy_utils.copy_image_to_mtl_texture = copy_image_to_mtl_texture
    numpy_utils.copy_mtl_texture_to_image = copy_mtl_texture_to_image
    syphon.utils, utils.raw, utils.numpy = utils, raw, numpy_utils
    metal = types.ModuleType("Metal")
    metal.MTLPixelFormatRGBA8Unorm, metal.MTLPixelFormatBGRA8Unorm = RGBA8, BGRA8
    metal.MTLCreateSystemDefaultDevice = device
    objc = types.ModuleType("objc")
    objc.autorelease_pool = autorelease_pool
    for name, module in (("syphon", syphon), ("syphon.utils", utils), ("syphon.utils.raw", raw),
                         ("syphon.utils.numpy", numpy_utils), ("Metal", metal), ("objc", objc)):
        monkeypatch.setitem(sys.modules, name, module)
    return world
