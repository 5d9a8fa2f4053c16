"""The live page's WebSocket, ``GET /v1/ws`` (and ``/v1/channels/NAME/ws``): JSON messages in, frames out.

Text messages are parameter changes (through the engine's change door, like REST), the frame
format and quality; binary messages are images (input, control, style). Frames go out as binary
messages: a ``streams.HEADER`` then JPEG, PNG or raw RGBA, each preceded by a ``params`` message
when the version changes. Only this daemon's own page (and ``--cors-origin`` origins) may connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from ...core.access import HttpLimits
from ...core.errors import BridgeError, ValidationError
from ...engine.channel import Channel
from ...engine.channels import ChannelRegistry, check_name
from ..security import ACCESS
from .connections import HTTP_LIMITS, stream_slot, watch_messages
from .control_api import CONTROLS
from .input_api import INPUTS
from .inputs import (
    MAX_INPUT_BYTES,
    WS_CONTROL_NAME,
    WS_INPUT,
    is_ws_control,
    is_ws_style,
)
from .rest import CHANNELS, change_params, channel_name, error_response, loads_strict
from .stream_lifetime import CLOSERS, ENCODER, HUB, close_or_abort, closer_registered
from .streams import HEADER, FrameEncoder, StreamFormat, Subscription
from .style_api import STYLES

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_WS_MESSAGE_BYTES = MAX_INPUT_BYTES + WS_INPUT.size + WS_CONTROL_NAME  # the largest image message: no more
MESSAGE_KEYS = ("params", "format", "quality")

SCHEMA = {
    "websocket": {
        "in": {"params": "partial change, as PATCH /v1/params", "format": "jpeg, png or rgba",
               "quality": "JPEG quality 1-100", "binary": "an input image (see input.websocket)"},
        "out_text": {"hello": "on connect: params, version, format, quality",
                     "applied": "reply to a good message: version, warnings, format, quality",
                     "input": "reply to an input image: digest, width, height, changed, active, version",
                     "error": "reply to a bad message: {error: {field, message}}",
                     "params": "the params of the frames that follow: version, params"},
        "out_binary": {
            "byte_order": "little-endian", "header_bytes": HEADER.size,
            "fields": [["magic", "4s", "TBW1"], ["header_size", "u16"], ["format", "u8", "0 rgba, 1 png, 2 jpeg"],
                       ["reserved", "u8"], ["seq", "u64"], ["params_version", "u64"], ["width", "u32"],
                       ["height", "u32"], ["render_ms", "f32"], ["payload_bytes", "u32"]],
            "payload": "follows header_size bytes; rgba is width*height*4 bytes, rows top-first",
        },
    },
}


def _foreign_origin(request: web.Request) -> str | None:
    # Browsers let any web site open a WebSocket to localhost: only this daemon's own page (and
    # the --cors-origin origins) may. Tools that are not browsers send no Origin.
    origin = request.headers.get("Origin")
    if origin is None or urlsplit(origin).netloc == request.host or request.app[ACCESS].trusts_origin(origin):
        return None
    return origin


class _WsClient:
    """One WebSocket: its channel's frames once the channel exists, its chosen format, and the lock
    that keeps a params message before its frame."""

    def __init__(self, ws: web.WebSocketResponse, fmt: StreamFormat):
        self.ws = ws
        self.format = fmt
        self.sub: Subscription | None = None  # the channel's frames; None until the channel exists
        self.lock = asyncio.Lock()

    async def send_json(self, body: dict) -> None:
        async with self.lock:
            await self.ws.send_str(json.dumps(body))

    async def send_frames(self, encoder: FrameEncoder) -> None:
        last_version = None
        try:
            while (frame := await self.sub.take()) is not None:
                message = await encoder.ws_message(frame, self.format)
                async with self.lock:
                    if frame.version != last_version:
                        await self.ws.send_str(json.dumps(
                            {"type": "params", "version": frame.version, "params": frame.params.to_json()}))
                        last_version = frame.version
                    await self.ws.send_bytes(message)
        except ConnectionError:
            pass  # the client went away; the handler's read loop ends too
        except Exception:  # a loop boundary: report, and end this client rather than leave it frameless
            log.exception("websocket frame sender failed")
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"frame sender failed")

    async def handle(self, text: str, request: web.Request) -> dict:
        """One text message in, one reply out (``applied`` or ``error``); params go through the door,
        which creates the channel as a PATCH does."""
        try:
            body = _parse_message(text)
            fmt = StreamFormat.parse(body, self.format)
            applied = await change_params(request.app, channel_name(request), body["params"]) \
                if "params" in body else None
        except ValidationError as exc:
            return {"type": "error", **exc.to_json()}
        except BridgeError as exc:  # creating the channel refused: past --max-channels (REST's 409 wording)
            return {"type": "error", **ValidationError("channel", str(exc)).to_json()}
        channel = request.app[CHANNELS].get(channel_name(request))
        if fmt != self.format:
            self.format = fmt
            if channel is not None and channel.scheduler.latest is not None and self.sub is not None \
                    and not self.sub.pending:
                self.sub.offer(channel.scheduler.latest)  # show the current frame in the new format
        version = applied.version if applied else channel.scheduler.version if channel is not None else 0
        return {"type": "applied", "version": version, "warnings": list(applied.warnings) if applied else [],
                "format": self.format.kind, "quality": self.format.quality}


def _parse_message(text: str) -> dict[str, Any]:
    try:
        body = loads_strict(text)
    except ValueError as exc:
        raise ValidationError(None, f"message is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError(None, 'expected a JSON object such as {"params": {"prompt": "a cat"}}, '
                                    f"got {type(body).__name__}")
    for key in body:
        if key not in MESSAGE_KEYS:
            raise ValidationError(key[:64], f"unknown message key {key[:64]!r}; known: {', '.join(MESSAGE_KEYS)} "
                                            '(parameters go inside "params")')
    return body


async def websocket(request: web.Request) -> web.StreamResponse:
    """``/v1/ws`` and ``/v1/channels/NAME/ws``. A channel that does not exist yet is created by the
    first ``params`` message (as a PATCH does); until then the hello says version 0 and the
    daemon's initial params, and no frames come."""
    origin = _foreign_origin(request)
    if origin is not None:
        return error_response(403, None, f"WebSocket from origin {origin[:100]!r} refused: only pages served "
                                         "by this daemon may connect")
    fmt = StreamFormat.parse(request.query)
    name, registry = check_name(channel_name(request)), request.app[CHANNELS]
    # No per-message deflate: frames are already compressed (or raw and large), and it costs CPU.
    # Binary messages are input images, so the transport takes their size; text is held to 64 KiB below.
    # The heartbeat closes a client that went silent, also one stalled inside a large message.
    limits = request.app.get(HTTP_LIMITS, HttpLimits())
    most = limits.ws_max_message_bytes or MAX_WS_MESSAGE_BYTES  # aiohttp refuses max_msg_size itself: + 1
    ws = web.WebSocketResponse(compress=False, max_msg_size=most + 1, heartbeat=limits.ws_heartbeat_s)
    with stream_slot(request):
        await ws.prepare(request)
        with watch_messages(request) as delivered:
            return await _serve_websocket(request, ws, fmt, name, registry, delivered)


