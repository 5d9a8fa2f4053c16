"""Frame sources for the Script TOP: shared memory (same machine) or HTTP (a remote daemon).

Both hand out frames with rows bottom-first (TouchDesigner's origin) and answer ``changed()``
cheaply, so the frame-start callback can force a cook only when there is a new frame.
The HTTP source long-polls on a worker thread and never touches TouchDesigner objects; the
main thread only swaps a reference under a lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np

from ._client import client

log = logging.getLogger(__name__)


class ShmSource:
    """The daemon's shared-memory segment; ``changed()`` is one 8-byte load."""

    kind = "shm"

    def __init__(self, name: str):
        self.name = name
        self._reader = client.ShmReader(name, flip=True)  # FileNotFoundError while the daemon is down
        self._taken = 0  # raw seq word of the last frame handed out
        self.error: str | None = None

    def changed(self) -> bool:
        seq = self._reader.seq
        return seq != 0 and seq != self._taken

    def take(self) -> client.FrameInfo | None:
        """The newest frame if it was not handed out yet, else None."""
        frame = self._reader.read()
        if frame is not None:
            self._taken = frame.seq * 2
        return frame

    def describe(self) -> str:
        return f"shared memory {self.name!r}"

    def close(self) -> None:
        self._reader.close()


class HttpSource:
    """Long-polls ``GET /v1/frame.rgba`` on a daemon thread; the newest frame waits in a mailbox."""

    kind = "http"

    def __init__(self, base_url: str, token: str | None = None, poll_s: float = 2.0, retry_s: float = 1.0,
                 channel: str = "main"):
        self.base_url = base_url
        self._client = client.HttpClient(base_url, timeout=3.0, token=token or None, channel=channel)
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._latest: client.FrameInfo | None = None
        self._fresh = False
        self._stop = threading.Event()
        self.error: str | None = None
        self.received = 0
        self._thread = threading.Thread(target=self._run, name="turbo-bridge-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        after = 0
        while not self._stop.is_set():
            try:
                frame = self._client.frame(after, self._poll_s)
            except Exception as exc:  # loop boundary: a down daemon, a reset, a bad answer; retry
                self.error = f"{self.base_url}: {exc}"
                log.debug("turbo-bridge HTTP source: %s", exc)
                after = 0  # a restarted daemon counts frames from 1 again
                self._stop.wait(self._retry_s)
                continue
            self.error = None
            if frame is None or self._stop.is_set():
                continue  # long-poll timed out: ask again
            after = frame.seq
            # Flip here, off TouchDesigner's main thread.
            frame = dataclasses.replace(frame, pixels=np.ascontiguousarray(frame.pixels[::-1]))
            with self._lock:
                self._latest, self._fresh = frame, True
                self.received += 1

    def changed(self) -> bool:
        return self._fresh

    def take(self) -> client.FrameInfo | None:
        with self._lock:
            if not self._fresh:
                return None
            self._fresh = False
            return self._latest

    def describe(self) -> str:
        return f"HTTP {self.base_url}"

    def close(self) -> None:
        """Ask the worker to stop; it finishes its current request on its own (no join here,
        which would stall TouchDesigner's main thread for up to a poll)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
