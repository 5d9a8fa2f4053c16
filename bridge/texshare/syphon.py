"""Syphon (macOS) through syphon-python 0.2, PyObjC over Syphon.framework's Metal classes: a
server of the daemon's frames (``SyphonSender``) and a client of another program's (``SyphonReceiver``).

Frames go into a Metal texture of format RGBA8Unorm (the frames' byte order), copied row by row
from the top, which is Metal's first row: published with ``is_flipped`` False they arrive
upright. Syphon's shared surfaces are BGRA8Unorm, so a client's texture is BGRA: its bytes are
swapped back to RGBA here. Servers are found over distributed notifications, which reach an
object only while its thread runs its run loop: the sender runs it between frames (else a client
that starts later never sees the server), the receiver while it looks for its server. Metal and
Cocoa hand back autoreleased objects (command buffers, texture descriptors, the directory's
lists, run-loop dates) and nothing drains a pool on a worker thread of a plain Python process:
every call here runs in an autorelease pool of its own, or a long show would keep them all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .link import NotFound, SharingError, listed, unavailable

PUMP_S = 0.001  # a sender's look at its run loop between frames: answer discovery, never wait long
DISCOVERY_S = 0.25  # one look at the server directory: how long its run loop waits for answers
DISCOVERY_LOOKS = 4  # a directory's first looks ask every running server to announce itself


@dataclass(frozen=True)
class _Syphon:
    syphon: Any
    pool: Any  # objc.autorelease_pool
    bgra: int  # Metal.MTLPixelFormatBGRA8Unorm
    create_texture: Any  # syphon.utils.raw.create_mtl_texture
    to_texture: Any  # syphon.utils.numpy.copy_image_to_mtl_texture
    to_image: Any  # syphon.utils.numpy.copy_mtl_texture_to_image


def load(use: str) -> _Syphon:
    """syphon-python and the helpers it documents; ``Unavailable`` in one line where it cannot be had."""
    try:
        import Metal
        import objc
        import syphon
        from syphon.utils.numpy import copy_image_to_mtl_texture, copy_mtl_texture_to_image
        from syphon.utils.raw import create_mtl_texture
    except ImportError as exc:
        raise unavailable(use, "syphon-python", "macOS", "syphon", exc) from None
    return _Syphon(syphon, objc.autorelease_pool, Metal.MTLPixelFormatBGRA8Unorm, create_mtl_texture,
                   copy_image_to_mtl_texture, copy_mtl_texture_to_image)


def shown_name(server) -> str:
    """How a server is named here: its own name, or its program's for a server without one."""
    return server.name or server.app_name


class SyphonSender:
    """Shares each frame as the Syphon server ``name`` (names need not be unique in Syphon)."""

    def __init__(self, name: str):
        self.name = name
        self._lib: _Syphon | None = None
        self._server = None
        self._directory = None
        self._texture = None

    def open(self) -> None:
        self._lib = load("--syphon")
        with self._lib.pool():
            try:
                self._server = self._lib.syphon.SyphonMetalServer(self.name)
            except RuntimeError as exc:  # no Metal device, or Syphon could not start the server
                raise SharingError(f"Syphon server {self.name!r} could not start: {exc}") from None
            self._directory = self._lib.syphon.SyphonServerDirectory()
            self._directory.run_loop_interval = PUMP_S

    def send(self, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        with self._lib.pool():
            if self._texture is None or (self._texture.width(), self._texture.height()) != (width, height):
                self._texture = self._lib.create_texture(self._server.device, width, height)  # RGBA8Unorm
            self._lib.to_texture(pixels, self._texture)
            commands = self._server.command_queue.commandBuffer()
            self._server.publish_frame_texture(self._texture, command_buffer=commands, auto_commit=False)
            commands.commit()
            commands.waitUntilCompleted()  # the GPU has copied the texture: the next frame may overwrite it

    def idle(self) -> None:
        with self._lib.pool():
            self._directory.update_run_loop()  # answers clients that ask who is there

    def close(self) -> None:
        with self._lib.pool():
            self._server.stop()
            self._directory.close()


class SyphonReceiver:
    """Frames of the Syphon server ``name`` (a TouchDesigner Syphon Spout Out TOP, Resolume, OBS...)."""

    def __init__(self, name: str):
        self.name = name
        self.error: str | None = None
        self._lib: _Syphon | None = None
        self._directory = None
        self._client = None
        self._wake = threading.Event()

    def open(self) -> None:
        self._lib = load('{"syphon": SERVER} images')
        with self._lib.pool():
            self._open()

    def _open(self) -> None:
        self._directory = self._lib.syphon.SyphonServerDirectory()
        self._directory.run_loop_interval = DISCOVERY_S
        found, servers = None, []
        for _ in range(DISCOVERY_LOOKS):
            found, servers = self._find()
            if found is not None:
                break
        if found is None:
            self._directory.close()
            names = tuple(shown_name(s) for s in servers)
            raise NotFound(f"no Syphon server named {self.name!r}; servers now: {listed(names)}", names)
        self._connect(found)

    def _find(self):
        servers = self._directory.servers  # runs this thread's run loop for DISCOVERY_S
        return next((s for s in servers if shown_name(s) == self.name), None), servers

    def _connect(self, description) -> None:
        self._client = self._lib.syphon.SyphonMetalClient(description, new_frame_handler=self._new_frame)

    def _new_frame(self, client) -> None:
        self._wake.set()  # on Syphon's thread: short, as the library asks

    def receive(self, timeout: float) -> np.ndarray | None:
        with self._lib.pool():
            return self._receive(timeout)

    def _receive(self, timeout: float) -> np.ndarray | None:
        if self._client is None or not self._client.is_valid:
            self._rejoin()
            return None
        self._wake.clear()
        if not self._client.has_new_frame:
            self._wake.wait(timeout)
            if not self._client.has_new_frame:
                return None
        texture = self._client.new_frame_image
        if texture is None:
            return None
        image = self._lib.to_image(texture)  # H x W x 4 in the texture's byte order
        if texture.pixelFormat() == self._lib.bgra:
            return image[..., [2, 1, 0, 3]]  # a copy of our own
        return np.array(image)

    def _rejoin(self) -> None:
        """The server went away (its program quit or stopped it): look for one of that name again."""
        if self._client is not None:
            self._client.stop()
            self._client = None
            self.error = f"Syphon server {self.name!r} is gone; waiting for it to come back"
        found, _ = self._find()
        if found is not None:
            self._connect(found)
            self.error = None

    def close(self) -> None:
        with self._lib.pool():
            if self._client is not None:
                self._client.stop()
            self._directory.close()
