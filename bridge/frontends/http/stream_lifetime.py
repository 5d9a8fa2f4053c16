"""How the live streams (WebSocket, MJPEG) end: on shutdown, when their channel is deleted, or when
a client stops reading.

Each stream registers its ``close(reason)`` in the app's ``CLOSERS`` and in its channel's (the
same key in ``Channel.services``), beside the channel's ``HUB`` (its frames) and ``ENCODER``; the
wiring sets those three. ``close_clients`` ends every stream on shutdown (reason "stopping"),
``close_channel_clients`` those of one channel (reason "deleted").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from .rest import CHANNELS
from .streams import FrameEncoder, FrameHub

CLOSE_TIMEOUT_S = 2.0

HUB = web.AppKey("frame_hub", FrameHub)
ENCODER = web.AppKey("frame_encoder", FrameEncoder)
CLOSERS = web.AppKey("stream_closers", set)  # every stream's close(reason); per channel too, under the same key


@contextlib.contextmanager
def closer_registered(close: Callable[[str], Awaitable[None]], *closers: set) -> Iterator[None]:
    """``close(reason)`` ends a stream on shutdown (reason "stopping": the app's ``CLOSERS``) or when
    its channel goes (reason "deleted": the channel's ``CLOSERS``)."""
    for each in closers:
        each.add(close)
    try:
        yield
    finally:
        for each in closers:
            each.discard(close)


async def close_or_abort(request: web.Request, graceful: Awaitable) -> None:
    """Await a graceful close; abort the connection of a client that stopped reading.

    (A transport's ``close`` would wait to flush what that client never reads.)
    """
    try:
        await asyncio.wait_for(graceful, CLOSE_TIMEOUT_S)
    except (asyncio.TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()


async def close_clients(app: web.Application) -> None:
    """On shutdown: end every stream and close every WebSocket (going away)."""
    for hub in [channel.services[HUB] for channel in app[CHANNELS] if HUB in channel.services] \
            if CHANNELS in app else [app[HUB]] if HUB in app else []:
        hub.close()
    await asyncio.gather(*(close("stopping") for close in list(app.get(CLOSERS, ()))))


async def close_channel_clients(services: dict) -> None:
    """A channel is going: its WebSocket clients are told (``{"type": "deleted"}``) and closed, streams end."""
    services[HUB].close()
    await asyncio.gather(*(close("deleted") for close in list(services[CLOSERS])))
