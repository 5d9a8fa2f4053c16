"""Shared-memory frame layout v1: the one definition the daemon and every reader share.

Little-endian. A 128-byte header, then ``slot_count`` slots of ``max_width * max_height * 4``
bytes; slot i starts at ``HEADER_SIZE + i * slot_bytes``. ``seq`` is odd while a frame is being
published and even when stable; frames published = seq / 2. Stdlib only: plugins import it.

Offsets 80-95 (reserved in v1, so every v1 reader ignores them) name the segment's owner: the
creating process's id (u32, offset 80) and its start time (u64, offset 88: clock ticks since
boot on Linux, 0 where unknown). A daemon takes over a segment of its name only when that
process is gone, and unlinks at exit only a segment that still names it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"TBF1"
HEADER_SIZE = 128
FORMAT_RGBA8 = 0
ORIGIN_TOP_LEFT = 0

# offset 0: magic, header_size, slot_count, max_width, max_height
GEOMETRY = struct.Struct("<4sHHII")
SEQ = struct.Struct("<Q")
SEQ_OFFSET = 16
# offset 24: slot, width, height, stride, channels, format, origin, reserved u8, reserved u32,
# params version, seed, publication time (ns), render ms
META = struct.Struct("<IIIIBBBBIQQqf")
META_OFFSET = 24

# offset 80: owner pid, reserved u32, owner start time (see the module docstring)
OWNER = struct.Struct("<IIQ")
OWNER_OFFSET = 80

assert GEOMETRY.size == 16 and META_OFFSET + META.size == 76 and OWNER_OFFSET + OWNER.size <= HEADER_SIZE


@dataclass(frozen=True)
class Geometry:
    slot_count: int
    max_width: int
    max_height: int

    @property
    def slot_bytes(self) -> int:
        return self.max_width * self.max_height * 4

    @property
    def total_bytes(self) -> int:
        return HEADER_SIZE + self.slot_count * self.slot_bytes

    def slot_offset(self, slot: int) -> int:
        return HEADER_SIZE + slot * self.slot_bytes


@dataclass(frozen=True)
class Meta:
    """The metadata of the latest frame, as stored in the header."""

    slot: int
    width: int
    height: int
    stride: int
    version: int
    seed: int
    published_ns: int
    render_ms: float


def pack_meta(meta: Meta) -> bytes:
    return META.pack(meta.slot, meta.width, meta.height, meta.stride, 4, FORMAT_RGBA8,
                     ORIGIN_TOP_LEFT, 0, 0, meta.version, meta.seed, meta.published_ns,
                     meta.render_ms)


def unpack_meta(buf, offset: int = META_OFFSET) -> Meta:
    (slot, width, height, stride, channels, fmt, origin, _r0, _r1, version, seed, published_ns,
     render_ms) = META.unpack_from(buf, offset)
    if channels != 4 or fmt != FORMAT_RGBA8 or origin != ORIGIN_TOP_LEFT:
        raise ValueError(f"unsupported frame format: channels={channels} format={fmt} origin={origin}")
    return Meta(slot, width, height, stride, version, seed, published_ns, render_ms)


@dataclass(frozen=True)
class Owner:
    """The process that created a segment: its pid and start time (0: unknown)."""

    pid: int
    started: int


def write_owner(buf, owner: Owner) -> None:
    OWNER.pack_into(buf, OWNER_OFFSET, owner.pid, 0, owner.started)


def read_owner(buf) -> Owner:
    pid, _reserved, started = OWNER.unpack_from(buf, OWNER_OFFSET)
    return Owner(pid, started)


def write_geometry(buf, geometry: Geometry, owner: Owner | None = None) -> None:
    """A fresh header: the owner (if given), the geometry, nothing published (seq 0).

    The owner goes in before the magic, so whoever sees the magic also sees the owner."""
    buf[:HEADER_SIZE] = bytes(HEADER_SIZE)
    if owner is not None:
        write_owner(buf, owner)
    GEOMETRY.pack_into(buf, 0, MAGIC, HEADER_SIZE, geometry.slot_count, geometry.max_width, geometry.max_height)


def publish(buf, geometry: Geometry, seq: int, meta: Meta, pixels) -> int:
    """Copy C-contiguous RGBA8 ``pixels`` into ``meta.slot`` (not the latest one, so no reader is
    reading it), then flip the header: seq odd, metadata, seq even. Returns the new seq.

    The metadata is packed before seq goes odd, so the odd window is two stores and one copy of
    52 bytes: a reader that sees it retries after a short back-off (see ``ShmReader.read``)."""
    data = memoryview(pixels).cast("B")
    if len(data) != meta.height * meta.stride or meta.width > geometry.max_width or meta.height > geometry.max_height:
        raise ValueError(f"frame {meta.width}x{meta.height} ({len(data)} bytes) does not fit the segment's "
                         f"{geometry.max_width}x{geometry.max_height} slots")
    start = geometry.slot_offset(meta.slot)
    buf[start:start + len(data)] = data
    packed = pack_meta(meta)
    SEQ.pack_into(buf, SEQ_OFFSET, seq + 1)
    buf[META_OFFSET:META_OFFSET + META.size] = packed
    SEQ.pack_into(buf, SEQ_OFFSET, seq + 2)
    return seq + 2


def read_geometry(buf) -> Geometry:
    magic, header_size, slot_count, max_width, max_height = GEOMETRY.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError(f"not a turbo-bridge frame segment (magic {magic!r}, expected {MAGIC!r})")
    if header_size != HEADER_SIZE or slot_count < 2:
        raise ValueError(f"unsupported layout: header_size={header_size} slot_count={slot_count}")
    return Geometry(slot_count, max_width, max_height)



class Segment:
    """A named segment mapped read-write, invisible to Python's resource tracker.

    Python < 3.13 registers every attached ``SharedMemory`` with the resource tracker, which
    unlinks it when the process exits; a reader must never do that to the daemon's segment,
    so on POSIX we map it ourselves (as ``SharedMemory`` does, minus the registration). With
    ``create`` (a size in bytes) the segment is made new, and its creator unlinks it.
    """

    def __init__(self, name: str, create: int | None = None):
        import mmap
        import os
        import sys

        self.name = name
        if sys.platform == "win32":
            from multiprocessing import shared_memory

            # Windows does not track segments; a mapping lives while a handle to it is open.
            self._shm = shared_memory.SharedMemory(name, create=bool(create), size=create or 0)
            self.buf = self._shm.buf
            self.size = self._shm.size
            return
        import _posixshmem

        self._shm = None
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, create)
            self._mmap = mmap.mmap(fd, create or os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap)
        self.size = len(self._mmap)

    def unlink(self) -> None:
        """Remove the name (creators only); Windows frees a segment when its last handle closes."""
        if self._shm is None:
            self.unlink_name(self.name)

    @staticmethod
    def unlink_name(name: str) -> None:
        """Remove a segment's name (POSIX; a no-op on Windows, which has no names to remove)."""
        import sys

        if sys.platform != "win32":
            import _posixshmem

            try:
                _posixshmem.shm_unlink("/" + name)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Unmap; never unlinks."""
        self.buf.release()
        if self._shm is not None:
            self._shm.close()
        else:
            self._mmap.close()


def attach_untracked(name: str) -> Segment:
    return Segment(name)
