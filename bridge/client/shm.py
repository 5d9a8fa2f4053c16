"""Frames out of the daemon's segment (tear-free, never unlinked) and input segments into it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import layout


@dataclass(frozen=True)
class FrameInfo:
    """A frame copied out of shared memory (or fetched over HTTP)."""

    seq: int  # frames published so far, counting this one
    version: int
    seed: int
    width: int
    height: int
    render_ms: float
    published_ns: int
    pixels: np.ndarray  # H x W x 4 uint8


class ShmReader:
    """Tear-free reads of the daemon's frame segment.

    ``read()`` returns the newest frame, or None when nothing new was published since the last
    read (cheap: one 8-byte load). ``flip`` gives bottom-left row order (Blender,
    TouchDesigner); ``bgra`` swaps red and blue (Krita, Qt).
    """

    def __init__(self, name: str = "turbo-bridge", flip: bool = False, bgra: bool = False):
        self.name = name
        self.flip = flip
        self.bgra = bgra
        self._shm = layout.attach_untracked(name)
        try:
            if self._shm.size < layout.HEADER_SIZE:
                raise ValueError(f"segment {name!r} is {self._shm.size} bytes, too small for a frame header")
            self.geometry = layout.read_geometry(self._shm.buf)
        except ValueError:
            self.close()
            raise
        self._last_seq = -1
        self.retries = 0  # reads that raced a publish and were repeated

    def __enter__(self) -> ShmReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()  # close only: the segment belongs to the daemon
            self._shm = None

    @property
    def buffer(self) -> memoryview:
        """The whole mapped segment (read it, never write it)."""
        return self._shm.buf

    @property
    def seq(self) -> int:
        """The segment's raw seq word (odd while publishing; frames published = seq // 2)."""
        return layout.SEQ.unpack_from(self._shm.buf, layout.SEQ_OFFSET)[0]

    def changed(self) -> bool:
        return self.seq != self._last_seq

    def latest_meta(self) -> layout.Meta | None:
        """The newest frame's metadata (seed, version, size, render ms) without copying pixels;
        None while nothing is published or a publish is in progress."""
        buf = self._shm.buf
        s1 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
        if s1 == 0 or s1 % 2:
            return None
        meta = layout.unpack_meta(buf)
        return meta if layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0] == s1 else None

    def read(self, force: bool = False, timeout: float = 1.0) -> FrameInfo | None:
        """The newest frame, or None when nothing (new) was published.

        An odd seq means the writer is between its two header stores (microseconds); so does a
        seq that changed while the pixels were copied. Either way the read is repeated after a
        back-off: a few bare retries, then sleeps from 50 us doubling to 5 ms, never a busy spin.
        A seq that moves on is a live writer: the back-off and the ``timeout`` start again, so a
        reader racing a fast writer still gets its frame. A seq stuck for ``timeout`` seconds (a
        writer that died mid-publish) raises TimeoutError; callers that poll (the daemon's input
        watcher) back off further.
        """
        if self._shm is None:
            raise ValueError(f"ShmReader({self.name!r}) is closed")
        buf = self._shm.buf
        deadline = time.monotonic() + timeout
        attempt = 0
        previous = None
        while True:
            s1 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
            if s1 == 0 or (s1 == self._last_seq and not force):
                return None  # nothing published yet, or nothing new
            if s1 != previous:  # the writer made progress since the last attempt: it is alive
                previous, attempt, deadline = s1, 0, time.monotonic() + timeout
            if s1 % 2 == 0:
                meta = layout.unpack_meta(buf)
                pixels = self._copy(buf, meta)
                s2 = layout.SEQ.unpack_from(buf, layout.SEQ_OFFSET)[0]
                if s1 == s2:
                    self._last_seq = s1
                    return FrameInfo(s1 // 2, meta.version, meta.seed, meta.width, meta.height,
                                     meta.render_ms, meta.published_ns, self._convert(pixels))
            self.retries += 1
            attempt = retry_after(attempt, deadline, self.name, timeout, s1)

    def _copy(self, buf, meta: layout.Meta) -> np.ndarray:
        """The pixels of ``meta``'s slot; a header that does not fit the segment raises ValueError."""
        geometry = self.geometry
        if not (0 <= meta.slot < geometry.slot_count and 0 < meta.width <= geometry.max_width
                and 0 < meta.height <= geometry.max_height and meta.stride == meta.width * 4):
            raise ValueError(f"shared memory {self.name!r}: frame header (slot {meta.slot}, {meta.width}x"
                             f"{meta.height}, stride {meta.stride}) does not fit the segment's geometry")
        start = geometry.slot_offset(meta.slot)
        if start + meta.height * meta.stride > len(buf):
            raise ValueError(f"shared memory {self.name!r} is {len(buf)} bytes, smaller than its header says")
        pixels = np.frombuffer(buf, np.uint8, count=meta.height * meta.stride, offset=start)
        return pixels.reshape(meta.height, meta.width, 4).copy()

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        if self.flip:
            pixels = pixels[::-1]
        if self.bgra:
            pixels = pixels[..., [2, 1, 0, 3]]
        return np.ascontiguousarray(pixels)


