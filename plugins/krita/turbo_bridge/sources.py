"""Where the frame worker's frames come from: the local daemon's shared memory, or HTTP long-polls.

Both answer ``next(timeout)`` with ``(pixels, seq)`` in Krita's BGRA order (or None: nothing new
in time), ``rewind`` (the next frame is the newest, however old), ``check(health)`` (a restarted
daemon) and ``close``. They block: only the frame worker's thread calls them.
"""

from __future__ import annotations

import time

from .bridge_client import HttpClient, ShmReader
from .frames import decode_png


class ShmSource:
    """The local daemon's shared-memory segment (BGRA rows, as Krita stores them)."""

    def __init__(self, name: str, poll_s: float):
        self.reader = ShmReader(name, bgra=True)
        self.poll_s = poll_s
        self._force = True  # the first read returns the newest frame, however old

    def next(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.reader.read(force=self._force)
            if frame is not None:
                self._force = False
                return frame.pixels, frame.seq
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll_s)

    def rewind(self) -> None:
        self._force = True

    def check(self, health: dict) -> None:
        """A daemon that restarted made a new segment: this one no longer moves."""
        if health.get("frame_seq", 0) > self.reader.seq // 2:
            time.sleep(0.2)  # the segment is published right after the frame: give it a moment
            if health["frame_seq"] > self.reader.seq // 2:
                raise ConnectionError("the daemon restarted; reconnecting")

    def close(self) -> None:
        self.reader.close()


class HttpSource:
    """Any daemon, over HTTP: long-polls ``/v1/frame.png`` (small on the wire)."""

    def __init__(self, client: HttpClient):
        self.client = client
        self.seq = 0

    def next(self, timeout: float):
        got = self.client.frame_png(after=self.seq, timeout=timeout)
        if got is None:
            return None
        png, self.seq = got
        return decode_png(png), self.seq

    def rewind(self) -> None:
        self.seq = 0

    def check(self, health: dict) -> None:
        if health.get("frame_seq", 0) < self.seq:  # restarted: its frames count from 1 again
            self.seq = 0

    def close(self) -> None:
        pass

