"""PNG encoding, off the event loop and off the render path.

``PngCache`` encodes a frame at most once, on demand (HTTP), in the encoder executor.
``PngFileWriter`` keeps ``latest.png`` in ``--output-dir`` current: it writes the newest frame,
skipping any that arrive while it is busy, and swaps the file in atomically, so a reader
never sees a partial PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..core.frame import Frame

log = logging.getLogger(__name__)


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """RGBA uint8 (H x W x 4) to PNG bytes; level 1 trades a little size for a lot of speed."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, "PNG", compress_level=compress_level)
    return out.getvalue()


class PngCache:
    """Encodes each frame once, however many clients ask for it at the same time."""

    def __init__(self, executor: Executor, keep: int = 4):
        self._executor = executor
        self._keep = keep
        self._encoded: dict[int, asyncio.Future[bytes]] = {}

    async def png(self, frame: Frame) -> bytes:
        future = self._encoded.get(frame.seq)
        if future is None:
            loop = asyncio.get_running_loop()
            future = asyncio.ensure_future(loop.run_in_executor(self._executor, encode_png, frame.pixels))
            self._encoded[frame.seq] = future
            for seq in sorted(self._encoded)[:-self._keep]:
                del self._encoded[seq]
        return await asyncio.shield(future)


class PngFileWriter:
    """Writes ``latest.png`` (and ``frame-NNNNNN.png`` with ``keep_frames``) into one folder.

    A failed write (disk full, out of file handles, a read-only or vanished folder) never stops
    it: the error is logged once, passed to ``on_error`` once (OSC ``/bridge/error``) and shown in
    ``health()``; the newest frame is retried after a back-off (``RETRY_S`` doubling to
    ``MAX_RETRY_S``) and writing resumes when the folder takes files again. A folder removed
    while running is made again (not its parents: a vanished mount must not be written under).
    """

    RETRY_S = 0.25
    MAX_RETRY_S = 5.0

    def __init__(self, directory: Path, cache: PngCache, executor: Executor, keep_frames: bool = False,
                 on_error: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self._cache = cache
        self._executor = executor
        self._keep_frames = keep_frames
        self._on_error = on_error
        self._pending: Frame | None = None
        self._ready = asyncio.Event()
        self.written = 0
        self.skipped = 0
        self.failed_writes = 0
        self.error: str | None = None  # set while writes fail; None once one succeeds again
        self.last_error: str | None = None  # stays after recovery
        self.retry_s = 0.0

    def offer(self, frame: Frame) -> None:
        """Called on the event loop for each new frame; never waits."""
        if self._pending is not None:
            self.skipped += 1
        self._pending = frame
        self._ready.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            frame, self._pending = self._pending, None
            if frame is None:
                continue
            data = await self._cache.png(frame)
            try:
                await loop.run_in_executor(self._executor, self._write, frame.seq, data)
            except OSError as exc:  # a loop boundary: report, keep the newest frame, retry later
                self._failed(exc)
                if self._pending is None:
                    self._pending = frame
                await asyncio.sleep(self.retry_s)
                self._ready.set()
                continue
            self.written += 1
            if self.error is not None:
                log.info("PNG output to %s works again (%d writes had failed)", self.directory, self.failed_writes)
                self.error, self.retry_s = None, 0.0

    def _failed(self, exc: OSError) -> None:
        self.failed_writes += 1
        message = f"PNG output to {self.directory} failed: {exc.strerror or type(exc).__name__}" \
                  f"{f' ({exc.filename})' if exc.filename else ''}; frames keep rendering, retrying"
        first = self.error is None
        self.error = self.last_error = message
        self.retry_s = min(self.retry_s * 2, self.MAX_RETRY_S) if not first else self.RETRY_S
        if first:  # once per failure episode: a full disk must not also fill the log
            log.error("%s", message)
            if self._on_error is not None:
                self._on_error(message)

    def _write(self, seq: int, data: bytes) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(exist_ok=True)  # removed while running: make it again
            log.warning("PNG output folder %s was removed; made it again", self.directory)
        if self._keep_frames:
            _atomic_write(self.directory / f"frame-{seq:06d}.png", data)
        _atomic_write(self.directory / "latest.png", data)

    def health(self) -> dict:
        return {"dir": str(self.directory), "written": self.written, "skipped": self.skipped,
                "failed_writes": self.failed_writes, "error": self.error, "last_error": self.last_error}


def _atomic_write(path: Path, data: bytes) -> None:
    # A temp file in the same folder, then rename: readers see the old file or the new one.
    # Names are ours (never from a request); O_EXCL|O_NOFOLLOW and rename (which replaces a link,
    # not its target) keep a planted symlink from sending the bytes outside --output-dir.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crash, or a planted link: unlink removes the link itself
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with open(fd, "wb") as f:
            f.write(data)  # a full disk fails here or at the flush on close
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # never leave a partial temp file behind
        raise
