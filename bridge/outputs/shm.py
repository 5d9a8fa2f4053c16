"""The shared-memory frame writer (layout v1, see ``bridge.client.layout``).

The daemon alone creates and unlinks the segment, and records itself as its owner (pid and start
time, in header bytes v1 readers ignore). At start, a segment of the same name whose owner still
runs is refused in one line naming that daemon; one whose owner is gone (a killed daemon) is
reclaimed; anything else of that name (empty, foreign) is refused and left alone. At exit, the
segment is unlinked only if the name still holds ours.

An output (``bridge.core.output``): ``start`` creates the segment, ``close`` unlinks it.
"""

from __future__ import annotations

import logging

import numpy as np

from ..client import layout
from ..core.frame import Frame
from ..core.output import ErrorReport, OutputError
from . import owner as owners

log = logging.getLogger(__name__)


DAEMON_REMEDY = "start this one with another --shm-name"


class ShmWriter:
    """Publishes frames into a named segment; an output, or a context manager (creates, then unlinks).

    ``remedy``: what the refusal of a taken name tells the user to do (another ``--shm-name`` for
    the daemon's segment, another name for a channel's).
    """

    kind = "shm"
    error = None  # publishing into memory does not fail

    def __init__(self, name: str, max_width: int, max_height: int, slot_count: int = 3,
                 remedy: str = DAEMON_REMEDY):
        if slot_count < 2:
            raise ValueError("slot_count must be at least 2")
        self.name = name
        self.remedy = remedy
        self.geometry = layout.Geometry(slot_count, max_width, max_height)
        self._shm: layout.Segment | None = None
        self._owner: layout.Owner | None = None
        self._seq = 0
        self._latest_slot = slot_count - 1

    def __enter__(self) -> ShmWriter:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, report: ErrorReport) -> None:
        self.open()

    def health(self) -> dict:
        return {"name": self.name, "frames": self.frames_published}

    def open(self) -> None:
        size = self.geometry.total_bytes
        self._owner = owners.this_process()
        try:
            self._shm = layout.Segment(self.name, create=size)
        except FileExistsError:
            self._reclaim_stale()
            try:
                self._shm = layout.Segment(self.name, create=size)
            except FileExistsError:  # another daemon created it in between: it is live
                raise OutputError(f"shared memory {self.name!r} was just created by another process; "
                                  f"{self.remedy}") from None
        layout.write_geometry(self._shm.buf, self.geometry, self._owner)
        log.info("shared memory %r: %d slots of %dx%d, %.1f MB", self.name, self.geometry.slot_count,
                 self.geometry.max_width, self.geometry.max_height, size / 1e6)

    def _reclaim_stale(self) -> None:
        """Unlink the segment of our name if a dead daemon left it; raise OutputError otherwise."""
        try:
            stale = layout.attach_untracked(self.name)
        except FileNotFoundError:
            return  # gone in between
        except (OSError, ValueError) as exc:  # an empty segment cannot be mapped
            raise OutputError(f"shared memory {self.name!r} exists and is not a turbo-bridge frame segment "
                              f"({exc}); remove it if nothing uses it, or {self.remedy}") from None
        try:
            size = stale.size
            magic = bytes(stale.buf[:4]) if size >= layout.HEADER_SIZE else b""
            found = layout.read_owner(stale.buf) if magic == layout.MAGIC else None
        finally:
            stale.close()
        if found is None:
            # Unlinking here would pull the segment from under another program.
            raise OutputError(f"shared memory {self.name!r} exists and is not a turbo-bridge frame segment "
                              f"({size} bytes); {self.remedy}")
        if owners.is_alive(found):
            raise OutputError(f"shared memory {self.name!r} belongs to a running turbo-bridge daemon "
                              f"(pid {found.pid}); stop it, or {self.remedy}")
        log.warning("reclaiming stale shared memory %r left by an earlier daemon (pid %s, gone)",
                    self.name, found.pid or "unrecorded")
        layout.Segment.unlink_name(self.name)

    def close(self, timeout: float | None = None) -> None:
        if self._shm is None:
            return
        shm, self._shm = self._shm, None
        ours = self._still_ours()  # asked while mapped: Windows drops a segment with its last handle
        shm.close()
        if ours:
            layout.Segment.unlink_name(self.name)
            log.info("shared memory %r unlinked", self.name)
        else:
            log.warning("shared memory %r is no longer ours (removed or replaced): left alone", self.name)

    def _still_ours(self) -> bool:
        try:
            current = layout.attach_untracked(self.name)
        except (OSError, ValueError):
            return False
        try:
            return current.size >= layout.HEADER_SIZE and layout.read_owner(current.buf) == self._owner
        finally:
            current.close()

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

