"""PNG encoding, off the event loop and off the render path, and the PNG files output.

``PngCache`` encodes a frame at most once, however many ask for it (HTTP, the live streams, the
PNG files), in the encoder executor; it serves every channel of the daemon.
``PngFiles`` (an output, ``bridge.core.output``) keeps ``latest.png`` in one folder current: its
worker writes the newest frame, skipping any that arrive while it is busy, and swaps the file in
atomically, so a reader never sees a partial PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.frame import Frame
from ..core.output import ErrorReport, OutputError
from .mailbox import Mailbox

log = logging.getLogger(__name__)

LATEST = "latest.png"


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """RGBA uint8 (H x W x 4) to PNG bytes; level 1 trades a little size for a lot of speed."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, "PNG", compress_level=compress_level)
    return out.getvalue()


class PngCache:
    """Encodes each frame once, however many clients and outputs ask for it at the same time.

    Keyed by the frame itself (an entry holds its frame, so the key cannot be reused while cached);
    the ``keep`` newest frames stay. Callable from the event loop (``png``) and from threads (``png_now``).
    """

    def __init__(self, executor: Executor, keep: int = 4):
        self._executor = executor
        self._keep = keep
        self._lock = threading.Lock()
        self._encoded: OrderedDict[int, tuple[Frame, Future]] = OrderedDict()

    def future(self, frame: Frame) -> Future:
        with self._lock:
            entry = self._encoded.get(id(frame))
            if entry is None:
                entry = self._encoded[id(frame)] = (frame, self._executor.submit(encode_png, frame.pixels))
                while len(self._encoded) > self._keep:
                    self._encoded.popitem(last=False)
            return entry[1]

    async def png(self, frame: Frame) -> bytes:
        # shield: a client that goes away must not cancel an encode others wait for.
        return await asyncio.shield(asyncio.wrap_future(self.future(frame)))

    def png_now(self, frame: Frame) -> bytes:
        """The frame's PNG, waiting for it on this (worker) thread."""
        return self.future(frame).result()


class PngFiles:
    """Writes ``latest.png`` (and ``frame-NNNNNN.png`` with ``keep_frames``) of one channel into ``folder``.

    A failed write (disk full, out of file handles, a read-only, vanished or replaced folder) never
    stops it: the error is logged once, reported once (OSC ``/bridge/error``) and kept in ``error``
    (``/v1/health`` degraded); the newest frame is retried after a back-off (``RETRY_S`` doubling to
    ``MAX_RETRY_S``) and writing resumes when the folder takes files again. A folder removed while
    running is made again (not its parents: a vanished mount must not be written under).

    ``own_folder``: the folder is the daemon's (a channel's, inside ``--output-dir``): made without
    parents, refused if it is a link, and at close its ``latest.png`` goes and the folder too if
    nothing else (kept frames) is in it. Otherwise it is the operator's: made with its parents and
    left as it is.
    """

    kind = "png_files"
    RETRY_S = 0.25
    MAX_RETRY_S = 5.0

    def __init__(self, folder: Path, encode: Callable[[Frame], bytes] = lambda frame: encode_png(frame.pixels),
                 keep_frames: bool = False, own_folder: bool = False, remedy: str = "choose another --output-dir"):
        self.directory = Path(folder)
        self._encode = encode
        self._keep_frames = keep_frames
        self._own_folder = own_folder
        self._remedy = remedy
        self._report: ErrorReport = lambda message: None
        self._mailbox = Mailbox()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed_writes = 0
        self.error: str | None = None  # set while writes fail; None once one succeeds again
        self.last_error: str | None = None  # stays after recovery
        self.retry_s = 0.0

    # -- the output contract ---------------------------------------------------------------
    def start(self, report: ErrorReport) -> None:
        self._make_folder()
        self._report = report
        self._thread = threading.Thread(target=self._work, name=f"png-files-{self.directory.name}", daemon=True)
        self._thread.start()

    def publish(self, frame: Frame) -> None:
        self._mailbox.put(frame)

    def close(self, timeout: float | None = None) -> None:
        self._mailbox.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("PNG output to %s still busy after %s s; left running", self.directory, timeout)
                return
        if self._own_folder:
            self._remove_folder()

    def health(self) -> dict:
        return {"dir": str(self.directory), "written": self.written, "skipped": self._mailbox.skipped,
                "failed_writes": self.failed_writes, "error": self.error, "last_error": self.last_error}

    # -- the folder ------------------------------------------------------------------------
    def _make_folder(self) -> None:
        where = self.directory
        try:
            info = os.lstat(where)
        except FileNotFoundError:
            try:
                where.mkdir(parents=not self._own_folder)
            except FileExistsError:  # made in between (by another daemon on the same folder): look again
                info = os.lstat(where)
            except OSError as exc:
                raise OutputError(f"PNG folder {str(where)!r} cannot be made: {exc.strerror or exc}; "
                                  f"{self._remedy}") from None
            else:
                return
        if self._own_folder and stat.S_ISLNK(info.st_mode):
            # A planted link would send our files outside --output-dir.
            raise OutputError(f"PNG folder {str(where)!r} is a link; remove it or {self._remedy}")
        if not where.is_dir():
            raise OutputError(f"PNG folder {str(where)!r} exists and is not a folder; move it away or {self._remedy}")

    def _remove_folder(self) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            os.unlink(self.directory / LATEST)  # the frame of a stream that no longer exists
        try:
            self.directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:  # not empty: kept frames (--keep-frames), or the user's files
            log.info("PNG folder %s kept: %s", self.directory, exc.strerror)

    # -- the worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        while (frame := self._mailbox.take()) is not None:
            try:
                self._write(frame.seq, self._encode(frame))
            except Exception as exc:  # a worker boundary: report, keep the newest frame, retry later
                self._failed(exc)
                self._mailbox.put_back(frame)
                if self._mailbox.wait_closed(self.retry_s):
                    return
                continue
            self.written += 1
            if self.error is not None:
                log.info("PNG output to %s works again (%d writes had failed)", self.directory, self.failed_writes)
                self.error, self.retry_s = None, 0.0

    def _failed(self, exc: Exception) -> None:
        self.failed_writes += 1
        if isinstance(exc, OSError):
            why = f"{exc.strerror or type(exc).__name__}{f' ({exc.filename})' if exc.filename else ''}"
        else:
            why = f"{type(exc).__name__}: {exc}"
        message = f"PNG output to {self.directory} failed: {why}; frames keep rendering, retrying"
        first = self.error is None
        self.error = self.last_error = message
        self.retry_s = min(self.retry_s * 2, self.MAX_RETRY_S) if not first else self.RETRY_S
        if first:  # once per failure episode: a full disk must not also fill the log
            log.error("%s", message)
            self._report(message)

    def _write(self, seq: int, data: bytes) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir()  # removed while running: make it again (a file in its place: fails)
            log.warning("PNG output folder %s was removed; made it again", self.directory)
        if self._keep_frames:
            _atomic_write(self.directory / f"frame-{seq:06d}.png", data)
        _atomic_write(self.directory / LATEST, data)


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
