"""Live frames for many slow clients: a latest-wins mailbox per client and a shared encoder.

The scheduler hands each new frame to ``FrameHub.publish`` on the event loop. Every client
(a WebSocket, an MJPEG stream) holds a ``Subscription``: a one-frame mailbox where a new frame
replaces one not yet taken. A slow client therefore skips frames; it never stalls the renderer
and holds at most one frame besides the one it is sending. ``FrameEncoder`` turns a frame into
bytes once per frame and format, in an executor, however many clients want it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...core.errors import ValidationError
from ...core.frame import Frame
from ...outputs.png import PngCache

log = logging.getLogger(__name__)

# The binary WebSocket frame header (little-endian); documented in docs/reference/http.md, "WebSocket".
HEADER = struct.Struct("<4sHBBQQIIfI")
HEADER_MAGIC = b"TBW1"
FORMAT_CODES = {"rgba": 0, "png": 1, "jpeg": 2}
MIME_TYPES = {"rgba": "application/octet-stream", "png": "image/png", "jpeg": "image/jpeg"}
DEFAULT_QUALITY = 80


@dataclass(frozen=True)
class StreamFormat:
    """How a client wants its frames: ``kind`` is jpeg, png or rgba; ``quality`` is JPEG's (1-100)."""

    kind: str = "jpeg"
    quality: int = DEFAULT_QUALITY

    @staticmethod
    def parse(raw: Mapping[str, object], base: StreamFormat | None = None) -> StreamFormat:
        """Read ``format`` and ``quality`` (query strings or JSON values); raises ``ValidationError``."""
        base = base or StreamFormat()
        kind, quality = raw.get("format", base.kind), raw.get("quality", base.quality)
        if not isinstance(kind, str) or kind not in FORMAT_CODES:  # a JSON list or object is unhashable
            raise ValidationError("format", f"format must be one of jpeg, png, rgba, got {repr(kind)[:64]}")
        # Digits only (not '²'), and few: int() of thousands of digits raises.
        if isinstance(quality, str) and quality.strip().isdigit() and quality.isascii() and len(quality.strip()) <= 3:
            quality = int(quality)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValidationError("quality",
                                  f"quality must be an integer from 1 to 100 (JPEG), got {repr(quality)[:64]}")
        return StreamFormat(kind, quality)