async def _serve_websocket(request: web.Request, ws: web.WebSocketResponse, fmt: StreamFormat, name: str,
                           registry: ChannelRegistry, delivered: Callable[[], None]) -> web.WebSocketResponse:

    async def close(reason: str) -> None:
        async def tell_and_close() -> None:
            if reason == "deleted":  # the client may recreate it (PATCH) or pick another channel
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(json.dumps({"type": "deleted", "channel": name}))
            await ws.close(code=WSCloseCode.GOING_AWAY,
                           message=b"channel deleted" if reason == "deleted" else b"daemon stopping")
        await close_or_abort(request, tell_and_close())

    client = _WsClient(ws, fmt)
    senders: list[asyncio.Task] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(closer_registered(close, request.app[CLOSERS]))

        def attach(channel: Channel) -> None:
            """From now on: this channel's frames, and closed when it is deleted."""
            client.sub = stack.enter_context(channel.services[HUB].subscribe("websocket"))
            stack.enter_context(closer_registered(close, channel.services[CLOSERS]))
            senders.append(asyncio.create_task(client.send_frames(channel.services[ENCODER]), name="ws-sender"))

        try:
            channel = registry.get(name)
            sched = channel.scheduler if channel is not None else None
            await client.send_json({"type": "hello", "protocol": 1, "channel": name,
                                    "version": sched.version if sched else 0,
                                    "params": (sched.params if sched else registry.initial).to_json(),
                                    "format": fmt.kind, "quality": fmt.quality})
            if channel is not None:
                attach(channel)
            async for msg in ws:
                delivered()
                if msg.type == WSMsgType.TEXT:
                    if len(msg.data) > MAX_MESSAGE_BYTES:  # characters: at least as many bytes
                        await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=b"text messages are at most 64 KiB")
                        break
                    await client.send_json(await client.handle(msg.data, request))
                elif msg.type == WSMsgType.BINARY:
                    channel = registry.get(name)
                    if channel is None:
                        await client.send_json({"type": "error", **ValidationError("channel", (
                            f"no channel {name!r} yet: a params message creates it, as PATCH "
                            f"/v1/channels/{name}/params does; then send images")).to_json()})
                        continue
                    feed = channel.services[CONTROLS] if is_ws_control(msg.data) \
                        else channel.services[STYLES] if is_ws_style(msg.data) else channel.services[INPUTS]
                    await client.send_json(await feed.ws_message(msg.data))
                if client.sub is None and (channel := registry.get(name)) is not None:
                    attach(channel)  # created by this message (or by another client meanwhile)
        except (ConnectionError, asyncio.CancelledError) as exc:
            # The server cancels the handler when the connection drops (handler_cancellation).
            log.info("websocket client %s went away without closing; its stream ended", request.remote)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
    log.debug("websocket closed: %s, code %s", request.remote, ws.close_code)
    return ws
