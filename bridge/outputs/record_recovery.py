"""Recordings a crash left behind: ``record-*.mp4.partial`` in ``--output-dir``, found at start.

A fragmented file (``bridge.outputs.mp4``) plays up to its last complete fragment: it is cut
there and renamed to ``.mp4`` (a free name), and the log and ``/v1/health`` say how many frames it
kept. One that holds no frame (killed before its first) is removed. Anything else (an unfragmented
file of an older version, a foreign file) is left as it is and reported. A file another recorder
is writing (its lock is held: a second daemon on the same folder) is not touched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .mp4 import complete_length, count_frames, lock

log = logging.getLogger(__name__)

PATTERN = "record-*.mp4.partial"
MAX_LISTED = 16


@dataclass(frozen=True)
class Outcome:
    file: str  # the partial's name
    frames: int = 0  # kept in the recovered file
    recovered_as: str | None = None  # the finished file's name
    problem: str | None = None  # why it was left as it is

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def recover_all(folder: Path) -> list[Outcome]:
    """Finish or report every interrupted recording in ``folder``; never raises for one file."""
    outcomes = []
    try:
        partials = sorted(folder.glob(PATTERN))
    except OSError as exc:
        log.warning("could not look for interrupted recordings in %s: %s", folder, exc)
        return []
    for partial in partials:
        try:
            outcome = recover(partial)
        except OSError as exc:
            outcome = Outcome(partial.name, problem=f"could not be read or renamed: {exc.strerror or exc}")
        if outcome is None:
            continue
        if outcome.recovered_as:
            log.warning("interrupted recording %s finished as %s (%d frames)", partial.name, outcome.recovered_as,
                        outcome.frames)
        elif outcome.problem:
            log.warning("interrupted recording %s left as it is: %s", partial.name, outcome.problem)
        outcomes.append(outcome)
    return outcomes


def recover(partial: Path) -> Outcome | None:
    """One partial file: finished, removed (no frame in it), reported, or None while a recorder writes it."""
    fd = os.open(partial, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not lock(fd):
            log.info("%s is being written by another recorder; left alone", partial.name)
            return None
        length = complete_length(partial)
        if length is None:
            return Outcome(partial.name, problem="not a fragmented MP4 (an unfinished file of an older "
                                                 "version, or not a recording): it cannot be played; delete it")
        if length < os.fstat(fd).st_size:
            os.ftruncate(fd, length)  # the fragment the crash cut short
        try:
            frames = count_frames(partial)
        except Exception as exc:  # FFmpeg's own error types
            return Outcome(partial.name, problem=f"unreadable after its last complete fragment: {exc}")
        if frames == 0:
            os.unlink(partial)
            log.info("interrupted recording %s held no frame; removed", partial.name)
            return Outcome(partial.name, problem="held no frame; removed")
        final = free_name(partial.with_name(partial.name.removesuffix(".partial")))
        os.rename(partial, final)  # while still locked: no other start takes it in between
        return Outcome(partial.name, frames, final.name)
    finally:
        os.close(fd)


def free_name(wanted: Path) -> Path:
    if not wanted.exists():
        return wanted
    stem = wanted.name.removesuffix(".mp4")
    for n in range(1, 1000):
        candidate = wanted.with_name(f"{stem}-recovered{f'-{n}' if n > 1 else ''}.mp4")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {wanted.name}")