def retry_after(attempt: int, deadline: float, name: str, timeout: float, seq: int) -> int:
    """Wait before the next try of a torn read (the next attempt's number), or raise ``TimeoutError``
    past ``deadline``."""
    if time.monotonic() > deadline:
        raise TimeoutError(f"shared memory {name!r}: no stable frame within {timeout} s "
                           f"(seq {seq} {'odd: a publish never finished' if seq % 2 else 'kept changing'})")
    time.sleep(backoff_s(attempt + 1))
    return attempt + 1


def backoff_s(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 0 (just yield) three times, then 50 us
    doubling up to 5 ms."""
    return 0.0 if attempt <= 3 else min(50e-6 * 2 ** (attempt - 4), 5e-3)


def to_rgba8(pixels: np.ndarray, flip: bool = False, bgra: bool = False) -> np.ndarray:
    """Host pixels to the protocol's RGBA8, rows top-first (C-contiguous).

    Takes uint8 or float (0-1) pixels with 3 or 4 channels; ``flip``: the rows are bottom-first
    (Blender, TouchDesigner); ``bgra``: the bytes are B, G, R, A (Krita, Qt).
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected H x W x 3 or 4 pixels, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if bgra:
        pixels = pixels[..., [2, 1, 0, 3] if pixels.shape[2] == 4 else [2, 1, 0]]
    if pixels.shape[2] == 3:
        pixels = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(pixels[::-1] if flip else pixels)


class ShmInputWriter:
    """An input segment (layout v1) that this process creates, writes and unlinks on ``close``.

    ``write`` publishes one input frame (tear-free, like the daemon's frames); the daemon polls
    the segment once told its name (``HttpClient.attach_input(name)``). Frames larger than the
    segment's maximum size are refused: scale them first.
    """

    def __init__(self, name: str, max_width: int, max_height: int, slot_count: int = 3):
        self.name = name
        self.geometry = layout.Geometry(slot_count, max_width, max_height)
        self._shm = layout.Segment(name, create=self.geometry.total_bytes)
        layout.write_geometry(self._shm.buf, self.geometry)
        self._seq = 0
        self._slot = slot_count - 1

    def __enter__(self) -> ShmInputWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, pixels: np.ndarray, flip: bool = False, bgra: bool = False, tag: int = 0) -> int:
        """Publish one frame (see ``to_rgba8`` for what it takes); ``tag`` lands in the seed field.
        Returns the frames written so far."""
        if self._shm is None:
            raise ValueError(f"ShmInputWriter({self.name!r}) is closed")
        rgba = to_rgba8(pixels, flip, bgra)
        height, width = rgba.shape[:2]
        self._slot = (self._slot + 1) % self.geometry.slot_count
        meta = layout.Meta(self._slot, width, height, width * 4, self._seq // 2 + 1, tag, time.time_ns(), 0.0)
        self._seq = layout.publish(self._shm.buf, self.geometry, self._seq, meta, rgba)
        return self._seq // 2

    def close(self) -> None:
        if self._shm is not None:
            shm, self._shm = self._shm, None
            shm.close()
            shm.unlink()
