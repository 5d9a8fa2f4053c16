"""The shared-memory frame writer (layout v1, see ``bridge.client.layout``).

The daemon alone creates and unlinks the segment. A segment left behind by a killed daemon
(same name, our magic) is reclaimed at start; a foreign segment of that name is an error.
"""

from __future__ import annotations

import logging
from multiprocessing import shared_memory

import numpy as np

from ...client import layout
from ...core.errors import BridgeError
from ...core.frame import Frame

log = logging.getLogger(__name__)


class ShmWriter:
    """Publishes frames into a named segment; use as a context manager (creates, then unlinks)."""

    def __init__(self, name: str, max_width: int, max_height: int, slot_count: int = 3):
        if slot_count < 2:
            raise ValueError("slot_count must be at least 2")
        self.name = name
        self.geometry = layout.Geometry(slot_count, max_width, max_height)
        self._shm: shared_memory.SharedMemory | None = None
        self._seq = 0
        self._latest_slot = slot_count - 1

    def __enter__(self) -> "ShmWriter":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        size = self.geometry.total_bytes
        try:
            self._shm = shared_memory.SharedMemory(self.name, create=True, size=size)
        except FileExistsError:
            self._reclaim_stale()
            self._shm = shared_memory.SharedMemory(self.name, create=True, size=size)
        layout.write_geometry(self._shm.buf, self.geometry)
        log.info("shared memory %r: %d slots of %dx%d, %.1f MB", self.name, self.geometry.slot_count,
                 self.geometry.max_width, self.geometry.max_height, size / 1e6)

    def _reclaim_stale(self) -> None:
        stale = layout.attach_untracked(self.name)
        try:
            magic = bytes(stale.buf[:4])
        finally:
            stale.close()
        if magic != layout.MAGIC:
            # Unlinking here would pull the segment from under another program.
            raise BridgeError(
                f"a shared-memory segment named {self.name!r} exists and is not a turbo-bridge "
                "frame segment; choose another name with --shm-name"
            )
        log.warning("reclaiming stale shared memory %r left by an earlier daemon", self.name)
        owner = shared_memory.SharedMemory(self.name)
        owner.close()
        owner.unlink()

    def close(self) -> None:
        if self._shm is None:
            return
        shm, self._shm = self._shm, None
        shm.close()
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
        log.info("shared memory %r unlinked", self.name)

    @property
    def frames_published(self) -> int:
        return self._seq // 2

    def publish(self, frame: Frame) -> None:
        """Copy the frame into a slot that is not the latest, then flip the header (seqlock)."""
        if self._shm is None:
            raise RuntimeError("ShmWriter.publish before open()")
        height, width = frame.height, frame.width
        if width > self.geometry.max_width or height > self.geometry.max_height:
            raise ValueError(f"frame {width}x{height} exceeds the segment's "
                             f"{self.geometry.max_width}x{self.geometry.max_height}")
        slot = (self._latest_slot + 1) % self.geometry.slot_count
        meta = layout.Meta(slot, width, height, width * 4, frame.version, frame.params.seed,
                           frame.published_ns, frame.render_ms)
        self._seq = layout.publish(self._shm.buf, self.geometry, self._seq, meta, np.ascontiguousarray(frame.pixels))
        self._latest_slot = slot

