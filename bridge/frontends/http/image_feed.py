"""One image slot's ingest (the input image, a control image, the style image): images from every
front end, and the slot's attached source. ``ImageFeed`` is what ``input_api.InputService``,
``control_api.ControlFeed`` and ``style_api.StyleFeed`` share; each says what an image does (``_apply``).

Images are decoded and hashed on a worker thread, never on the event loop. An image with the
content of the current one changes nothing (no version, no frame, no VAE encoding). A client's
segment (layout v1, created and written by the client, e.g. ``bridge.client.ShmInputWriter``) is
attached with ``{"shm": NAME}`` and polled: its size and seq word are read every ``poll_s``
seconds on the event loop (``fstat`` and an 8-byte ``pread``: the client may truncate it at any
time, ``input_segment.py``) and a new frame is copied off it. A segment that changes size is
reported once and polled until its header fits its new size again. Another program's Spout sender
or Syphon server is attached with ``{"spout": NAME}`` / ``{"syphon": NAME}`` and received on a
thread of its own (``texture_input.TextureWatch``). One source at a time: a new one replaces the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from concurrent.futures import Executor
from typing import Any

from ...client import layout
from ...core.errors import ValidationError
from ...core.scene import InputImage
from ...engine.scheduler import Scheduler
from . import inputs
from .input_segment import (
    InputSegment,
    MappedInputSegment,
    SegmentResized,
    open_segment,
)
from .texture_input import TextureWatch

log = logging.getLogger(__name__)

SHM_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
POLL_SECONDS = 0.002
SHM_READ_TIMEOUT_S = 0.05  # one read's retries on an odd seq; the input worker is shared with uploads
SHM_MAX_BACKOFF_S = 1.0  # a segment stuck odd (or with a broken header) is polled at most this slowly


class ImageFeed:
    """Takes one image slot's images from every front end (decoded off the loop, ``field`` names it in
    errors) and hands them to ``_apply``; owns the slot's attached source: a client's shared-memory
    segment, or another program's Spout sender or Syphon server."""

    def __init__(self, scheduler: Scheduler, executor: Executor, poll_s: float = POLL_SECONDS,
                 own_shm_name: str | None = None, field: str = "input", own_senders: dict[str, str] | None = None):
        self._scheduler = scheduler
        self._executor = executor
        self._poll_s = poll_s
        self._own_shm_name = own_shm_name  # the daemon's output segment (and its channels' NAME.*)
        self._own_senders = own_senders or {}  # kind -> --spout / --syphon name (and its channels' NAME.*)
        self.field = field
        self._reader: InputSegment | MappedInputSegment | None = None
        self._watcher: asyncio.Task | None = None
        self._texture: TextureWatch | None = None
        self.shm_reads = 0
        self.shm_errors = 0
        self.shm_error: str | None = None  # set while the segment gives no good frame; None once it does
        self.shm_retry_s = poll_s

    async def put(self, data: bytes, kind: str, width: int | None, height: int | None, source: str) -> dict:
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(self._executor, inputs.decode, data, kind, width, height, source,
                                               self.field)
        except ValidationError:
            self._scheduler.stats.rejected += 1
            raise
        return self._apply(image)

    async def ws_message(self, message: bytes) -> dict:
        """One binary WebSocket message in, its reply out (``input`` or ``error``)."""
        loop = asyncio.get_running_loop()
        try:
            _, image = await loop.run_in_executor(self._executor, inputs.decode_ws_input, message)
        except ValidationError as exc:
            self._scheduler.stats.rejected += 1
            return {"type": "error", **exc.to_json()}
        return {"type": self.field, **self._apply(image)}

    def _apply(self, image: InputImage) -> dict:
        raise NotImplementedError

    async def attach(self, name: Any) -> dict:
        if not isinstance(name, str) or not SHM_NAME.fullmatch(name):
            raise ValidationError("shm", f"shm must be a segment name of 1-100 letters, digits, '.', '_' or '-', "
                                         f"got {str(name)[:100]!r}")
        own = self._own_shm_name
        if own and (name == own or name.startswith(own + ".")):
            raise ValidationError("shm", f"{name!r} is this daemon's own output segment, not an input: "
                                         "attach a segment the client created (bridge.client.ShmInputWriter)")
        try:
            reader = open_segment(name)
        except FileNotFoundError:
            raise ValidationError("shm", f"no shared-memory segment named {name!r}: the client creates it "
                                         "(bridge.client.ShmInputWriter) before attaching it") from None
        except (OSError, ValueError) as exc:  # an empty segment cannot be mapped; a foreign one has no magic
            raise ValidationError("shm", f"segment {name!r}: {exc}") from None
        try:
            _check_segment(reader)
        except ValidationError:
            reader.close()
            raise
        await self._let_go()
        self._reader = reader
        self._watcher = asyncio.create_task(self._watch(reader), name=f"{self.field}-shm")
        log.info("polling %s segment %r (%dx%d max)", self.field, name, reader.geometry.max_width,
                 reader.geometry.max_height)
        return self.health()

    async def attach_texture(self, kind: str, name: Any) -> dict:
        """Receive another program's Spout sender or Syphon server ``name`` (``kind``) as this slot's image."""
        watch = await TextureWatch.open(kind, name, self._own_senders.get(kind), self._apply, self.field)
        await self._let_go()
        self._texture = watch
        watch.activate()
        log.info("receiving %s from %s %r", self.field, kind, name)
        return self.health()

    async def _let_go(self) -> None:
        """Detach whatever is attached, also what another request attached while this one waited:
        the request that gets here last keeps its source, and no other is left running."""
        while self._texture is not None or self._reader is not None:
            await self.detach()

    async def detach(self) -> None:
        # Taken before the first await: a detach running at the same time never closes them twice.
        texture, watcher, reader = self._texture, self._watcher, self._reader
        self._texture = self._watcher = self._reader = None
        if texture is not None:
            await texture.stop()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if reader is not None:
            # A read in flight on the worker still maps the segment: let it finish first.
            await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)
            reader.close()

    async def _watch(self, reader: InputSegment | MappedInputSegment) -> None:
        loop = asyncio.get_running_loop()
        self.shm_error, self.shm_retry_s = None, self._poll_s
        resized = False  # waiting for the client to give its segment a size its header fits
        while True:
            await asyncio.sleep(self.shm_retry_s)
            if resized:
                try:
                    reader.reopen()
                    _check_segment(reader)
                except (ValueError, ValidationError) as exc:
                    self._failed(reader, exc)
                    continue
                log.info("%s segment %r attached again at its new size (%dx%d max)", self.field, reader.name,
                         reader.geometry.max_width, reader.geometry.max_height)
                resized = False
            if not reader.changed():
                continue
            try:
                image = await loop.run_in_executor(self._executor, _read_segment, reader)
            except (ValueError, TimeoutError) as exc:  # a loop boundary: a bad frame is skipped, not fatal
                resized = isinstance(exc, SegmentResized)
                self._failed(reader, exc)
                continue
            if self.shm_error is not None:
                log.info("%s segment %r gives frames again after %d failed reads", self.field, reader.name,
                         self.shm_errors)
                self.shm_error, self.shm_retry_s = None, self._poll_s
            if image is not None:
                self.shm_reads += 1
                self._apply(image)

    def _failed(self, reader: InputSegment | MappedInputSegment, exc: Exception) -> None:
        """A read (or a reopen) failed: counted; reported once per episode (log, ``last_error``,
        OSC ``/bridge/error``): a stuck or truncated segment must not flood either."""
        self.shm_errors += 1
        if self.shm_error is None:
            message = f"{self.field} {exc}"  # "input segment 'NAME' changed size ...", "style shared memory ..."
            log.warning("%s; retrying, at most every %.1f s, until it gives a frame", message, SHM_MAX_BACKOFF_S)
            self._scheduler.report_fault(message)
        self.shm_error = str(exc)
        self.shm_retry_s = min(self.shm_retry_s * 2, SHM_MAX_BACKOFF_S)

    def source_health(self) -> dict:
        """The attached segment's counters, and the attached Spout sender or Syphon server (or None)."""
        return {"shm": self._reader.name if self._reader else None, "shm_reads": self.shm_reads,
                "shm_errors": self.shm_errors, "shm_error": self.shm_error,
                "texture": self._texture.health() if self._texture else None}

    def health(self) -> dict:
        raise NotImplementedError


def _check_segment(reader: InputSegment | MappedInputSegment) -> None:
    """An input segment gets the limits of an upload, and must be as large as its header says."""
    geometry = reader.geometry
    if geometry.max_width > inputs.MAX_INPUT_SIDE or geometry.max_height > inputs.MAX_INPUT_SIDE:
        raise ValidationError("shm", f"segment {reader.name!r} holds frames up to {geometry.max_width}x"
                                     f"{geometry.max_height}; input images must be at most {inputs.MAX_INPUT_SIDE} "
                                     "px a side (create the segment with a smaller maximum and scale down)")
    if reader.size < geometry.total_bytes:
        raise ValidationError("shm", f"segment {reader.name!r} is {reader.size} bytes, smaller than the "
                                     f"{geometry.total_bytes} its header describes")
    if layout.read_owner(reader.header).pid == os.getpid():
        raise ValidationError("shm", f"{reader.name!r} is a segment this daemon publishes, not an input")


def _read_segment(reader: InputSegment | MappedInputSegment) -> InputImage | None:
    pixels = reader.read(timeout=SHM_READ_TIMEOUT_S)
    return None if pixels is None else InputImage.from_pixels(pixels, "shm")
