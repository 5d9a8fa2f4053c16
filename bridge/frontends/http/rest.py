"""The REST front end (aiohttp): read the body, hand the change to the engine's door, answer at once.

Errors are ``{"error": {"field": ..., "message": ...}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ...core.errors import ValidationError
from ...core.frame import Frame
from ...core.params import schema
from ...engine.changes import ChangeDoor
from ...engine.channel import Channel, ChannelConflictError, UnknownChannelError
from ...engine.channels import MAIN, ChannelRegistry
from ...engine.scheduler import Applied, Scheduler
from ...outputs.png import PngCache
from .bodies import read_body
from .connections import stream_slot

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
INTEGER = re.compile(r"-?[0-9]{1,20}")
MAX_POLL_SECONDS = 60.0
DEFAULT_POLL_SECONDS = 10.0

SCHEDULER = web.AppKey("scheduler", Scheduler)
DOOR = web.AppKey("change_door", ChangeDoor)  # where every change enters (bridge.engine.changes)
PNG_CACHE = web.AppKey("png_cache", PngCache)
HEALTH = web.AppKey("health", Callable[[], dict])
OSC_ADDRESSES = web.AppKey("osc_addresses", dict)
SCHEMA_EXTRA = web.AppKey("schema_extra", dict)  # other front ends' part of /v1/schema
STOPPING = web.AppKey("stopping", asyncio.Event)  # set on shutdown: long-polls answer at once
CHANNELS = web.AppKey("channels", ChannelRegistry)
CHANNEL_PREFIX = "/v1/channels/{channel}"
CHANNEL_PATHS = web.AppKey("channel_paths", set)  # the /v1/PATH routes that also exist per channel


def add_channel_route(app: web.Application, method: str, path: str,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
    """Register a per-stream route twice: ``/v1/PATH`` (channel main) and ``/v1/channels/NAME/PATH``.

    The one place per-channel routes are made: handlers find their channel with ``channel_of``.
    """
    assert path.startswith("/v1/"), path
    if CHANNEL_PATHS not in app:
        app[CHANNEL_PATHS] = set()
    app[CHANNEL_PATHS].add(path)
    app.router.add_route(method, path, handler)
    app.router.add_route(method, CHANNEL_PREFIX + path[len("/v1"):], handler)


def channel_name(request: web.Request) -> str:
    return request.match_info.get("channel", MAIN)


def channel_of(request: web.Request) -> Channel:
    """The request's channel (``main`` for the unprefixed routes); 404 when there is none of that name."""
    return request.app[CHANNELS][channel_name(request)]


def service_of(request: web.Request, key: web.AppKey) -> Any:
    """A front end's per-channel object (frame hub, input service, ...) for the request's channel."""
    if CHANNELS not in request.app:  # an app wired without channels: the app-wide object is main's
        return request.app[key]
    return channel_of(request).services[key]


def scheduler_of(request: web.Request) -> Scheduler:
    if CHANNELS not in request.app:
        return request.app[SCHEDULER]
    return channel_of(request).scheduler


