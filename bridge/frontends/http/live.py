"""The live front end (aiohttp): the browser page, its WebSocket and the MJPEG stream.

``GET /`` serves ``static/index.html`` (no build step, nothing from other origins).
``GET /v1/ws`` is the page's WebSocket (``websocket.py``). ``GET /v1/stream.mjpeg`` is
multipart/x-mixed-replace JPEG. Each client reads from its own latest-wins mailbox
(``streams.Subscription``), so a slow one skips frames; how the streams end is ``stream_lifetime.py``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from .connections import stream_slot
from .rest import add_channel_route, service_of
from .stream_lifetime import (
    CLOSE_TIMEOUT_S,
    CLOSERS,
    ENCODER,
    HUB,
    close_channel_clients,
    close_clients,
    close_or_abort,
    closer_registered,
)
from .streams import DEFAULT_QUALITY, FrameEncoder, FrameHub, StreamFormat
from .websocket import MAX_MESSAGE_BYTES, websocket
from .websocket import SCHEMA as WEBSOCKET_SCHEMA

# What the wiring and the tests take from here, though it lives in stream_lifetime.py or websocket.py.
__all__ = ["CLOSERS", "CLOSE_TIMEOUT_S", "ENCODER", "HUB", "MAX_MESSAGE_BYTES", "MJPEG_BOUNDARY", "SCHEMA",
           "add_routes", "close_channel_clients", "close_clients"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = ("page.js", "page.css")
MJPEG_BOUNDARY = "turbo-bridge-frame"

# The page loads only from this daemon; frames arrive as blob: images.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}

SCHEMA = {
    "live": {
        "GET /": "the live page: prompt, seed, guidance, steps, size, the frame, FPS and latency",
        "GET /v1/ws": "WebSocket; ?format=jpeg|png|rgba&quality=1..100; JSON messages in, frames out",
        "GET /v1/stream.mjpeg": "?quality=1..100 multipart/x-mixed-replace JPEG, one part per new frame; parts "
                                "end at the next boundary (no Content-Length); a slow reader skips frames",
    },
    **WEBSOCKET_SCHEMA,
}


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def static_file(request: web.Request) -> web.FileResponse:
    """The page's script and style: names from a fixed list, so no path can reach another file."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound(reason=f"no static file {name[:64]!r}")
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def mjpeg(request: web.Request) -> web.StreamResponse:
    quality = StreamFormat.parse({"format": "jpeg", "quality": request.query.get("quality", DEFAULT_QUALITY)}).quality
    hub, encoder = service_of(request, HUB), service_of(request, ENCODER)
    with stream_slot(request):
        return await _serve_mjpeg(request, hub, encoder, quality)


async def _serve_mjpeg(request: web.Request, hub: FrameHub, encoder: FrameEncoder, quality: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
        "Cache-Control": "no-store",
    })
    await response.prepare(request)
    finished = asyncio.Event()
    # A browser shows a part once the next part's headers have arrived, and frames come only when
    # something changes: so each JPEG is followed at once by the boundary and the next part's
    # headers (which therefore cannot carry a Content-Length). Parts end at the next boundary.
    part_head = f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode("ascii")
    part_end = b"\r\n" + part_head

    with hub.subscribe("mjpeg") as sub:
        async def close(reason: str) -> None:
            sub.close()  # the stream ends (a reader sees its end) whatever the reason
            await close_or_abort(request, finished.wait())

        with closer_registered(close, request.app[CLOSERS], service_of(request, CLOSERS)):
            try:
                await response.write(part_head)
                while (frame := await sub.take()) is not None:
                    jpeg = await encoder.jpeg(frame, quality)
                    await response.write(jpeg)
                    await response.write(part_end)
            except (ConnectionError, asyncio.CancelledError) as exc:
                log.info("MJPEG client %s went away; its stream ended", request.remote)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                finished.set()
    return response


def add_routes(app: web.Application) -> None:
    """Register the page and the streams; HUB and ENCODER are set by the wiring."""
    app[CLOSERS] = set()
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static_file)
    add_channel_route(app, "GET", "/v1/ws", websocket)
    add_channel_route(app, "GET", "/v1/stream.mjpeg", mjpeg)
