"""Recording the published frames into H.264 MP4 files in ``--output-dir`` (an output of channel main).

``publish`` runs on the render thread and only hands the frame (its pixels are never written
again) to a bounded queue; when the encoder falls behind, frames are dropped and counted, never
waited for. One worker thread per recording encodes (``bridge.outputs.mp4``: fragmented MP4, so
what is on disk always plays) at variable frame rate: each frame's pts is its publication time.

- A size change closes the file and opens the next, up to ``max_files`` files a recording; past
  that, frames of another size are scaled into the last file, so a size toggled every frame makes
  at most ``max_files`` files (and ``session_files`` entries), not one per frame.
- A failed write (full disk) keeps the complete fragments under the final name and stops the
  recording; a file or folder that vanishes is noticed within ``WATCH_S``, not at stop. Either is
  reported at once: ``error`` (``/v1/health`` degraded until the next start), the log, and
  ``report`` (OSC ``/bridge/error``).
- At start, recordings a crash left (``*.mp4.partial``) are finished or reported
  (``bridge.outputs.record_recovery``), on a thread of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from pathlib import Path

from ..core.errors import BridgeError
from ..core.frame import Frame
from ..core.output import ErrorReport
from .mp4 import ENCODERS, Mp4File, RecordOptions, pick_encoder
from .record_recovery import MAX_LISTED, Outcome, recover_all

log = logging.getLogger(__name__)

__all__ = ["ENCODERS", "RecordOptions", "Recorder", "RecordingError", "state_fields"]

MAX_FILES_LISTED = 16
WATCH_S = 0.25  # how often an idle worker checks that its file is still there
_STOP = object()


class RecordingError(BridgeError):
    """A start or stop the recorder refuses (already recording, no folder...): HTTP 409."""


class _Session:
    """One start..stop: its queue, its worker thread, its counters."""

    def __init__(self, recorder: Recorder, base: str):
        self.base = base
        self.queue: queue.Queue = queue.Queue()
        self.accepting = True
        self.frames = 0  # encoded
        self.dropped = 0  # skipped: the encoder was behind
        self.repeats = 0  # a still frame encoded again to push it to disk
        self.scaled = 0  # frames scaled into the last file: max_files reached
        self.files: list[str] = []
        self.current: str | None = None
        self.error: str | None = None
        self.started = time.time()
        self.thread = threading.Thread(target=recorder._work, args=(self,), name="record", daemon=True)


class Recorder:
    """An output that records while a recording runs; ``start_recording``/``stop_recording`` on the event loop."""

    kind = "record"

    def __init__(self, directory: Path | None, options: RecordOptions = RecordOptions()):
        self.directory = None if directory is None else Path(directory)
        self.options = options
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._encoder: str | None = None
        self._report: ErrorReport = lambda message: None
        self._recovery: threading.Thread | None = None
        self.recovered: list[Outcome] = []
        self.files: list[str] = []  # finished files, newest last (the last few)
        self.last_error: str | None = None  # why the last recording stopped on its own

    # -- the output contract ----------------------------------------------------------------
    def start(self, report: ErrorReport) -> None:
        self._report = report
        if self.directory is not None and self.directory.is_dir():
            self._recovery = threading.Thread(target=self._recover, name="record-recovery", daemon=True)
            self._recovery.start()

    def publish(self, frame: Frame) -> None:
        session = self._session
        if session is None or not session.accepting:
            return
        if session.queue.qsize() >= self.options.queue_frames:
            session.dropped += 1
            return
        session.queue.put_nowait((frame.pixels, frame.published_ns))

    def close(self, timeout: float | None = None) -> None:
        """At shutdown: finish the file being written (a clean MP4 on SIGTERM)."""
        with contextlib.suppress(RecordingError):
            self.stop_recording().join(timeout)
        if self._recovery is not None:
            self._recovery.join(timeout)

    @property
    def error(self) -> str | None:
        return self.last_error

    def health(self) -> dict:
        return self.state()

    # -- the event loop ------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        session = self._session
        return session is not None and session.accepting

    def start_recording(self) -> dict:
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

    def stop_recording(self) -> threading.Thread:
        """Stop taking frames; the worker finishes the file. Returns the thread to join (off the loop)."""
        with self._lock:
            session = self._session
            if session is None or not session.accepting:
                why = f" (the last recording stopped: {self.last_error})" if self.last_error else ""
                raise RecordingError(f"not recording{why}; start with POST /v1/record {{\"action\": \"start\"}}")
            session.accepting = False
            session.queue.put(_STOP)
        return session.thread

    def state(self) -> dict:
        session = self._session
        out = {"available": self.directory is not None, "recording": self.recording,
               "dir": None if self.directory is None else str(self.directory), "encoder": self._encoder,
               "files": list(self.files), "error": self.last_error,
               "recovered": [outcome.to_json() for outcome in self.recovered],
               "recovering": self._recovery is not None and self._recovery.is_alive()}
        if session is not None:
            out.update(file=session.current, frames=session.frames, dropped=session.dropped, repeats=session.repeats,
                       scaled=session.scaled, session_files=list(session.files),
                       seconds=round(time.time() - session.started, 3) if session.accepting else None)
        return out

    # -- the worker threads ----------------------------------------------------------------------
    def _recover(self) -> None:
        self.recovered = recover_all(self.directory)[-MAX_LISTED:]

    def _work(self, session: _Session) -> None:
        current: Mp4File | None = None
        last_write = 0.0  # monotonic time of the last frame written, for the still-frame repeat
        last_ns = 0
        repeated = True
        try:
            while session.error is None:  # set by a failed finish of the previous file: stop here
                try:
                    item = session.queue.get(timeout=WATCH_S)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if current is not None and not current.still_there():
                    raise FileNotFoundError(f"{current.partial} was removed while recording (its folder is gone, "
                                            "or it was deleted)")
                if item is None:
                    waited = time.monotonic() - last_write
                    if current is not None and not repeated and self.options.repeat_after_s is not None \
                            and waited >= self.options.repeat_after_s:
                        current.repeat(last_ns + int(waited * 1e9))
                        session.repeats += 1
                        repeated = True
                    continue
                pixels, last_ns = item
                height, width = pixels.shape[:2]
                if current is not None and current.size != (width, height):
                    if len(session.files) + 1 < self.options.max_files:
                        self._finish(session, current)  # a size change: this file ends, the next begins
                        current = None
                    else:
                        if not session.scaled:
                            log.warning("recording: %d files in this recording; frames of other sizes are scaled "
                                        "into %s", self.options.max_files, current.final.name)
                        session.scaled += 1
                if current is None:
                    current = self._open(session, width, height)
                current.write(pixels, last_ns)
                session.frames += 1
                last_write, repeated = time.monotonic(), False
        except Exception as exc:  # a worker boundary: a full disk, a vanished folder, an encoder error
            self._fail(session, current, exc)
            current = None
        finally:
            if current is not None:
                self._finish(session, current)
            session.current = None

    def _open(self, session: _Session, width: int, height: int) -> Mp4File:
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
        return Mp4File(partial, final, width, height, self._encoder, self.options)

    def _finish(self, session: _Session, current: Mp4File) -> None:
        try:
            path = current.finish()
        except Exception as exc:
            self._fail(session, current, exc)
            return
        self._finished(session, path.name)
        log.info("recorded %s: %d frames", path, current.frames)

    def _finished(self, session: _Session, name: str) -> None:
        session.files.append(name)
        self.files = [*self.files, name][-MAX_FILES_LISTED:]

    def _fail(self, session: _Session, current: Mp4File | None, exc: Exception) -> None:
        outcome = ""
        if current is not None and not current.still_there():
            current.discard()
            outcome = f"; {current.final.name} went with it ({current.frames} frames)"
        elif current is not None:
            try:
                kept = current.salvage()
            except OSError as gone:
                outcome = f"; {current.final.name} could not be kept either ({gone.strerror or gone})"
            else:
                if kept:
                    self._finished(session, current.final.name)
                outcome = f"; {current.final.name} keeps the first {kept} of {current.frames} frames" if kept \
                    else f"; no frame of {current.final.name} reached the disk"
        message = f"recording stopped: {type(exc).__name__}: {exc}{outcome}"
        session.error = self.last_error = message
        session.accepting = False  # after the error is set: whoever sees the stop sees why
        log.error("%s", message)
        self._report(message)


def state_fields() -> dict:
    """What ``GET /v1/record`` returns, for the schema."""
    return {"available": "bool: --output-dir is set", "recording": "bool", "dir": "the output folder",
            "encoder": "the H.264 encoder (libx264)", "files": "finished files (newest last)",
            "error": "why the last recording stopped on its own (until the next start), or null",
            "recovered": "interrupted recordings found at start: file, frames and recovered_as, or problem",
            "recovering": "bool: those are still being looked at", "file": "the file being written",
            "frames": "frames encoded in this recording", "dropped": "frames skipped: the encoder was behind",
            "repeats": "a still frame encoded again after 1 s, so that it reaches the disk",
            "scaled": "frames scaled into the last file: the recording had made max_files (16) files",
            "session_files": "files of this recording (at most 16)", "seconds": "since start, while recording"}
