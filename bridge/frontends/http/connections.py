"""HTTP connection limits: slow and surplus clients are dropped, refusals are logged once per interval.

aiohttp has no request-head timeout and no connection cap. ``HttpLimits`` holds the daemon's:
the request head (request line and headers) must arrive within ``head_timeout_s`` of the
connection opening or of the previous response (aiohttp's keep-alive timer, which closes a
connection only while it waits for a complete head); a request body may pause at most
``body_timeout_s``; at most ``max_connections`` connections in all (never more than the file
limit leaves room for) and ``max_per_address`` from one address. At a cap the oldest connection
that is not in a request (an idle keep-alive or a head still arriving) makes room, so a flood of
slow connections cannot lock out a client that sends its request at once; when every connection
is in a request, the newcomer gets a 503. ``GuardedSite`` is ``web.SockSite`` with this guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Callable

from aiohttp import web

from ...core.access import HttpLimits
from ...core.errors import ValidationError
from ..security import OncePerSender

log = logging.getLogger(__name__)

MAX_BACKLOG = 128  # aiohttp's default listen backlog
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s")


LARGE_BODY_BYTES = 1024 * 1024
HEAD_BYTES = 256 * 1024  # enough for a PNG's IHDR, or a JPEG's frame header after EXIF/ICC segments
HTTP_LIMITS = web.AppKey("http_limits", HttpLimits)
LARGE_BODIES = web.AppKey("large_bodies", asyncio.Semaphore)


class _Connection:
    __slots__ = ("transport", "address", "busy", "requests", "idle_since")

    def __init__(self, transport: asyncio.Transport, address: str, now: float):
        self.transport, self.address = transport, address
        self.busy = 0  # requests being handled (a WebSocket or a long-poll stays busy)
        self.requests = 0
        self.idle_since = now


class ConnectionGuard:
    """Counts open connections per address; makes room at a cap or refuses with 503."""

    def __init__(self, limits: HttpLimits):
        self.limits = limits
        self.cap = limits.connection_cap()
        self.backlog = max(1, min(MAX_BACKLOG, self.cap // 2))  # also how many asyncio accepts at once
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        self._per_address: dict[str, int] = defaultdict(int)
        self._throttled = OncePerSender(limits.log_interval_s, logger=log)
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def factory(self, inner_factory):
        """The protocol factory for ``loop.create_server``: aiohttp's, wrapped."""
        return lambda: _GuardedProtocol(self, inner_factory())

    def admit(self, transport: asyncio.Transport) -> bool:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "?"
        if self._per_address[address] >= self.limits.max_per_address \
                and not self._make_room(address, f"--max-connections-per-address {self.limits.max_per_address}"):
            return self._refuse(transport, address, f"{address} already has {self.limits.max_per_address} "
                                                    "connections (--max-connections-per-address)")
        if len(self._open) >= self.cap and not self._make_room(None, f"--max-connections {self.cap}"):
            return self._refuse(transport, address, f"the daemon already has {self.cap} connections "
                                                    "(--max-connections, or the file limit)")
        self._open[transport] = _Connection(transport, address, time.monotonic())
        self._per_address[address] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        conn = self._open.pop(transport, None)
        if conn is None:
            return
        self._per_address[conn.address] -= 1
        if not self._per_address[conn.address]:
            del self._per_address[conn.address]
        if not conn.requests and time.monotonic() - conn.idle_since >= self.limits.head_timeout_s:
            self.timed_out += 1  # aiohttp's keep-alive timer closed it: no complete request head in time
            self._throttled("slow", conn.address, "closed an HTTP connection from %s that sent no complete "
                            "request within %g s", conn.address, self.limits.head_timeout_s)

    def _make_room(self, address: str | None, cap: str) -> bool:
        idle = [c for c in self._open.values() if not c.busy and (address is None or c.address == address)]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        self.release(oldest.transport)  # counted out now: its connection_lost may come later
        oldest.transport.abort()
        self.evicted += 1
        self._throttled("evict", oldest.address, "closed an idle or slow HTTP connection from %s to make room (%s)",
                        oldest.address, cap)
        return True

    def _refuse(self, transport: asyncio.Transport, address: str, why: str) -> bool:
        self.refused += 1
        self._throttled("refuse", address, "refused an HTTP connection from %s: %s", address, why)
        body = json.dumps(ValidationError(None, f"too many connections: {why}; retry in a moment").to_json()).encode()
        transport.write(REFUSAL % (len(body), body))
        transport.close()
        return False

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """Marks the connection busy while a request is handled: busy connections are never evicted."""
        conn = self._open.get(request.transport)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        conn.requests += 1
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.idle_since = time.monotonic()

    def health(self) -> dict:
        return {"open": len(self._open), "busy": sum(1 for c in self._open.values() if c.busy), "cap": self.cap, "per_address_cap": self.limits.max_per_address,
                "refused": self.refused, "evicted": self.evicted, "timed_out": self.timed_out}


