"""Recording the published frames into H.264 MP4 files in ``--output-dir``.

``Recorder`` is a sink: ``publish`` runs on the GPU thread and only hands the frame (its pixels
are never written again) to a bounded queue; when the encoder falls behind, frames are dropped
and counted, never waited for. One worker thread per recording encodes with PyAV (libx264 from
the wheel's FFmpeg) at variable frame rate: each frame's pts is its publication time in a
1/90000 s time base. A size change closes the file and opens the next. A file is written as
``NAME.mp4.partial`` and renamed to ``NAME.mp4`` only once its trailer is written; a file that
cannot be finished (full disk, folder gone) is removed and the error reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..core.errors import BridgeError
from ..core.frame import Frame

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90_000)  # the MPEG clock: 11 us steps, plenty for frame times
ENCODERS = ("libx264", "h264")  # the wheel's libx264 first; "h264" is whatever FFmpeg maps it to
MAX_FILES_LISTED = 16
_STOP = object()


class RecordingError(BridgeError):
    """A start or stop the recorder refuses (already recording, no folder...): HTTP 409."""


@dataclass(frozen=True)
class RecordOptions:
    queue_frames: int = 8  # frames waiting for the encoder before new ones are dropped
    preset: str = "veryfast"
    crf: int = 18


def pick_encoder() -> str | None:
    """The first H.264 encoder this PyAV build has, or None."""
    import av

    for name in ENCODERS:
        with contextlib.suppress(Exception):
            av.codec.Codec(name, "w")
            return name
    return None


class _File:
    """One MP4 being written: opened on its first frame, finished (trailer, rename) or discarded."""

    def __init__(self, partial: Path, final: Path, width: int, height: int, encoder: str, options: RecordOptions):
        import av

        self.partial, self.final, self.size = partial, final, (width, height)
        self.frames = 0
        self._first_ns: int | None = None
        self._last_pts = -1
        # Our own name in the operator's folder: created here (O_EXCL, no link followed) before FFmpeg opens it.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
        self._container = av.open(str(partial), mode="w", format="mp4")
        try:
            stream = self._container.add_stream(encoder, rate=60)  # a nominal rate: pts carry the real times
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = stream.codec_context.time_base = TIME_BASE
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, as the frames are converted
            cc.color_range = 1  # limited (MPEG) range
            # zerolatency: no lookahead or B-frames, so each frame is encoded (and freed) as it comes.
            stream.options = {"preset": options.preset, "tune": "zerolatency", "crf": str(options.crf)}
            self._stream = stream
        except BaseException:
            self.discard()
            raise

    def write(self, pixels, published_ns: int) -> None:
        import av

        if self._first_ns is None:
            self._first_ns = published_ns
        pts = max((published_ns - self._first_ns) * TIME_BASE.denominator // 1_000_000_000, self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgba").reformat(format="yuv420p", dst_colorspace="ITU709")
        frame.pts, frame.time_base = pts, TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> Path:
        """Flush the encoder, write the trailer, rename to the final name; raises on failure."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        os.replace(self.partial, self.final)
        return self.final

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)


class _Session:
    """One start..stop: its queue, its worker thread, its counters."""

    def __init__(self, recorder: "Recorder", base: str):
        self.base = base
        self.queue: queue.Queue = queue.Queue()
        self.accepting = True
        self.frames = 0  # encoded
        self.dropped = 0  # skipped: the encoder was behind
        self.files: list[str] = []
        self.current: str | None = None
        self.error: str | None = None
        self.started = time.time()
        self.thread = threading.Thread(target=recorder._work, args=(self,), name="record", daemon=True)


