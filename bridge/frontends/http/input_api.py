"""Live input for image-to-image: ``PUT/GET/DELETE /v1/input``, WebSocket input messages, and a
client's shared-memory input segment, all feeding ``Scheduler.set_input``. ``ImageFeed`` is the
image ingest shared with the control images (``control_api.py``).

Images are decoded and hashed on a worker thread, never on the event loop. An image with the
content of the current input changes nothing (no version, no frame, no VAE encoding). A client's
segment (layout v1, created and written by the client, e.g. ``bridge.client.ShmInputWriter``) is
attached with ``PUT /v1/input`` ``{"shm": NAME}`` and polled: its size and seq word are read every
``poll_s`` seconds on the event loop (``fstat`` and an 8-byte ``pread``: the client may truncate it
at any time, ``input_segment.py``) and a new frame is copied off it. A segment that changes size
is reported once and polled until its header fits its new size again. Another
program's Spout sender or Syphon server is attached with ``{"spout": NAME}`` / ``{"syphon": NAME}``
and received on a thread of its own (``texture_input.TextureWatch``). One source at a time: a new
one replaces the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

from . import inputs
from .texture_input import TextureWatch
from .bodies import LARGE_BODY_BYTES, read_body
from .input_segment import InputSegment, MappedInputSegment, SegmentResized, open_segment
from ...client import layout
from ...core.errors import ValidationError
from .rest import add_channel_route, error_response, read_json, scheduler_of, service_of
from ...core.scene import InputImage
from ...engine.scheduler import Scheduler
from ...texshare.link import KINDS, Unavailable

log = logging.getLogger(__name__)

SHM_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
POLL_SECONDS = 0.002
SHM_READ_TIMEOUT_S = 0.05  # one read's retries on an odd seq; the input worker is shared with uploads
SHM_MAX_BACKOFF_S = 1.0  # a segment stuck odd (or with a broken header) is polled at most this slowly

SCHEMA = {
    "input": {
        "PUT /v1/input": "the input image for image-to-image: image/png, image/jpeg, or application/octet-stream "
                         "(raw RGBA8, rows top-first, with X-Width and X-Height headers), at most "
                         f"{inputs.MAX_INPUT_SIDE} px a side; or application/json {{\"shm\": NAME}} to poll a "
                         "client's input segment (layout v1), {\"spout\": SENDER} (Windows) or {\"syphon\": SERVER} "
                         "(macOS) to receive another program's frames. Answers digest, width, height, changed, "
                         "active, version",
        "GET /v1/input": "the input's state: present, active, digest, size, source, counters, attached segment "
                         "or texture sender",
        "DELETE /v1/input": "drop the input (and detach the segment or sender): back to text-to-image",
        "websocket": "a binary message is an input image: header <4sHBBIII magic TBI1, header size 20, format "
                     "(0 rgba, 1 png, 2 jpeg), reserved, width, height (rgba only), payload bytes; reply type input",
    },
}


class ImageFeed:
    """Takes one image slot's images from every front end (decoded off the loop, ``field`` names it in
    errors) and hands them to ``apply``; owns the slot's attached source: a client's shared-memory
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


class InputService(ImageFeed):
    """The input image for image-to-image."""

    def _apply(self, image: InputImage) -> dict:
        changed = self._scheduler.set_input(image)
        return {"digest": image.digest, "width": image.width, "height": image.height, "changed": changed,
                "active": self._scheduler.input_active, "version": self._scheduler.version}

    def health(self) -> dict:
        sched = self._scheduler
        image = sched.input
        return {"present": image is not None, "active": sched.input_active,
                "digest": image.digest if image else None, "width": image.width if image else None,
                "height": image.height if image else None, "source": image.source if image else None,
                "accepted": sched.stats.inputs, "unchanged": sched.stats.inputs_unchanged, **self.source_health()}


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


INPUTS = web.AppKey("inputs", InputService)


