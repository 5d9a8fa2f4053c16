"""Issue 24: WebSocket binary messages are buffered whole by aiohttp; what one may be and how many at once.

Real WebSockets over loopback against a real daemon (null renderer); the limits set small through
the config. Stalled large messages are written by hand on raw sockets (a frame header announcing
the whole message, then part of it).
"""

import asyncio
import base64
import os

import aiohttp

from bridge.frontends.http.bodies import LARGE_BODY_BYTES
from bridge.frontends.http.connections import HttpLimits
from bridge.frontends.http.inputs import pack_ws_input
from conftest import null_factory


async def open_raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


def binary_frame_head(size: int) -> bytes:
    """A masked binary frame announcing ``size`` bytes, with the mask 0 (the payload goes as it is)."""
    return bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + bytes(4)


async def close_code(reader: asyncio.StreamReader, timeout: float = 10) -> int | None:
    """The code of the close frame the daemon sends (skipping the hello and frames before it)."""
    async def read() -> int | None:
        while True:
            head = await reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(size)
            if head[0] & 0x0F == 0x8:
                return int.from_bytes(payload[:2], "big")
    try:
        return await asyncio.wait_for(read(), timeout)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None


async def reply(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    """The next text reply of type ``kind`` (frames, binary, are skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT and (body := msg.json())["type"] == kind:
            return body


async def test_a_message_over_the_configured_size_is_closed_with_1009(config, daemon_factory):
    limits = HttpLimits(ws_max_message_bytes=2 * LARGE_BODY_BYTES)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.ws_connect("/v1/ws") as ws:
                await reply(ws, "hello")
                await ws.send_bytes(bytes(limits.ws_max_message_bytes + 1))
                while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    pass
                assert ws.close_code == 1009
            async with session.ws_connect("/v1/ws") as ws:  # exactly the limit is taken (and refused as an image)
                await reply(ws, "hello")
                await ws.send_bytes(bytes(limits.ws_max_message_bytes))
                assert "TBI1" in (await reply(ws, "error"))["error"]["message"]


async def test_large_messages_in_progress_are_bounded_and_small_ones_still_go_in(config, daemon_factory):
    """Two WebSockets stalled inside 8 MiB messages hold the two large-message slots; a third is closed
    (1013) after about LARGE_BODY_BYTES, not after 8 MiB; a real input image still arrives."""
    limits = HttpLimits(max_large_bodies=2, ws_max_message_bytes=16 * LARGE_BODY_BYTES)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        port = daemon.http_port
        stalled = []
        for _ in range(2):
            reader, writer = await open_raw_websocket(port)
            writer.write(binary_frame_head(8 * LARGE_BODY_BYTES) + bytes(2 * LARGE_BODY_BYTES))
            await writer.drain()
            stalled.append((reader, writer))
        guard_health = lambda: daemon.health()["http"]["ws_messages"]  # noqa: E731
        for _ in range(500):
            if guard_health()["large_in_progress"] == 2:
                break
            await asyncio.sleep(0.01)
        assert guard_health()["large_in_progress"] == 2
        reader, writer = await open_raw_websocket(port)
        writer.write(binary_frame_head(8 * LARGE_BODY_BYTES))
        try:
            for _ in range(8):  # it is closed long before the whole message is in
                writer.write(bytes(LARGE_BODY_BYTES))
                await writer.drain()
        except ConnectionError:
            pass
        assert await close_code(reader) in (1013, None)  # the close frame, unless the reset overtook it
        writer.close()
        assert guard_health()["refused"] == 1 and guard_health()["large_in_progress"] == 2
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async with session.ws_connect("/v1/ws") as ws:
                await reply(ws, "hello")
                await ws.send_bytes(pack_ws_input("rgba", bytes(64 * 64 * 4), 64, 64))
                assert (await reply(ws, "input"))["width"] == 64
        for _, w in stalled:
            w.close()
        for _ in range(500):
            if guard_health()["large_in_progress"] == 0:
                break
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:  # the slots are back
            async with session.ws_connect("/v1/ws") as ws:
                await reply(ws, "hello")
                await ws.send_bytes(pack_ws_input("rgba", bytes(1024 * 1024 * 4), 1024, 1024))  # 4 MiB
                assert (await reply(ws, "input"))["width"] == 1024