def pack_header(frame: Frame, kind: str, payload_bytes: int) -> bytes:
    """The fixed header that precedes every binary frame on the WebSocket."""
    return HEADER.pack(HEADER_MAGIC, HEADER.size, FORMAT_CODES[kind], 0, frame.seq, frame.version,
                       frame.width, frame.height, frame.render_ms, payload_bytes)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """RGBA uint8 (H x W x 4) to a baseline JPEG (alpha dropped)."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _ws_message(frame: Frame, kind: str, payload: bytes) -> bytes:
    return pack_header(frame, kind, len(payload)) + payload


class FrameEncoder:
    """Encodes each (frame, format) once, off the event loop, for every client that asks.

    PNGs come from the daemon's ``PngCache``, so a frame fetched over REST and over the
    WebSocket is compressed once. Only the newest ``keep`` frames' encodings are kept (a raw
    1024x1024 message is 4 MB). ``encoded`` counts encodes by kind.
    """

    def __init__(self, executor: Executor, png: PngCache, keep: int = 2):
        self._executor = executor
        self._png = png
        self._keep = keep
        self._done: dict[tuple, asyncio.Future[bytes]] = {}
        self.encoded: dict[str, int] = {}

    async def jpeg(self, frame: Frame, quality: int) -> bytes:
        return await self._cached((frame.seq, "jpeg", quality), self._in_executor, encode_jpeg,
                                  frame.pixels, quality)

    async def ws_message(self, frame: Frame, fmt: StreamFormat) -> bytes:
        """Header + payload, ready to send as one binary WebSocket message."""
        quality = fmt.quality if fmt.kind == "jpeg" else 0
        return await self._cached((frame.seq, "ws-" + fmt.kind, quality), self._message, frame, fmt)

    async def _message(self, frame: Frame, fmt: StreamFormat) -> bytes:
        if fmt.kind == "png":
            return _ws_message(frame, "png", await self._png.png(frame))
        if fmt.kind == "jpeg":
            return _ws_message(frame, "jpeg", await self.jpeg(frame, fmt.quality))
        # Raw RGBA: header and the pixel copy in one step, on the executor (a 1024x1024 frame is 4 MB).
        return await self._in_executor(lambda: _ws_message(frame, "rgba", frame.pixels.tobytes()))

    async def _in_executor(self, fn: Callable, *args) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _cached(self, key: tuple, make: Callable[..., Awaitable[bytes]], *args) -> bytes:
        future = self._done.get(key)
        if future is None:
            future = asyncio.ensure_future(make(*args))
            # Retrieve a failure even if every waiter has gone (no "never retrieved" noise).
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._done[key] = future
            self.encoded[key[1]] = self.encoded.get(key[1], 0) + 1
            newest = sorted({seq for seq, *_ in self._done})[-self._keep:]
            self._done = {k: f for k, f in self._done.items() if k[0] >= newest[0]}
        # Shielded: a client that goes away mid-encode must not cancel the others' encode.
        return await asyncio.shield(future)


class Subscription:
    """One client's mailbox: holds at most one frame, the newest not yet taken."""

    def __init__(self, kind: str):
        self.kind = kind
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self.taken = 0
        self.skipped = 0

    @property
    def pending(self) -> int:
        """Frames waiting in this mailbox: 0 or 1."""
        return 0 if self._frame is None else 1

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, frame: Frame) -> None:
        """Never waits: a frame not yet taken is replaced (and counted as skipped)."""
        if self._closed:
            return
        if self._frame is not None:
            self.skipped += 1
        self._frame = frame
        self._ready.set()

    async def take(self) -> Frame | None:
        """The newest frame not yet taken, waiting for one; None once closed."""
        while not self._closed:
            if self._frame is not None:
                frame, self._frame = self._frame, None
                self._ready.clear()
                self.taken += 1
                return frame
            self._ready.clear()
            await self._ready.wait()
        return None

    def close(self) -> None:
        self._closed = True
        self._frame = None
        self._ready.set()


class FrameHub:
    """Fans each published frame out to every subscription; ``publish`` never waits."""

    def __init__(self, latest: Callable[[], Frame | None] = lambda: None):
        self._latest = latest
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._sent_by_gone = 0
        self._skipped_by_gone = 0

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subscriptions)

    def publish(self, frame: Frame) -> None:
        for sub in self._subscriptions:
            sub.offer(frame)

    @contextlib.contextmanager
    def subscribe(self, kind: str) -> Iterator[Subscription]:
        """A mailbox primed with the current frame (if any), removed on exit."""
        sub = Subscription(kind)
        if self._closed:
            sub.close()
        else:
            latest = self._latest()
            if latest is not None:
                sub.offer(latest)
            self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            sub.close()
            if sub in self._subscriptions:
                self._subscriptions.discard(sub)
                self._sent_by_gone += sub.taken
                self._skipped_by_gone += sub.skipped

    def close(self) -> None:
        """Close every mailbox (their clients' loops end) and refuse new ones."""
        self._closed = True
        for sub in self._subscriptions:
            sub.close()

    def health(self) -> dict:
        subs = self._subscriptions
        clients: dict[str, int] = {}
        for sub in subs:
            clients[sub.kind] = clients.get(sub.kind, 0) + 1
        return {
            "clients": clients,
            "frames_taken": self._sent_by_gone + sum(s.taken for s in subs),
            "frames_skipped": self._skipped_by_gone + sum(s.skipped for s in subs),
        }
