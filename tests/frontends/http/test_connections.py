"""Slow and surplus HTTP clients (issue 12, item 5): dropped, capped, logged once; the daemon keeps serving.

Real loopback sockets against a real daemon (null renderer) with short limits set through the
config; waits are on conditions (a socket's EOF, a counter), never on the default 10 s.
"""

import asyncio
import base64
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from bridge.frontends.http.connections import HttpLimits
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
    with caplog.at_level(logging.WARNING, logger="bridge.frontends.http.connections"):
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
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.frontends.http.connections"]
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


async def test_a_websocket_stalled_inside_a_large_message_is_closed(config, daemon_factory):
    """Half of a 1 MiB binary message, then silence: the heartbeat's ping cannot be answered mid-frame."""
    async with daemon_factory(config, renderer_factory=null_factory, http=HttpLimits(ws_heartbeat_s=0.5)) as daemon:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        size = 1 << 20  # binary, masked, 64-bit length
        writer.write(bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + os.urandom(4) + bytes(size // 2))
        await writer.drain()
        await closed_by_daemon(reader)  # whatever it sent (hello, frame, ping), it then closes
        writer.close()
        await until(lambda: daemon.health()["streams"]["clients"] == {} and daemon.health()["http"]["open"] == 0)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{daemon.http_port}/v1/ws") as ws:
                assert (await ws.receive_json())["type"] == "hello"  # a client that answers pings is served


async def test_when_every_connection_is_busy_a_new_one_gets_503(config, daemon_factory, caplog):
    """Busy and keeping up: bodies arriving above the (here tiny) minimum rate are never ended for room."""
    limits = HttpLimits(max_per_address=3, body_grace_s=60, body_min_rate=0.01)
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        bodies = await open_slow(daemon.http_port, 3, head=b"PATCH /v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                            b"Content-Length: 10\r\n\r\n{")
        await until(lambda: daemon.health()["http"]["busy"] == 3)
        (reader, writer), = await open_slow(daemon.http_port, 1, head=b"")
        answer = await closed_by_daemon(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer, answer
        assert daemon.health()["http"]["refused"] == 1
        close_all(bodies)
        await until(lambda: daemon.health()["http"]["open"] == 0)
        async with aiohttp.ClientSession() as session:  # room again
            async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/health") as r:
                assert r.status == 200


async def test_streams_past_their_cap_get_503_and_short_requests_still_get_in(config, daemon_factory):
    """Long-polls hold at most half of an address's connections (3 of 6 here); /v1/health answers beside them."""
    async with daemon_factory(config, renderer_factory=null_factory, http=HttpLimits(max_per_address=6)) as daemon:
        await daemon.scheduler.next_frame(0, 5)
        seq = daemon.health()["frame_seq"]
        poll = f"GET /v1/frame.png?after={seq}&timeout=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        polls = await open_slow(daemon.http_port, 3, head=poll)
        await until(lambda: daemon.health()["http"]["streams"] == 3)
        (reader, writer), = await open_slow(daemon.http_port, 1, head=poll.replace(b"HTTP/1.1", b"HTTP/1.0"))
        answer = await closed_by_daemon(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 503") and b"too many streams" in answer and b"Retry-After: 1" in answer
        for _ in range(4):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/health") as r:
                    assert r.status == 200
        close_all(polls)
        await until(lambda: daemon.health()["http"]["open"] == 0 and daemon.health()["http"]["streams"] == 0)


def test_limits_are_validated_and_the_cap_leaves_files_for_the_rest():
    with pytest.raises(Exception, match="--max-connections. must be at least 1"):
        HttpLimits(max_connections=0)
    with pytest.raises(Exception, match="head_timeout_s must be more than 0"):
        HttpLimits(head_timeout_s=0)
    assert HttpLimits(max_connections=10).connection_cap() == 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert HttpLimits().connection_cap() == 256 and HttpLimits(max_connections=1000).connection_cap() == 480
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- a real daemon process at a low file limit (issue 12, items 4 and 5) -------------------------------

READY = re.compile(r"ready: http://127\.0\.0\.1:(\d+)/v1/")


def start_logged(cache_dir, log_path, *extra, files=None):
    """``python -m bridge serve --model null`` with its log in a file, optionally at a lower file limit."""
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("TURBO_BRIDGE_TOKEN", None)
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))) if files else None
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "null", "--http-port", "0",
                                 "--osc-port", "0", "--shm-name", "", "--width", "64", "--height", "64", *extra],
                                stdout=subprocess.DEVNULL, stderr=log_file, env=env, preexec_fn=limit)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if match := READY.search(log_path.read_text()):
            return proc, int(match.group(1))
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("daemon not ready:\n" + log_path.read_text())


def get_json(port: int, path: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


def flood(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(SLOW_HEAD)
        socks.append(s)
    return socks


def serves_again(port: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(port, "/v1/health", timeout=5)
        except (OSError, urllib.error.URLError):
            assert time.monotonic() < deadline, "the daemon did not recover"
            time.sleep(0.1)


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_more_connections_than_the_file_limit_never_exhaust_it(cache_dir, tmp_path):
    log_path = tmp_path / "daemon.log"
    proc, port = start_logged(cache_dir, log_path, files=128)  # the cap becomes (128 - 64) / 2
    try:
        socks = flood(port, 300)  # all from 127.0.0.1: at the cap the oldest slow one makes room
        health = serves_again(port)
        assert health["http"]["cap"] == 32 and health["http"]["open"] <= 32
        assert health["http"]["evicted"] >= 300 - 32
        for s in socks:
            s.close()
        stop(proc)
    finally:
        proc.kill()
    text = log_path.read_text()
    assert "Too many open files" not in text and "Traceback" not in text, text[-3000:]
    assert text.count("to make room") == 1 and len(text) < 4000, text[-3000:]


def test_an_accept_storm_at_the_file_limit_logs_once_and_recovers(cache_dir, tmp_path):
    log_path = tmp_path / "daemon.log"
    proc, port = start_logged(cache_dir, log_path, "--max-connections", "1000",
                              "--max-connections-per-address", "1000")
    try:
        get_json(port, "/v1/health")
        hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (48, hard))  # caps set above what the files allow
        socks = flood(port, 200)
        deadline = time.monotonic() + 60
        while "out of system resource" not in log_path.read_text():  # accept() is failing with EMFILE
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        for s in socks:
            s.close()
        assert serves_again(port)["status"] == "ok"
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (1024, hard))  # room for a clean stop
        stop(proc)
    finally:
        proc.kill()
    text = log_path.read_text()
    assert text.count("out of system resource") == 1, text[-3000:]  # asyncio retries every second
    assert "Traceback" not in text and len(text) < 4000, text[-3000:]


async def test_loop_errors_are_logged_once_per_kind_per_interval(caplog):
    from bridge.frontends.http.connections import install_loop_error_log

    loop = asyncio.get_running_loop()
    previous = install_loop_error_log(loop, 60)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            for _ in range(500):  # what asyncio reports every second while accept() fails
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
            loop.call_exception_handler({"message": "Exception in callback BaseSelectorEventLoop._start_serving()",
                                         "exception": ValueError("Invalid file descriptor: -1")})
            for _ in range(3):
                loop.call_exception_handler({"message": "Task exception was never retrieved",
                                             "exception": RuntimeError("boom")})
    finally:
        loop.set_exception_handler(previous)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "socket.accept() out of system resource: [Errno 24] Too many open files (logged once per sender per 60 s)",
        "Task exception was never retrieved"]  # other errors keep asyncio's own report, once per interval
    assert errors[0].exc_info is None and errors[1].exc_info is not None