def _error(status: int, field: str | None, message: str) -> web.Response:
    return web.json_response(ValidationError(field, message).to_json(), status=status)


async def read_body(request: web.Request, limit: int, field: str | None, too_big: str,
                    check_head: Callable[[bytes], None] | None = None) -> bytes | web.Response:
    """The request body, read as it arrives: 413 past ``limit`` (before reading when Content-Length says so),
    408 and the connection closed when the client pauses longer than ``body_timeout_s``.

    ``check_head`` sees the first ``HEAD_BYTES`` (or the whole body if shorter) once, and may raise
    ``ValidationError`` to refuse the rest unread.
    """
    if request.content_length is not None and request.content_length > limit:
        return _error(413, field, too_big)
    idle_s = request.app[HTTP_LIMITS].body_timeout_s if HTTP_LIMITS in request.app else HttpLimits.body_timeout_s
    body = bytearray()
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await request.content.readany()
        except TimeoutError:
            response = _error(408, field, f"request body stalled: no data for {idle_s:g} s after {len(body)} "
                                          "bytes; send the whole body at once")
            response.force_close()
            return response
        if not chunk:
            if check_head is not None:
                check_head(bytes(body))
            return bytes(body)
        body += chunk
        if len(body) > limit:
            return _error(413, field, too_big)
        if check_head is not None and len(body) >= HEAD_BYTES:
            check_head(bytes(body[:HEAD_BYTES]))
            check_head = None


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind the guard: a refused connection never reaches aiohttp."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self._guard, self._inner = guard, inner
        self._admitted = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._admitted = self._guard.admit(transport)
        if self._admitted:
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self):
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc) -> None:
        self._guard.release(self._transport)
        if self._admitted:
            self._inner.connection_lost(exc)


class GuardedSite(web.SockSite):
    """``web.SockSite`` whose connections pass through a ``ConnectionGuard``."""

    def __init__(self, runner: web.BaseRunner, sock, guard: ConnectionGuard, **kwargs):
        super().__init__(runner, sock, backlog=guard.backlog, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner (SockSite.start would bind again)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)


def install_loop_error_log(loop: asyncio.AbstractEventLoop, interval_s: float):
    """Loop errors (accept() failing when files run out, every second) logged once per kind per interval.

    Returns the handler that was there before, to be put back.
    """
    previous = loop.get_exception_handler()
    throttled = OncePerSender(interval_s, logger=logging.getLogger("asyncio"))

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        if isinstance(exc, OSError):  # a resource error (EMFILE...): the traceback says nothing more
            throttled(f"{message}|{exc.errno}", None, "%s: %s", message, exc, level=logging.ERROR)
        elif isinstance(exc, ValueError) and "_start_serving" in message:
            # asyncio retries a failed accept() a second later; a retry due after the server closed
            # finds its socket gone (fd -1) and raises ValueError: harmless, at shutdown only.
            logging.getLogger("asyncio").debug("accept retry after the server closed: %s", exc)
        elif throttled.allow(f"{message}|{type(exc).__name__}", None)[0]:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return previous
