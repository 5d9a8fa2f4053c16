"""One H.264 recording file, written as fragmented MP4 so that what is on disk always plays.

The file starts with an empty ``moov`` and each frame goes out as its own fragment (``moof`` +
``mdat``), flushed to the file at once: a crash or SIGKILL leaves a file that players and ffprobe
read up to its last complete fragment. MP4 needs a frame's duration (the time until the next
frame) before it can write it, so the newest frame goes out when the next one comes; the recorder
repeats a still frame after a second to push it out. A full disk keeps the complete fragments
(``salvage``). While written the file is ``NAME.mp4.partial``, renamed to ``NAME.mp4`` when
finished or salvaged; ``bridge.outputs.record_recovery`` finishes one that a crash left.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be renamed there, which keeps recovery off it
    fcntl = None

TIME_BASE = Fraction(1, 90_000)  # the MPEG clock: 11 us steps, plenty for frame times
ENCODERS = ("libx264", "h264")  # the wheel's libx264 first; "h264" is whatever FFmpeg maps it to
# Every frame its own fragment, written as it is muxed; moof offsets relative to themselves (players prefer it).
CONTAINER_OPTIONS = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}
# Boxes of a fragmented MP4 at the top level; a moof counts only with the mdat after it.
FRAGMENTED_BOXES = {b"ftyp", b"moov", b"moof", b"mdat", b"free", b"skip", b"styp", b"sidx", b"mfra"}


@dataclass(frozen=True)
class RecordOptions:
    queue_frames: int = 8  # frames waiting for the encoder before new ones are dropped
    preset: str = "veryfast"
    crf: int = 18
    max_files: int = 16  # files a recording makes for size changes; past it, frames are scaled into the last
    repeat_after_s: float | None = 1.0  # a still frame is encoded again after this long, so it reaches the disk


def pick_encoder() -> str | None:
    """The first H.264 encoder this PyAV build has, or None."""
    import av

    for name in ENCODERS:
        with contextlib.suppress(Exception):
            av.codec.Codec(name, "w")
            return name
    return None


def lock(fd: int) -> bool:
    """Take the advisory lock that says "a recorder writes this file"; False if another holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Mp4File:
    """One MP4 being written: opened on its first frame, then finished, salvaged or discarded."""

    def __init__(self, partial: Path, final: Path, width: int, height: int, encoder: str, options: RecordOptions):
        import av

        self.partial, self.final, self.size = partial, final, (width, height)
        self.frames = 0  # encoded frames, repeats included
        self._first_ns: int | None = None
        self._last_pts = -1
        self._last_pixels = None
        # Our own name in the operator's folder: created here (O_EXCL, no link followed) before FFmpeg
        # opens it, and locked while written so that recovery at another start leaves it alone.
        self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        lock(self._fd)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        try:
            self._container = av.open(str(partial), mode="w", format="mp4", options=CONTAINER_OPTIONS)
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
        """Encode one frame at its publication time; a frame of another size is scaled to the file's."""
        import av

        if self._first_ns is None:
            self._first_ns = published_ns
        pts = max((published_ns - self._first_ns) * TIME_BASE.denominator // 1_000_000_000, self._last_pts + 1)
        width, height = self.size
        frame = av.VideoFrame.from_ndarray(pixels, format="rgba").reformat(
            width=width, height=height, format="yuv420p", dst_colorspace="ITU709")
        frame.pts, frame.time_base = pts, TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pixels = pixels
        self.frames += 1

    def repeat(self, at_ns: int) -> None:
        """The last frame again at ``at_ns``: the frame before it gets its duration and goes to disk."""
        if self._last_pixels is not None:
            self.write(self._last_pixels, at_ns)

    def still_there(self) -> bool:
        """Whether the name still holds this file (not removed, not replaced, its folder not gone)."""
        try:
            info = os.stat(self.partial)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity

    def finish(self) -> Path:
        """Flush the encoder, write the trailer, rename to the final name; raises on failure."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        os.replace(self.partial, self.final)
        self._unlock()
        return self.final

    def salvage(self) -> int:
        """After a failed write (a full disk): keep the complete fragments under the final name.

        Returns the frames kept; a file with none is removed. Raises ``OSError`` if the file is gone.
        """
        with contextlib.suppress(Exception):
            self._container.close()  # its trailer may not fit: what matters is on disk already
        try:
            frames = keep_complete(self.partial)
            if frames:
                os.replace(self.partial, self.final)
            else:
                os.unlink(self.partial)
            return frames
        finally:
            self._unlock()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)
        self._unlock()

    def _unlock(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def complete_length(path: Path) -> int | None:
    """The length of ``path`` made of whole fragments (a cut ``moof``/``mdat`` at the end left out);
    None if it is not a fragmented MP4 (a foreign file, or an old unfragmented recording)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = good = 0
        seen_moov = False
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:
                length = struct.unpack(">Q", head[8:])[0]
            if kind not in FRAGMENTED_BOXES or (kind == b"mdat" and not seen_moov) or (pos == 0 and kind != b"ftyp"):
                return None
            if length < 8 or pos + length > size:
                break  # cut short by the crash
            seen_moov |= kind == b"moov"
            pos += length
            if kind != b"moof":
                good = pos
        return good if seen_moov else None


def count_frames(path: Path) -> int:
    """Video frames FFmpeg reads from ``path``; raises ``av.error.FFmpegError`` if it reads none of it."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def keep_complete(path: Path) -> int:
    """Cut a fragmented MP4 after its last complete fragment; the frames left in it (0 if it is not one)."""
    length = complete_length(path)
    if length is None:
        return 0
    if length < path.stat().st_size:
        os.truncate(path, length)
    try:
        return count_frames(path)
    except Exception:  # FFmpeg's own error types: nothing readable in it
        return 0
