"""The uploader thread of a sender: TOP downloads into an input segment, off the main thread.

The main thread hands over each new download (``submit``; a newer one replaces one still
waiting); this thread turns it into RGBA8 rows top-first, drops it if the pixels equal the last
ones written, and writes it into the segment (``bridge.client.ShmInputWriter``), which it creates,
grows and unlinks itself. Nothing here touches a TouchDesigner object.

The handover takes no lock the main thread could wait on: a one-slot ``deque`` (an append
replaces what waits there) and a ``SimpleQueue`` of wake-ups, both single calls that never block
the caller. (A ``Condition`` made the main thread wait, under load, for an uploader thread that
held its lock while waiting for the CPU: 11 ms a frame in the median on the busy 2-core machine.)
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import threading

import numpy as np

from ._client import client

_SERIAL = itertools.count(1)  # each uploader's segment has a name of its own (see Uploader)


def as_rgba(image: np.ndarray) -> np.ndarray:
    """A TOP's pixels (H x W x C, C 1-4, as ``numpyArray`` gives them) as H x W x 3 or 4:
    one channel is grey, two are red and green (a TOP's channels are r, g, b, a)."""
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 2:
        return np.concatenate([image, np.zeros_like(image[..., :1])], axis=2)
    return image


class Uploader:
    """One thread and one segment, named ``base``, this process's id and a serial: a stopped
    uploader may still be unlinking its segment while the next one creates its own, and another
    TouchDesigner on this machine (or one that crashed) may hold the same COMP ids."""

    def __init__(self, base: str):
        self.name = f"{base[:80]}-{os.getpid()}.{next(_SERIAL)}"
        self.taken = 0  # images taken from the mailbox (a newer one replaces one still waiting)
        self.written = 0  # of which written: their pixels differed from the last ones
        self.generation = 0  # segments created: the daemon must be told each new one
        self.geometry: tuple[int, int] | None = None  # the segment's maximum size
        self.error: str | None = None
        self._slot: collections.deque = collections.deque(maxlen=1)  # the newest image not taken yet
        self._wake: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="turbo-bridge-upload", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray) -> None:
        self._slot.append(image)
        self._wake.put(True)

    def stop(self) -> None:
        """The thread ends after the image in hand and unlinks the segment; nothing waits here."""
        self._stopping = True
        self._wake.put(True)

    def _next(self) -> np.ndarray | None:
        """The newest image once there is one; None when stopping."""
        while True:
            self._wake.get()
            while not self._wake.empty():  # wake-ups of images a newer one replaced
                self._wake.get_nowait()
            if self._stopping:
                return None
            try:
                return self._slot.popleft()
            except IndexError:  # taken after an earlier wake-up
                continue

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        writer, last = None, None
        try:
            while (image := self._next()) is not None:
                self.taken += 1
                rgba = client.to_rgba8(as_rgba(image), flip=True)  # TOP rows bottom-first, floats 0-1
                if last is not None and rgba.shape == last.shape and np.array_equal(rgba, last):
                    continue  # the TOP cooked, its pixels did not change
                height, width = rgba.shape[:2]
                if writer is None or width > writer.geometry.max_width or height > writer.geometry.max_height:
                    if writer is not None:
                        writer.close()
                    writer = client.ShmInputWriter(self.name, width, height)
                    self.geometry = (width, height)
                    self.generation += 1
                writer.write(rgba)
                last = rgba
                self.written += 1
        except (OSError, ValueError) as exc:  # no shared memory left, a segment name taken
            self.error = str(exc)
        finally:
            if writer is not None:
                writer.close()
