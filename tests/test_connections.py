"""Slow and surplus HTTP clients (issue 12, item 5): dropped, capped, logged once; the daemon keeps serving.

Real loopback sockets against a real daemon (null renderer) with short limits set through the
config; waits are on conditions (a socket's EOF, a counter), never on the default 10 s.
"""

import asyncio
import logging
import time

import aiohttp
import pytest

from bridge.frontends.connections import HttpLimits, ThrottledLog
from conftest import null_factory

SLOW_HEAD = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line never comes


async def open_slow(port: int, n: int, head: bytes = SLOW_HEAD) -> list[tuple]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await writer.drain()
        conns.append((reader, writer))
    return conns


async def closed_by_daemon(reader: asyncio.StreamReader, timeout: float = 30) -> bytes:
    """What the daemon sent before closing (b'' for a plain close); fails if it keeps the socket open."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def close_all(conns) -> None:
    for _, writer in conns:
        writer.close()


async def test_slow_heads_are_closed_and_a_normal_request_still_gets_in(config, daemon_factory, caplog):
    limits = HttpLimits(head_timeout_s=1.0, max_per_address=20, max_connections=30)
    with caplog.at_level(logging.WARNING, logger="bridge.frontends.connections"):
        async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
            slow = await open_slow(daemon.http_port, 40)  # twice the per-address cap, all from 127.0.0.1
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/health") as r:
                    assert r.status == 200
                    health = await r.json()
            assert health["http"]["open"] <= 20 and health["http"]["evicted"] >= 20
            for reader, _ in slow:  # evicted at once or closed at the head timeout: none stays open
                assert await closed_by_daemon(reader) == b""
            close_all(slow)
            await until(lambda: daemon.health()["http"]["open"] == 0)
            assert daemon.health()["http"]["timed_out"] >= 1
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.frontends.connections"]
    evictions = [m for m in messages if "to make room" in m]
    timeouts = [m for m in messages if "no complete request within 1 s" in m]
    assert len(evictions) == 1 and len(timeouts) == 1, messages  # once per sender per interval


async def test_a_client_that_connects_and_says_nothing_is_closed(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory, http=HttpLimits(head_timeout_s=0.5)) as daemon:
        (reader, writer), = await open_slow(daemon.http_port, 1, head=b"")
        assert await closed_by_daemon(reader) == b""
        writer.close()
        await until(lambda: daemon.health()["http"]["timed_out"] == 1)


async def test_a_keep_alive_connection_is_not_cut_mid_request(config, daemon_factory):
    """The head timeout never ends a request being handled (a long-poll longer than the timeout)."""
    async with daemon_factory(config, renderer_factory=null_factory, http=HttpLimits(head_timeout_s=0.3)) as daemon:
        await daemon.scheduler.next_frame(0, 5)
        seq = daemon.health()["frame_seq"]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            poll = asyncio.create_task(session.get(f"/v1/frame.png?after={seq}&timeout=30"))
            await until(lambda: daemon.health()["http"]["open"] == 1)
            # the head timer fires while the long-poll waits: wait past it on the daemon's own clock
            started = time.monotonic()
            await until(lambda: time.monotonic() - started > 0.6)
            async with session.patch("/v1/params", json={"seed": 99}) as r:
                assert r.status == 200
            async with await poll as r:
                assert r.status == 200 and int(r.headers["X-Frame-Seq"]) > seq


async def test_a_stalled_body_is_answered_408_and_closed(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory, http=HttpLimits(body_timeout_s=0.5)) as daemon:
        for method, path, ctype in (("PATCH", "/v1/params", "application/json"),
                                    ("PUT", "/v1/input", "image/png")):
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: 1000\r\n\r\n{{\"seed\": ".encode())
            await writer.drain()
            answer = await closed_by_daemon(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"request body stalled" in answer
        assert daemon.scheduler.params.seed == 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/params") as r:
                assert r.status == 200


async def test_when_every_connection_is_busy_a_new_one_gets_503(config, daemon_factory, caplog):
    limits = HttpLimits(max_per_address=3)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        await daemon.scheduler.next_frame(0, 5)
        seq = daemon.health()["frame_seq"]
        polls = await open_slow(daemon.http_port, 3, head=f"GET /v1/frame.png?after={seq}&timeout=30 HTTP/1.1\r\n"
                                                          "Host: 127.0.0.1\r\n\r\n".encode())
        await until(lambda: daemon.health()["http"]["busy"] == 3)
        (reader, writer), = await open_slow(daemon.http_port, 1, head=b"")
        answer = await closed_by_daemon(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer, answer
        assert daemon.health()["http"]["refused"] == 1
        close_all(polls)
        await until(lambda: daemon.health()["http"]["open"] == 0)
        async with aiohttp.ClientSession() as session:  # room again
            async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/health") as r:
                assert r.status == 200


def test_throttled_log_says_how_many_it_left_out(caplog):
    now = [0.0]
    log = logging.getLogger("test.throttled")
    throttled = ThrottledLog(log, 60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for _ in range(1000):
            throttled("kind", "10.0.0.1", logging.WARNING, "refused %s", "10.0.0.1")
        throttled("kind", "10.0.0.2", logging.WARNING, "refused %s", "10.0.0.2")
        now[0] = 61
        throttled("kind", "10.0.0.1", logging.WARNING, "refused %s", "10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 10.0.0.1", "refused 10.0.0.2", "refused 10.0.0.1 (999 more like it not logged in the last 60 s)"]


def test_limits_are_validated_and_the_cap_leaves_files_for_the_rest():
    with pytest.raises(Exception, match="--max-connections. must be at least 1"):
        HttpLimits(max_connections=0)
    with pytest.raises(Exception, match="head_timeout_s must be more than 0"):
        HttpLimits(head_timeout_s=0)
    assert HttpLimits(max_connections=10).connection_cap() == 10