def error_response(status: int, field: str | None, message: str) -> web.Response:
    return web.json_response(ValidationError(field, message).to_json(), status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ValidationError as exc:
        return web.json_response(exc.to_json(), status=400)
    except UnknownChannelError as exc:
        return error_response(404, "channel", str(exc))
    except ChannelConflictError as exc:  # past --max-channels, or its outputs cannot start
        return error_response(409, "channel", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        response = error_response(exc.status, None, exc.reason)
        for header in ("Allow", "Retry-After"):  # a 405 must say which methods the route takes
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


async def get_params(request: web.Request) -> web.Response:
    sched = scheduler_of(request)
    return web.json_response({**sched.params.to_json(), "version": sched.version})


async def read_json(request: web.Request) -> Any:
    """The request's strict JSON body (size-checked as it arrives), or the 4xx ``web.Response`` to send."""
    raw = await read_body(request, MAX_BODY_BYTES, None, f"request body must be at most {MAX_BODY_BYTES} bytes")
    if isinstance(raw, web.Response):
        return raw
    try:
        return loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return error_response(400, None, "request body must be UTF-8 JSON")
    except ValueError as exc:
        return error_response(400, None, f"request body is not valid JSON: {exc}")


async def change_params(app: web.Application, channel: str, raw: Any) -> Applied:
    """One raw change of ``channel`` through the door (PATCH and the WebSocket's ``params``).

    A missing channel is created, but only by a change that is valid as a whole: a typo or a LoRA that
    does not load makes none. Raises ``ValidationError``, ``ChannelConflictError`` (409).
    """
    door = app[DOOR]
    return (await door.apply(door.parse({channel: raw}, creates=True)))[channel]


async def patch_params(request: web.Request) -> web.Response:
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    applied = await change_params(request.app, channel_name(request), body)
    return web.json_response({"version": applied.version, "warnings": list(applied.warnings)})


async def get_loras(request: web.Request) -> web.Response:
    """The LoRA files in --lora-dir (rescanned), and which are active with what weight."""
    sched = scheduler_of(request)
    gate = sched.loras
    files = await gate.listing() if gate is not None else []
    return web.json_response({"folder": gate.folder if gate is not None else None, "loras": files,
                              "active": dict(sched.params.loras)})


def loads_strict(text: str):
    """``json.loads`` without NaN/Infinity, which JSON does not allow; raises ``ValueError``."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _query_number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    # A plain decimal number only: float() would also take '1_0', ' 5', 'infinity' and '١'.
    value = float(text) if NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(name, f"{name} must be a number in [{low:g}, {high:g}], got {text[:64]!r}")
    return value


def _query_integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise ValidationError(name, f"{name} must be an integer in [{low}, {high}], got {text[:64]!r}")
    return int(text)


async def _wait_frame(request: web.Request) -> Frame | None:
    after = _query_integer(request, "after", -1, -1, 2**63 - 1)
    timeout = _query_number(request, "timeout", DEFAULT_POLL_SECONDS, 0, MAX_POLL_SECONDS)
    stopping = request.app[STOPPING]
    sched = scheduler_of(request)
    deleted = channel_of(request).deleted if CHANNELS in request.app else asyncio.Event()
    waits = [asyncio.ensure_future(sched.next_frame(after, timeout)),
             asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(deleted.wait())]
    latest = sched.latest
    waiting = timeout > 0 and (latest is None or latest.seq <= after)
    try:
        with stream_slot(request) if waiting else contextlib.nullcontext():  # a waiting poll is a stream
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server cancels the handler when its client disconnects
        log.info("long-poll from %s ended: the client went away", request.remote)
        raise
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if stopping.is_set():
        raise web.HTTPServiceUnavailable(reason="daemon stopping")
    if deleted.is_set():
        raise web.HTTPGone(reason=f"channel {channel_name(request)!r} was deleted")
    return waits[0].result()


async def end_long_polls(app: web.Application) -> None:
    """On shutdown (before the server waits for handlers): answer every long-poll with 503."""
    app[STOPPING].set()


def _frame_headers(frame: Frame) -> dict[str, str]:
    return {
        "X-Frame-Seq": str(frame.seq),
        "X-Params-Version": str(frame.version),
        "X-Render-Ms": f"{frame.render_ms:.2f}",
        "X-Seed": str(frame.params.seed),
        "X-Width": str(frame.width),
        "X-Height": str(frame.height),
        "Cache-Control": "no-store",
    }


def _no_frame(request: web.Request) -> web.Response:
    latest = scheduler_of(request).latest
    return web.Response(status=204, headers={"X-Frame-Seq": str(latest.seq if latest else 0)})


async def frame_png(request: web.Request) -> web.Response:
    frame = await _wait_frame(request)
    if frame is None:
        return _no_frame(request)
    body = await service_of(request, PNG_CACHE).png(frame)
    return web.Response(body=body, content_type="image/png", headers=_frame_headers(frame))


async def frame_rgba(request: web.Request) -> web.Response:
    frame = await _wait_frame(request)
    if frame is None:
        return _no_frame(request)
    return web.Response(body=frame.pixels.tobytes(), content_type="application/octet-stream",
                        headers=_frame_headers(frame))


async def get_schema(request: web.Request) -> web.Response:
    sched = request.app[SCHEDULER]
    return web.json_response({
        "protocol": 1,
        "parameters": schema(sched.limits),
        "osc": request.app[OSC_ADDRESSES],
        "rest": {
            "GET /v1/health": "status and counters",
            "GET /v1/params": "current parameters with the state's version",
            "PATCH /v1/params": "partial change (JSON object); returns version and warnings",
            "GET /v1/frame.png": "?after=SEQ&timeout=S long-poll for a frame newer than SEQ; 204 on timeout",
            "GET /v1/frame.rgba": "same, raw RGBA8 rows top-first; X-Width/X-Height give the size",
            "GET /v1/schema": "this document",
            "GET /v1/openapi.json": "the HTTP routes as an OpenAPI 3.0 document",
        },
        **request.app.get(SCHEMA_EXTRA, {}),
    })


def add_routes(app: web.Application) -> None:
    """Register the v1 routes; the app's keys (SCHEDULER, PNG_CACHE, HEALTH, ...) are set by the wiring."""
    app.middlewares.append(errors_middleware)
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/v1/health", health)
    add_channel_route(app, "GET", "/v1/params", get_params)
    add_channel_route(app, "PATCH", "/v1/params", patch_params)
    add_channel_route(app, "GET", "/v1/frame.png", frame_png)
    add_channel_route(app, "GET", "/v1/frame.rgba", frame_rgba)
    app.router.add_get("/v1/schema", get_schema)
    add_channel_route(app, "GET", "/v1/loras", get_loras)
