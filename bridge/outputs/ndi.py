"""NDI out (``--ndi NAME``): every published frame, as an NDI source of that name.

``publish`` runs on the GPU thread and only leaves the frame in a one-frame mailbox (latest
wins: a frame the sender had no time for is counted as skipped). A worker thread sends with
cyndilib (its wheels carry the NDI runtime), as RGBA at the frame's size; a size change
re-creates the source under the same name, which receivers reconnect to. A still frame is sent
again when a receiver connects after it (NDI does not keep it for late receivers).
"""

from __future__ import annotations

import logging
from fractions import Fraction

from ..core.output import ErrorReport, OutputError
from .sender import MailboxSender

log = logging.getLogger(__name__)

NOMINAL_RATE = Fraction(60, 1)  # NDI wants a rate in the frame; receivers pace by arrival
IDLE_CHECK_S = 0.1  # while no frame comes: how often to look for new receivers


def load_cyndilib():
    try:
        from cyndilib.sender import Sender
        from cyndilib.video_frame import VideoSendFrame
        from cyndilib.wrapper.ndi_structs import FourCC
    except ImportError as exc:
        raise OutputError(f"--ndi needs cyndilib (pip install cyndilib; its wheels carry the NDI runtime): {exc}") \
            from None
    return Sender, VideoSendFrame, FourCC


class NdiSender(MailboxSender):
    """An output that sends each frame as the NDI source ``name``; ``start``/``close`` around use."""

    def __init__(self, name: str):
        super().__init__("ndi", name)
        self.resent = 0  # the last frame again, for a receiver that connected after it
        self._classes = None

    def start(self, report: ErrorReport = lambda message: None) -> None:
        self._classes = load_cyndilib()  # fails at start, in one line, when cyndilib is missing
        self._report = report
        self._thread.start()
        log.info("NDI source %r", self.name)

    def health(self) -> dict:
        return {**super().health(), "resent": self.resent}

    def _work(self) -> None:
        Sender, VideoSendFrame, FourCC = self._classes
        sender, size, last, connections = None, None, None, 0
        try:
            while True:
                frame = self._mailbox.take(IDLE_CHECK_S)
                if self._mailbox.closed:
                    return
                try:
                    if frame is None:
                        # A still picture is sent once: a receiver that connects later gets it again.
                        now = sender.get_num_connections(0) if sender is not None else 0
                        if now > connections and last is not None:
                            sender.write_video(last.pixels.reshape(-1))
                            self.resent += 1
                        connections = now
                        continue
                    if (frame.width, frame.height) != size:
                        if sender is not None:
                            sender.close()
                        video = VideoSendFrame()
                        video.set_resolution(frame.width, frame.height)
                        video.set_frame_rate(NOMINAL_RATE)
                        video.set_fourcc(FourCC.RGBA)
                        sender = Sender(self.name, clock_video=False)  # the renderer sets the pace
                        sender.set_video_frame(video)
                        sender.open()
                        size, connections = (frame.width, frame.height), 0
                    sender.write_video(frame.pixels.reshape(-1))
                    last = frame
                    self._delivered()
                except Exception as exc:  # a worker boundary: report, try again with the next frame
                    self._failed(f"NDI source {self.name!r}: {type(exc).__name__}: {exc}")
                    if sender is not None:
                        sender.close()
                    sender, size, last = None, None, None
        finally:
            if sender is not None:
                sender.close()