class Recorder:
    """A frame sink that records while started; ``start``/``stop`` run on the event loop."""

    def __init__(self, directory: Path | None, options: RecordOptions = RecordOptions()):
        self.directory = None if directory is None else Path(directory)
        self.options = options
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._encoder: str | None = None
        self.files: list[str] = []  # finished files, newest last (the last few)
        self.last_error: str | None = None

    # -- the GPU thread ----------------------------------------------------------------
    def publish(self, frame: Frame) -> None:
        session = self._session
        if session is None or not session.accepting:
            return
        if session.queue.qsize() >= self.options.queue_frames:
            session.dropped += 1
            return
        session.queue.put_nowait((frame.pixels, frame.published_ns))

    # -- the event loop ------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        session = self._session
        return session is not None and session.accepting

    def start(self) -> dict:
        if self.directory is None:
            raise RecordingError("recording needs a folder: start the daemon with --output-dir DIR")
        with self._lock:
            if self.recording:
                raise RecordingError(f"already recording ({self._session.current or self._session.base + '.mp4'}); "
                                     "stop first")
            if not self.directory.is_dir():
                raise RecordingError(f"the output folder {str(self.directory)!r} does not exist (any more); "
                                     "create it or restart with another --output-dir")
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise RecordingError(f"the output folder {str(self.directory)!r} is not writable")
            if self._encoder is None:
                self._encoder = pick_encoder()
                if self._encoder is None:
                    raise RecordingError("this PyAV build has no H.264 encoder (libx264); install the PyPI "
                                         "wheel of av")
            self._session = _Session(self, time.strftime("record-%Y%m%d-%H%M%S"))
            self._session.thread.start()
            self.last_error = None
        log.info("recording to %s (%s)", self.directory, self._encoder)
        return self.state()

    def stop(self) -> threading.Thread:
        """Stop taking frames; the worker finishes the file. Returns the thread to join (off the loop)."""
        with self._lock:
            session = self._session
            if session is None or not session.accepting:
                why = f" (the last recording stopped: {self.last_error})" if self.last_error else ""
                raise RecordingError(f"not recording{why}; start with POST /v1/record {{\"action\": \"start\"}}")
            session.accepting = False
            session.queue.put(_STOP)
        return session.thread

    def close(self, timeout: float | None = None) -> None:
        """At shutdown: finish the file being written (a clean MP4 on SIGTERM)."""
        with contextlib.suppress(RecordingError):
            self.stop().join(timeout)

    def state(self) -> dict:
        session = self._session
        out = {"available": self.directory is not None, "recording": self.recording,
               "dir": None if self.directory is None else str(self.directory), "encoder": self._encoder,
               "files": list(self.files), "error": self.last_error}
        if session is not None:
            out.update(file=session.current, frames=session.frames, dropped=session.dropped,
                       session_files=list(session.files), seconds=round(time.time() - session.started, 3)
                       if session.accepting else None)
        return out

    # -- the worker thread ---------------------------------------------------------------------
    def _work(self, session: _Session) -> None:
        current: _File | None = None
        try:
            while (item := session.queue.get()) is not _STOP:
                pixels, published_ns = item
                height, width = pixels.shape[:2]
                if current is not None and current.size != (width, height):
                    self._finish(session, current)  # a size change: this file ends, the next begins
                    current = None
                if current is None:
                    current = self._open(session, width, height)
                current.write(pixels, published_ns)
                session.frames += 1
        except Exception as exc:  # a worker boundary: a full disk, a vanished folder, an encoder error
            self._fail(session, current, exc)
            current = None
        finally:
            if current is not None:
                self._finish(session, current)
            session.current = None

    def _open(self, session: _Session, width: int, height: int) -> _File:
        part = len(session.files) + 1
        name = session.base if part == 1 else f"{session.base}-{part}"
        for n in range(1, 1000):  # a second recording within the same second gets a suffix
            candidate = name if n == 1 else f"{name}_{n}"
            final = self.directory / f"{candidate}.mp4"
            partial = final.with_name(final.name + ".partial")
            if not final.exists() and not partial.exists():
                break
        session.current = final.name
        log.info("recording %dx%d into %s", width, height, final)
        return _File(partial, final, width, height, self._encoder, self.options)

    def _finish(self, session: _Session, current: _File) -> None:
        try:
            path = current.finish()
        except Exception as exc:
            self._fail(session, current, exc)
            return
        session.files.append(path.name)
        self.files = [*self.files, path.name][-MAX_FILES_LISTED:]
        log.info("recorded %s: %d frames", path, current.frames)

    def _fail(self, session: _Session, current: _File | None, exc: Exception) -> None:
        lost = ""
        if current is not None:
            current.discard()
            lost = f"; {current.final.name} could not be finished and was removed ({current.frames} frames lost)"
        session.error = self.last_error = f"recording stopped: {type(exc).__name__}: {exc}{lost}"
        session.accepting = False  # after the error is set: whoever sees the stop sees why
        log.error("%s", session.error)


def state_fields() -> dict:
    """What ``GET /v1/record`` returns, for the schema."""
    return {"available": "bool: --output-dir is set", "recording": "bool", "dir": "the output folder",
            "encoder": "the H.264 encoder (libx264)", "files": "finished files (newest last)",
            "error": "why the last recording stopped on its own, or null", "file": "the file being written",
            "frames": "frames encoded in this recording", "dropped": "frames skipped: the encoder was behind",
            "session_files": "files of this recording", "seconds": "since start, while recording"}

