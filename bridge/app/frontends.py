"""Wires the front ends: the HTTP app's guards, routes and schema; the OSC server; and each
channel's front-end services (frame hub and encoder for the live streams; input, control and
style feeds).

``http`` sets up the app once; each other function returns one aiohttp cleanup context: what it
starts, it stops. They run after ``bridge.app.engine.render_engine`` made the channel registry.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..config import Config
from ..engine.channel import Channel
from ..frontends import security, sockets
from ..frontends.http import (
    bodies,
    channels_api,
    connections,
    control_api,
    input_api,
    live,
    openapi,
    record_api,
    rest,
    style_api,
)
from ..frontends.http.streams import FrameEncoder, FrameHub
from ..frontends.osc import addresses
from ..frontends.osc.server import OscServer

OSC = web.AppKey("osc", OscServer)
OSC_SOCKET = web.AppKey("osc_socket", socket.socket)  # bound early by Daemon (see bridge.frontends.sockets)
GUARD = connections.GUARD

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def http(app: web.Application, config: Config) -> None:
    """Access checks, connection limits, CORS, every route and the front ends' part of ``/v1/schema``."""
    app[security.ACCESS] = config.access
    app[GUARD] = connections.ConnectionGuard(config.http)
    app[connections.HTTP_LIMITS] = config.http
    app[bodies.BODY_READS] = app[GUARD].bodies
    app.middlewares.append(app[GUARD].middleware)  # outermost: marks the connection busy
    app.middlewares.append(security.middleware(config.host, config.access))  # before any route
    app.on_response_prepare.append(security.add_cors_headers)
    app[rest.OSC_ADDRESSES] = addresses.schema()
    app[rest.SCHEMA_EXTRA] = {**live.SCHEMA, **input_api.SCHEMA, **channels_api.SCHEMA, **record_api.SCHEMA,
                              **control_api.SCHEMA, **style_api.SCHEMA}
    rest.add_routes(app)
    live.add_routes(app)
    input_api.add_routes(app)
    channels_api.add_routes(app)
    record_api.add_routes(app)
    control_api.add_routes(app)
    style_api.add_routes(app)
    openapi.add_routes(app)
    app.on_shutdown.extend([rest.end_long_polls, live.close_clients])  # before the cleanup contexts unwind


def osc(config: Config) -> CleanupContext:
    """The OSC server on the socket ``Daemon`` bound (``OSC_SOCKET``), attached to every channel."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        recorder = app[record_api.RECORDER]  # channel main's, made with its outputs
        sock = app[OSC_SOCKET] if OSC_SOCKET in app else sockets.bind_osc(config.host, config.osc_port)
        # Loopback alone may change render parameters; with a token set, LoRAs and recording need
        # the sender named by --osc-allow (OSC cannot carry the token).
        allow = security.SenderFilter(config.access.osc_allow, token_set=config.access.token is not None)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: OscServer(app[rest.DOOR], allow,
                              {record_api.OSC_ADDRESS: lambda args: record_api.osc_record(recorder, args)}),
            sock=sock)
        app[OSC] = protocol
        app[rest.CHANNELS].extend(protocol.attach, protocol.detach)
        try:
            yield
        finally:
            transport.close()
            await protocol.close()

    return context


async def streams(app: web.Application) -> AsyncIterator[None]:
    """Each channel's frame hub and encoder: what the WebSocket and MJPEG streams send."""
    encoder = ThreadPoolExecutor(2, thread_name_prefix="stream-encode")

    def start(channel: Channel) -> None:
        sched = channel.scheduler
        hub = channel.services[live.HUB] = FrameHub(lambda: sched.latest)
        channel.services[live.ENCODER] = FrameEncoder(encoder, channel.services[rest.PNG_CACHE])
        channel.services[live.CLOSERS] = set()
        sched.on_frame(hub.publish)

    app[rest.CHANNELS].extend(start, lambda channel: live.close_channel_clients(channel.services))
    app[live.HUB] = app[rest.CHANNELS].main.services[live.HUB]
    app[live.ENCODER] = app[rest.CHANNELS].main.services[live.ENCODER]
    try:
        yield
    finally:
        for channel in app[rest.CHANNELS]:
            channel.services[live.HUB].close()
        encoder.shutdown(wait=True)


def live_input(config: Config) -> CleanupContext:
    """Each channel's input, control and style image feeds (uploads, WebSocket, client segments)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        decoder = ThreadPoolExecutor(1, thread_name_prefix="input")
        # The daemon's own Spout sender and Syphon server are refused as inputs, like its segments.
        own = {kind: name for kind, name in (("spout", config.spout), ("syphon", config.syphon)) if name}

        def start(channel: Channel) -> None:
            channel.services[input_api.INPUTS] = input_api.InputService(
                channel.scheduler, decoder, own_shm_name=config.shm_name, own_senders=own)
            channel.services[control_api.CONTROLS] = control_api.ControlService(
                channel.scheduler, decoder, own_shm_name=config.shm_name, own_senders=own)
            channel.services[style_api.STYLES] = style_api.StyleFeed(
                channel.scheduler, decoder, own_shm_name=config.shm_name, enabled=config.ip_adapter is not None,
                own_senders=own)

        async def stop(channel: Channel) -> None:
            await channel.services[style_api.STYLES].detach()
            await channel.services[control_api.CONTROLS].detach()
            await channel.services[input_api.INPUTS].detach()

        app[rest.CHANNELS].extend(start, stop)
        app[input_api.INPUTS] = app[rest.CHANNELS].main.services[input_api.INPUTS]
        app[control_api.CONTROLS] = app[rest.CHANNELS].main.services[control_api.CONTROLS]
        app[style_api.STYLES] = app[rest.CHANNELS].main.services[style_api.STYLES]
        try:
            yield
        finally:
            for channel in app[rest.CHANNELS]:
                await stop(channel)
            decoder.shutdown(wait=True)

    return context

