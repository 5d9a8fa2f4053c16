"""HTTP connection limits: slow and surplus clients are dropped, refusals are logged once per interval.

aiohttp has no request-head timeout and no connection cap. ``HttpLimits`` holds the daemon's:
the request head (request line and headers) must arrive within ``head_timeout_s`` of the
connection opening or of the previous response (aiohttp's keep-alive timer, which closes a
connection only while it waits for a complete head); request bodies have their deadlines
(``bodies``); at most ``max_connections`` connections in all (never more than the file limit
leaves room for) and ``max_per_address`` from one address. At a cap the oldest connection that is
not in a request (an idle keep-alive or a head still arriving) makes room, else the body sent
furthest below the minimum rate (408), so a flood of slow connections cannot lock out a client
that sends its request at once; when every connection is in a request, the newcomer gets a 503.

Loopback is not one client: every local plugin shares 127.0.0.1. So connections are also told
apart by purpose: long-lived requests (WebSockets, MJPEG streams, waiting long-polls; ``stream``)
may hold at most half of the connections, in all and per address, and get 503 past that, so
short requests (``/v1/health`` among them) always find room beside them.
``GuardedSite`` is ``web.SockSite`` with this guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from aiohttp import web

from ...core.access import HttpLimits
from ...core.errors import ValidationError
from ..security import OncePerSender
from .bodies import BodyReads
from .ws_messages import CLOSE_REASON, TRY_AGAIN_LATER, WsMessages, close_frame

log = logging.getLogger(__name__)

MAX_BACKLOG = 128  # aiohttp's default listen backlog
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s")
HTTP_LIMITS = web.AppKey("http_limits", HttpLimits)


class _Connection:
    __slots__ = ("transport", "address", "busy", "requests", "idle_since", "streaming")

    def __init__(self, transport: asyncio.Transport, address: str, now: float):
        self.transport, self.address = transport, address
        self.busy = 0  # requests being handled (a WebSocket or a long-poll stays busy)
        self.streaming = False  # in a long-lived request (counted against the stream caps)
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
        self.bodies = BodyReads(limits)  # the request bodies being read: a slow one makes room
        self.ws_messages = WsMessages(limits.max_large_bodies)  # large WebSocket messages being buffered
        self.stream_cap, self.stream_cap_per_address = limits.stream_caps()
        self._streams: dict[str, int] = defaultdict(int)
        self.refused = 0
        self.refused_streams = 0
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
        self.ws_messages.forget(transport)
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
            slow = self.bodies.make_room(address)  # answered 408 by its own handler, at once
            if slow is None:
                return False
            self.release(slow.transport)
            self.evicted += 1
            self._throttled("evict-body", slow.address, "ended a request body from %s sent too slowly (%d bytes "
                            "so far) to make room (%s)", slow.address, slow.received, cap)
            return True
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

    @contextlib.contextmanager
    def stream(self, request: web.Request) -> Iterator[None]:
        """Counts a long-lived request (WebSocket, MJPEG, a waiting long-poll) against the stream caps;
        past one, ``web.HTTPServiceUnavailable`` (503) before anything starts."""
        conn, address = self._open.get(request.transport), str(request.remote)
        if conn is None or conn.streaming:
            yield
            return
        streams = sum(self._streams.values())
        if self._streams.get(address, 0) >= self.stream_cap_per_address or streams >= self.stream_cap:
            self.refused_streams += 1
            mine = self._streams.get(address, 0)
            why = (f"{address} already has {mine} streams open" if mine >= self.stream_cap_per_address
                   else f"the daemon already has {streams} streams open")
            self._throttled("refuse-stream", address, "refused a stream from %s: %s", address, why)
            raise web.HTTPServiceUnavailable(reason=f"too many streams (WebSockets, MJPEG, waiting long-polls): "
                                                    f"{why}; close one, or retry in a moment",
                                             headers={"Retry-After": "1"})
        conn.streaming = True
        self._streams[address] += 1
        try:
            yield
        finally:
            conn.streaming = False
            self._streams[address] -= 1
            if not self._streams[address]:
                del self._streams[address]

    def health(self) -> dict:
        return {"open": len(self._open), "busy": sum(1 for c in self._open.values() if c.busy), "cap": self.cap,
                "per_address_cap": self.limits.max_per_address, "refused": self.refused, "evicted": self.evicted,
                "timed_out": self.timed_out, "streams": sum(self._streams.values()), "stream_cap": self.stream_cap,
                "streams_per_address_cap": self.stream_cap_per_address, "refused_streams": self.refused_streams,
                "bodies": self.bodies.health(), "ws_messages": self.ws_messages.health()}

    @contextlib.contextmanager
    def watch_messages(self, request: web.Request) -> Iterator[Callable[[], None]]:
        """Around a WebSocket's messages; call what it yields when a message arrives (see ``ws_messages``)."""
        transport = request.transport
        self.ws_messages.watch(transport)
        try:
            yield lambda: self.ws_messages.delivered(transport)
        finally:
            self.ws_messages.forget(transport)


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def stream_slot(request: web.Request) -> contextlib.AbstractContextManager:
    """``with stream_slot(request):`` around a long-lived request (see ``ConnectionGuard.stream``)."""
    guard = request.app.get(GUARD)
    return guard.stream(request) if guard is not None else contextlib.nullcontext()


def watch_messages(request: web.Request) -> contextlib.AbstractContextManager:
    """``with watch_messages(request) as delivered:`` around a WebSocket's messages (``ConnectionGuard``)."""
    guard = request.app.get(GUARD)
    return guard.watch_messages(request) if guard is not None else contextlib.nullcontext(lambda: None)


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
        if not self._admitted:
            return
        if not self._guard.ws_messages.received(self._transport, len(data)):
            self._transport.write(close_frame(TRY_AGAIN_LATER, CLOSE_REASON))
            self._transport.close()
            return
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
