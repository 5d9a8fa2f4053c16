"""Request bodies: read as they arrive, against a deadline that grows with what has arrived.

A body must be in within ``body_grace_s`` plus one second per ``body_min_rate`` bytes received
(``HttpLimits.body_deadline_s``), and may pause at most ``body_timeout_s``; past either it is
answered 408 and its connection closed. ``BodyReads`` knows every body being read, so that when a
connection or a large-upload slot is needed, the body furthest behind the minimum rate is ended at
once (408) to make room: trickled bodies cannot hold the slots that other clients need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from aiohttp import web

from ...core.access import HttpLimits
from ...core.errors import ValidationError

log = logging.getLogger(__name__)

LARGE_BODY_BYTES = 1024 * 1024
HEAD_BYTES = 256 * 1024  # enough for a PNG's IHDR, or a JPEG's frame header after EXIF/ICC segments
LARGE_SLOT_WAIT_S = 2.0  # how long a large upload waits for the slot a too-slow one is giving up


class BodyRead:
    """One body being read: how much arrived since when; ``evict`` ends it with a 408."""

    __slots__ = ("transport", "address", "declared", "large", "started", "received", "evicted", "_timer")

    def __init__(self, request: web.Request, large: bool, now: float):
        self.transport, self.address = request.transport, str(request.remote)
        self.declared, self.large = request.content_length, large
        self.started, self.received, self.evicted = now, 0, False
        self._timer: asyncio.Timeout | None = None

    def shortfall(self, now: float, min_rate: float) -> float:
        """How far behind the minimum rate it is, as a fraction of what it should have sent by now
        (0: on time). Judged after its first second only: a body that just began may not have arrived."""
        elapsed = now - self.started
        if elapsed < 1.0:
            return 0.0
        due = elapsed * min_rate if self.declared is None else min(elapsed * min_rate, self.declared)
        return max(0.0, 1.0 - self.received / due) if due > 0 else 0.0

    def evict(self) -> None:
        if self._timer is not None and not self.evicted:
            self.evicted = True
            self._timer.reschedule(asyncio.get_running_loop().time())  # the read raises TimeoutError at once


class BodyReads:
    """The bodies being read, and the large-upload slots (``max_large_bodies`` read at once)."""

    def __init__(self, limits: HttpLimits):
        self.limits = limits
        self._reads: set[BodyRead] = set()
        self.large_slots = asyncio.Semaphore(limits.max_large_bodies)
        self.too_slow = 0  # ended by their deadline
        self.evicted = 0  # ended early to make room

    def make_room(self, address: str | None = None, large: bool = False) -> BodyRead | None:
        """End the body (of ``address``, or a large one) furthest behind the minimum rate; None if all keep up."""
        now = asyncio.get_running_loop().time()
        behind = [(read.shortfall(now, self.limits.body_min_rate), read) for read in self._reads
                  if not read.evicted and (address is None or read.address == address) and (read.large or not large)]
        worst = max(behind, key=lambda pair: pair[0], default=(0.0, None))
        if worst[1] is None or worst[0] < 0.5:  # at less than half the minimum rate
            return None
        worst[1].evict()
        self.evicted += 1
        return worst[1]

    @contextlib.contextmanager
    def track(self, read: BodyRead) -> Iterator[BodyRead]:
        self._reads.add(read)
        try:
            yield read
        finally:
            self._reads.discard(read)

    def health(self) -> dict:
        return {"reading": len(self._reads), "large": sum(1 for r in self._reads if r.large),
                "too_slow": self.too_slow, "evicted_slow": self.evicted}


BODY_READS = web.AppKey("body_reads", BodyReads)


def _error(status: int, field: str | None, message: str) -> web.Response:
    return web.json_response(ValidationError(field, message).to_json(), status=status)


def _reads_of(request: web.Request) -> BodyReads:
    if BODY_READS not in request.app:  # an app wired without the guard (unit tests): the defaults
        request.app[BODY_READS] = BodyReads(HttpLimits())
    return request.app[BODY_READS]


async def read_body(request: web.Request, limit: int, field: str | None, too_big: str,
                    check_head: Callable[[bytes], None] | None = None, large: bool = False) -> bytes | web.Response:
    """The request body, read as it arrives: 413 past ``limit`` (before reading when Content-Length says so);
    408, and the connection closed, past its deadline, after a pause of ``body_timeout_s``, or when ended
    to make room. ``large``: one of the few large-upload slots is held while it is read (503 when none frees).

    ``check_head`` sees the first ``HEAD_BYTES`` (or the whole body if shorter) once, and may raise
    ``ValidationError`` to refuse the rest unread.
    """
    if request.content_length is not None and request.content_length > limit:
        return _error(413, field, too_big)
    reads = _reads_of(request)
    if not large:
        return await _read(request, reads, limit, field, too_big, check_head, large)
    if reads.large_slots.locked() and reads.make_room(large=True) is None:
        return _no_large_slot(reads, field)
    try:  # a slot is free, or one is being given up by the upload just ended
        await asyncio.wait_for(reads.large_slots.acquire(), LARGE_SLOT_WAIT_S)
    except TimeoutError:
        return _no_large_slot(reads, field)
    try:
        return await _read(request, reads, limit, field, too_big, check_head, large)
    finally:
        reads.large_slots.release()


def _no_large_slot(reads: BodyReads, field: str | None) -> web.Response:
    response = _error(503, field, f"too many large uploads at once (at most {reads.limits.max_large_bodies} over "
                                  f"{LARGE_BODY_BYTES} bytes, each sending at least {reads.limits.body_min_rate:g} "
                                  "bytes a second); retry in a moment")
    response.headers["Retry-After"] = "1"
    return response


async def _read(request: web.Request, reads: BodyReads, limit: int, field: str | None, too_big: str,
                check_head: Callable[[bytes], None] | None, large: bool) -> bytes | web.Response:
    limits, loop = reads.limits, asyncio.get_running_loop()
    body = bytearray()
    with reads.track(BodyRead(request, large, loop.time())) as read:
        stall_at = read.started + limits.body_timeout_s
        try:
            async with asyncio.timeout(None) as timer:
                read._timer = timer
                while True:
                    deadline = read.started + limits.body_deadline_s(len(body))
                    timer.reschedule(min(stall_at, deadline))
                    chunk = await request.content.readany()
                    stall_at = loop.time() + limits.body_timeout_s
                    if not chunk:
                        break
                    body += chunk
                    read.received = len(body)
                    if len(body) > limit:
                        read._timer = None
                        return _error(413, field, too_big)
                    if check_head is not None and len(body) >= HEAD_BYTES:
                        check_head(bytes(body[:HEAD_BYTES]))
                        check_head = None
                read._timer = None  # done: nothing may reschedule a timer that has exited
        except TimeoutError:
            return _too_slow(reads, read, field, stall_at <= deadline, loop.time() - read.started)
    if check_head is not None:
        check_head(bytes(body))
    return bytes(body)


def _too_slow(reads: BodyReads, read: BodyRead, field: str | None, stalled: bool, elapsed_s: float) -> web.Response:
    limits = reads.limits
    of = f" of {read.declared}" if read.declared is not None else ""
    if read.evicted:
        why = (f"request body too slow: {read.received}{of} bytes in {elapsed_s:.1f} s; ended to make room for "
               f"another client (send at least {limits.body_min_rate:g} bytes a second)")
    elif stalled:
        why = (f"request body stalled: no data for {limits.body_timeout_s:g} s after {read.received} bytes; "
               "send the whole body at once")
    else:
        reads.too_slow += 1
        why = (f"request body too slow: {read.received}{of} bytes in {elapsed_s:.1f} s; a body must arrive within "
               f"{limits.body_grace_s:g} s plus 1 s per {limits.body_min_rate:g} bytes")
    log.debug("408 to %s: %s", read.address, why)
    response = _error(408, field, why)
    response.force_close()
    return response