def _header_int(request: web.Request, name: str) -> int | None:
    text = request.headers.get(name)
    if text is None:
        return None
    # ASCII digits only, and few: int() takes '١' and refuses '²' or 5,000 digits with a ValueError.
    if not HEADER_INT.fullmatch(text.strip()):
        raise ValidationError(name, f"{name} must be a whole number of pixels from 1 to {inputs.MAX_INPUT_SIDE} "
                                    f"(ASCII digits), got {text[:20]!r}")
    return int(text)


HEADER_INT = re.compile(r"[0-9]{1,6}")


async def _read_input(request: web.Request, kind: str, width: int | None, height: int | None,
                      field: str = "input") -> bytes | web.Response:
    if kind == "rgba" and width is not None and height is not None:
        inputs.check_size(width, height, field)
        expected = width * height * 4
        if request.content_length is not None and request.content_length != expected:  # refused unread
            return error_response(400, field, f"raw RGBA {field} of {width}x{height} must be {expected} bytes "
                                              f"(width * height * 4), Content-Length says {request.content_length}")
    too_big = f"{field} must be at most {inputs.MAX_INPUT_BYTES} bytes ({inputs.MAX_INPUT_SIDE} px a side as raw RGBA)"
    check = None if kind == "rgba" else functools.partial(inputs.check_header, kind=kind, field=field)  # size known early
    # Large (or of unknown length): a few at a time, so clients together cannot buffer gigabytes.
    large = request.content_length is None or request.content_length > LARGE_BODY_BYTES
    return await read_body(request, inputs.MAX_INPUT_BYTES, field, too_big, check, large=large)


async def put_input(request: web.Request) -> web.Response:
    return await put_image(request, service_of(request, INPUTS))


async def put_image(request: web.Request, service: ImageFeed) -> web.Response:
    """A PUT of an image slot: an image body, or JSON naming a source: ``{"shm": NAME}`` (a client's
    segment), ``{"spout": NAME}`` or ``{"syphon": NAME}`` (another program's sender)."""
    field = service.field
    if request.content_type == "application/json":
        value = await read_json(request)
        if isinstance(value, web.Response):
            return value
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"shm", *KINDS}:
            return error_response(400, None, f'a JSON {field} request names one source: {{"shm": NAME}} (poll that '
                                             'shared-memory segment), {"spout": NAME} or {"syphon": NAME} '
                                             "(receive that program's sender)")
        (kind, name), = value.items()
        if kind == "shm":
            return web.json_response(await service.attach(name))
        try:
            return web.json_response(await service.attach_texture(kind, name))
        except Unavailable as exc:  # this daemon's machine cannot: not the request's fault
            return error_response(409, kind, str(exc))
    kind = inputs.CONTENT_TYPES.get(request.content_type)
    if kind is None:
        return error_response(415, field, f"Content-Type must be one of {', '.join(inputs.CONTENT_TYPES)} "
                                          f"(or application/json with a segment name), got {request.content_type!r}")
    width, height = _header_int(request, "X-Width"), _header_int(request, "X-Height")
    body = await _read_input(request, kind, width, height, field)
    if isinstance(body, web.Response):
        return body
    return web.json_response(await service.put(body, kind, width, height, "rest"))


async def get_input(request: web.Request) -> web.Response:
    return web.json_response(service_of(request, INPUTS).health())


async def delete_input(request: web.Request) -> web.Response:
    service, sched = service_of(request, INPUTS), scheduler_of(request)
    await service.detach()
    cleared = sched.clear_input()
    return web.json_response({"cleared": cleared, "version": sched.version})


def add_routes(app: web.Application) -> None:
    """Register the input routes; INPUTS is set by the wiring."""
    add_channel_route(app, "PUT", "/v1/input", put_input)
    add_channel_route(app, "GET", "/v1/input", get_input)
    add_channel_route(app, "DELETE", "/v1/input", delete_input)
