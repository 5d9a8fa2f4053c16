"""Issue 24: what locked every other local client out, sent again over real loopback sockets.

Trickled request bodies (small PATCHes and large uploads) and long-lived requests from 127.0.0.1
against a real daemon (null renderer), with short deadlines set through the config. Each test
checks that a well-behaved client is served while the flood holds, then that the flood ends.
"""

import asyncio
import time

import aiohttp
import pytest

from bridge.frontends.http.connections import HttpLimits
from conftest import null_factory

SLOW_PATCH = (b"PATCH /v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 60000\r\n\r\n{")
SIDE = 4096  # a raw RGBA upload of 4096x4096: 64 MiB declared
SLOW_UPLOAD = (f"PUT /v1/input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
               f"X-Width: {SIDE}\r\nX-Height: {SIDE}\r\nContent-Length: {SIDE * SIDE * 4}\r\n\r\n").encode() + b"\x00"


class Trickle:
    """Raw connections that send a request head and then one body byte every ``every_s``."""

    def __init__(self):
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._task: asyncio.Task | None = None

    async def open(self, port: int, n: int, head: bytes, every_s: float) -> None:
        for _ in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await writer.drain()
            self.conns.append((reader, writer))
        self._task = asyncio.create_task(self._drip(every_s))

    async def _drip(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            for reader, writer in self.conns:
                if not writer.is_closing() and not reader.at_eof():
                    writer.write(b" ")

    async def answers(self, timeout: float) -> list[bytes]:
        """What the daemon sent each connection before closing it; fails if one stays open past ``timeout``."""
        async def answer(reader):
            try:
                return await asyncio.wait_for(reader.read(), timeout)
            except ConnectionResetError:
                return b""
        return await asyncio.gather(*(answer(reader) for reader, _ in self.conns))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, writer in self.conns:
            writer.close()


@pytest.fixture
async def trickle():
    t = Trickle()
    yield t
    await t.close()


def assert_ended_with_408(answers: list[bytes]) -> None:
    """Every trickle was closed by the daemon, with a 408 saying why. A byte dripped after the daemon's
    close makes its kernel answer with a reset, which can drop the 408 unread here (b'')."""
    told = [a for a in answers if a]
    assert all(a.startswith(b"HTTP/1.1 408") and b"request body too slow" in a for a in told), {a[:120] for a in told}
    assert len(told) >= len(answers) // 2, f"{len(answers) - len(told)} of {len(answers)} reset before their 408"


async def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_trickled_patches_do_not_lock_out_local_clients_and_end_with_408(config, daemon_factory, trickle):
    """64 PATCHes declaring 60,000 bytes, one byte at a time, from 127.0.0.1 (the per-address cap)."""
    limits = HttpLimits(body_grace_s=6.0, body_timeout_s=30.0)  # the pause timeout never fires here
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        await trickle.open(daemon.http_port, limits.max_per_address, SLOW_PATCH, every_s=0.3)
        await until(lambda: daemon.health()["http"]["bodies"]["reading"] == limits.max_per_address)
        await asyncio.sleep(1.2)  # judged behind the minimum rate after their first second
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for seed in (1, 2, 3):  # the first needs a connection: a trickle gives its own up
                async with session.get("/v1/health", headers={"Connection": "close"}) as r:
                    assert r.status == 200
                async with session.patch("/v1/params", json={"seed": seed}, headers={"Connection": "close"}) as r:
                    assert r.status == 200, await r.text()
        reading = daemon.health()["http"]["bodies"]["reading"]
        assert reading >= limits.max_per_address - 2  # served while the trickle holds, not after it ended
        answers = await trickle.answers(timeout=limits.body_grace_s + 10)
        assert_ended_with_408(answers)
        assert daemon.scheduler.params.seed == 3  # only the well-behaved PATCHes changed anything
        bodies = daemon.health()["http"]["bodies"]
        assert bodies["evicted_slow"] >= 1 and bodies["too_slow"] >= 1 and bodies["reading"] == 0


async def test_trickled_large_uploads_do_not_hold_every_slot(config, daemon_factory, trickle):
    """4 uploads declaring 64 MiB at one byte a tick hold the 4 large-upload slots; 4 MiB uploads still go in."""
    limits = HttpLimits(body_grace_s=3.0, body_timeout_s=30.0)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        await trickle.open(daemon.http_port, limits.max_large_bodies, SLOW_UPLOAD, every_s=0.3)
        await until(lambda: daemon.health()["http"]["bodies"]["large"] == limits.max_large_bodies)
        await asyncio.sleep(1.2)
        side = 1024  # 4 MiB of raw RGBA
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for i in range(3):
                async with session.put("/v1/input", data=bytes([i]) * (side * side * 4), headers={
                        "Content-Type": "application/octet-stream", "X-Width": str(side), "X-Height": str(side)}) as r:
                    assert r.status == 200, await r.text()
            assert daemon.health()["http"]["bodies"]["large"] >= 1  # not every trickle was ended: they made room
        answers = await trickle.answers(timeout=limits.body_grace_s + 10)
        assert_ended_with_408(answers)
        assert daemon.scheduler.input is not None and daemon.scheduler.input.width == side


async def test_a_body_that_keeps_the_minimum_rate_is_never_ended(config, daemon_factory, trickle):
    """The other side: a body slower than loopback but above the minimum rate completes (the deadline grows)."""
    limits = HttpLimits(body_grace_s=0.5, body_min_rate=2000)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        body = b'{"prompt": "' + b"a" * 2980 + b'"}'
        writer.write(b"PATCH /v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        for i in range(0, len(body), 500):  # about 5,000 bytes a second, for 0.6 s: past the grace period
            writer.write(body[i:i + 500])
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert daemon.scheduler.params.prompt == "a" * 2980


async def test_local_streams_cannot_lock_out_other_local_clients(config, daemon_factory):
    """64 WebSockets and 64 waiting long-polls from 127.0.0.1: at most half the per-address connections are
    streams; past that 503, and /v1/health, PATCH and frames keep answering."""
    limits = HttpLimits()
    total_cap, per_address = limits.stream_caps()
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        await daemon.scheduler.next_frame(0, 5)
        seq = daemon.health()["frame_seq"]
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as streams:
            async def websocket():
                try:
                    return await streams.ws_connect("/v1/ws")
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status

            async def long_poll():
                async with streams.get(f"/v1/frame.rgba?after={seq + 1000}&timeout=20") as r:
                    return r.status, await r.text()

            sockets = await asyncio.gather(*(websocket() for _ in range(64)))
            opened = [ws for ws in sockets if not isinstance(ws, int)]
            assert len(opened) == per_address and sorted(set(sockets) - set(opened)) == [503]
            polls = [asyncio.create_task(long_poll()) for _ in range(64)]
            refused = [await poll for poll in polls[:8]]  # the streams are full: these answer at once
            assert all(status == 503 and "too many streams" in text for status, text in refused), refused
            async with aiohttp.ClientSession(base) as other:  # another local plugin
                for _ in range(5):
                    async with other.get("/v1/health") as r:
                        health = await r.json()
                        assert r.status == 200 and health["http"]["streams"] == per_address
                async with other.patch("/v1/params", json={"seed": 5}) as r:
                    assert r.status == 200
                async with other.get("/v1/frame.rgba") as r:
                    assert r.status == 200
                async with other.get("/v1/ws") as r:  # a plain GET of the WebSocket route: 503 names why
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await opened[0].receive_json())["type"] == "hello"  # the streams that got in are served
            for ws in opened:
                await ws.close()
            await until(lambda: daemon.health()["http"]["streams"] == 0)
            async with streams.get(f"/v1/frame.rgba?after={seq + 1000}&timeout=0.1") as r:  # room again
                assert r.status == 204
            await asyncio.gather(*polls[8:])
        assert daemon.health()["http"]["refused_streams"] >= 64
