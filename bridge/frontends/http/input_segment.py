"""A client's input segment, read with ``pread`` on its file descriptor, never through a mapping.

The client owns the segment and may truncate it or resize it in place at any moment. A process
that touches a mapped page past the end of a shrunk file dies of SIGBUS, and checking the size
first cannot close the window between the check and the copy; ``pread`` on the descriptor just
returns fewer bytes. So the daemon never maps a client's segment on POSIX: every read checks the
segment's size (``fstat``), reads the header, copies the frame with ``preadv`` into its own
buffer, and reads the seq word again (layout v1's tear-free protocol). A size other than the one
attached raises ``SegmentResized``; ``reopen`` then takes the new geometry if the header fits it.

Windows sections cannot change size while mapped, so there the mapping (``ShmReader``) stays.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ...client import ShmReader, layout
from ...client.shm import retry_after


class SegmentResized(ValueError):
    """The client truncated or resized its segment since it was attached (or last reopened)."""


class InputSegment:
    """A client's segment (layout v1) by name: ``changed``, ``read``, ``reopen``, ``close``."""

    def __init__(self, name: str):
        import _posixshmem

        self.name = name
        self._fd: int | None = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
        self._last_seq = -1
        self.retries = 0  # reads that raced a publish (or met a seq stuck odd) and were repeated
        try:
            self.reopen()
        except ValueError:
            self.close()
            raise

    def reopen(self) -> None:
        """Read the geometry again at the segment's current size: ``ValueError`` if it does not fit."""
        self.size = os.fstat(self._fd).st_size
        if self.size < layout.HEADER_SIZE:
            raise ValueError(f"segment {self.name!r} is {self.size} bytes, too small for a frame header")
        self.header = os.pread(self._fd, layout.HEADER_SIZE, 0)
        if len(self.header) < layout.HEADER_SIZE:
            raise SegmentResized(f"segment {self.name!r} shrank while its header was read")
        self.geometry = layout.read_geometry(self.header)
        self._last_seq = -1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _seq(self) -> int:
        raw = os.pread(self._fd, layout.SEQ.size, layout.SEQ_OFFSET)
        if len(raw) < layout.SEQ.size:
            raise SegmentResized(f"segment {self.name!r} was truncated to {os.fstat(self._fd).st_size} bytes")
        return layout.SEQ.unpack(raw)[0]

    def check_size(self) -> None:
        """``SegmentResized`` if the segment is no longer the size it had when attached."""
        size = os.fstat(self._fd).st_size
        if size != self.size:
            raise SegmentResized(f"segment {self.name!r} changed size from {self.size} to {size} bytes "
                                 "(truncated or resized by its client)")

    def changed(self) -> bool:
        """Whether the seq word moved (or the size changed: ``read`` then says how)."""
        try:
            self.check_size()
            return self._seq() != self._last_seq
        except SegmentResized:
            return True

    def read(self, timeout: float = 1.0) -> np.ndarray | None:
        """The newest frame's RGBA pixels (H x W x 4), or None when nothing new was published.

        Raises ``SegmentResized``, ``ValueError`` (a header that does not fit the geometry) or
        ``TimeoutError`` (a seq stuck odd or moving for ``timeout`` seconds), as ``ShmReader.read``."""
        deadline, attempt, previous = time.monotonic() + timeout, 0, None
        while True:
            self.check_size()
            head = os.pread(self._fd, layout.HEADER_SIZE, 0)
            if len(head) < layout.HEADER_SIZE:
                raise SegmentResized(f"segment {self.name!r} shrank below its header while being read")
            s1 = layout.SEQ.unpack_from(head, layout.SEQ_OFFSET)[0]
            if s1 == 0 or s1 == self._last_seq:
                return None
            if s1 != previous:  # a writer making progress is alive: the deadline starts again
                previous, attempt, deadline = s1, 0, time.monotonic() + timeout
            if s1 % 2 == 0:
                pixels = self._copy(layout.unpack_meta(head))
                if self._seq() == s1:
                    self._last_seq = s1
                    return pixels
            self.retries += 1
            attempt = retry_after(attempt, deadline, self.name, timeout, s1)

    def _copy(self, meta: layout.Meta) -> np.ndarray:
        geometry = self.geometry
        if not (0 <= meta.slot < geometry.slot_count and 0 < meta.width <= geometry.max_width
                and 0 < meta.height <= geometry.max_height and meta.stride == meta.width * 4):
            raise ValueError(f"shared memory {self.name!r}: frame header (slot {meta.slot}, {meta.width}x"
                             f"{meta.height}, stride {meta.stride}) does not fit the segment's geometry")
        pixels = np.empty((meta.height, meta.width, 4), np.uint8)
        got = os.preadv(self._fd, [pixels], geometry.slot_offset(meta.slot))
        if got < pixels.nbytes:
            raise SegmentResized(f"segment {self.name!r} shrank while a frame was copied ({got} of "
                                 f"{pixels.nbytes} bytes)")
        return pixels


class MappedInputSegment:
    """Windows: the client's section through ``ShmReader`` (a mapped section keeps its size)."""

    def __init__(self, name: str):
        self._reader = ShmReader(name)
        self.name, self.geometry = name, self._reader.geometry
        self.size = len(self._reader.buffer)
        self.header = bytes(self._reader.buffer[:layout.HEADER_SIZE])

    def reopen(self) -> None:
        pass

    def check_size(self) -> None:
        pass

    def changed(self) -> bool:
        return self._reader.changed()

    def read(self, timeout: float = 1.0) -> np.ndarray | None:
        frame = self._reader.read(timeout=timeout)
        return None if frame is None else frame.pixels

    def close(self) -> None:
        self._reader.close()


def open_segment(name: str) -> InputSegment | MappedInputSegment:
    """A client's segment by name; ``FileNotFoundError`` if none, ``ValueError`` if it is no frame segment."""
    return MappedInputSegment(name) if sys.platform == "win32" else InputSegment(name)
