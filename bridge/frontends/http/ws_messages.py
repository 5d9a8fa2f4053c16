"""WebSocket messages on their way in: how many large ones are buffered at once.

aiohttp assembles a binary message whole (up to ``max_msg_size``) before the handler sees it, and
offers no public hook inside a message. The connection guard sees every byte a connection
receives, so it counts each WebSocket's bytes since its last delivered message: at most
``max_large_bodies`` WebSockets may be inside a message of more than ``LARGE_BODY_BYTES`` at once;
one more is closed at once with 1013 (try again later), before it buffers more. Together with
``max_msg_size`` this bounds what WebSocket clients can make the daemon hold.
"""

from __future__ import annotations

import asyncio

from .bodies import LARGE_BODY_BYTES

TRY_AGAIN_LATER = 1013
CLOSE_REASON = b"too many large messages at once; send it again in a moment"


def close_frame(code: int, reason: bytes) -> bytes:
    """A server's (unmasked) WebSocket close frame."""
    payload = code.to_bytes(2, "big") + reason[:123]
    return bytes([0x88, len(payload)]) + payload


class WsMessages:
    """Bytes received by each WebSocket since its last message; the large ones in progress."""

    def __init__(self, max_large: int):
        self.max_large = max_large
        self._unread: dict[asyncio.BaseTransport, int] = {}
        self._large: set[asyncio.BaseTransport] = set()
        self.refused = 0

    def watch(self, transport: asyncio.BaseTransport) -> None:
        self._unread[transport] = 0

    def forget(self, transport: asyncio.BaseTransport) -> None:
        self._unread.pop(transport, None)
        self._large.discard(transport)

    def delivered(self, transport: asyncio.BaseTransport) -> None:
        """A message reached the handler: what arrives next belongs to the next one."""
        if transport in self._unread:
            self._unread[transport] = 0
            self._large.discard(transport)

    def received(self, transport: asyncio.BaseTransport, size: int) -> bool:
        """Counts ``size`` bytes in; False when this makes one large message too many (close the connection)."""
        unread = self._unread.get(transport)
        if unread is None:
            return True
        self._unread[transport] = unread = unread + size
        if unread <= LARGE_BODY_BYTES or transport in self._large:
            return True
        if len(self._large) < self.max_large:
            self._large.add(transport)
            return True
        self.refused += 1
        self.forget(transport)
        return False

    def health(self) -> dict:
        return {"large_in_progress": len(self._large), "cap": self.max_large, "refused": self.refused}
