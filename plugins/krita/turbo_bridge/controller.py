"""The docker's logic on Krita's GUI thread: values out to the daemon, frames into the layer.

Frames are written only while the image is idle: ``setPixelData`` of a large frame and the
canvas refresh take tens of milliseconds, which would stutter a brush stroke. While a stroke
runs, the newest picture waits (older ones are dropped) and goes in when the stroke ends.
Pictures out (the canvas as input, layers as control or style images) are ``input_feed.py``'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .canvas import InputSender
from .documents import PerDocument
from .frames import Picture, place
from .input_feed import InputFeed
from .layer import DocumentError, ReferenceLayer, find_reference, is_idle, keep
from .qt import QtCore, Signal
from .bridge_client import check_channel, parse_address
from .workers import Connection, FrameWorker, ParamSender, RecordSender, Signals, merge_changes

log = logging.getLogger(__name__)


class Controller(QtCore.QObject):
    """Owns the worker threads of one docker; ``host`` is ``Krita.instance()``."""

    status_changed = Signal(str)
    connected = Signal(object)  # Connection
    recording_changed = Signal(bool)

    def __init__(self, host, retry_ms: int = 30, parent=None):
        super().__init__(parent)
        self.host = host
        self.retry_ms = retry_ms
        self.reference = ReferenceLayer()
        self.params: dict = {}
        self._edited: set[str] = set()  # fields changed here since connecting: newer than its snapshot
        self.live = True
        self.prefer_shm = True  # frames by shared memory when the daemon is on this machine
        self.connection: Connection | None = None
        self.current: Picture | None = None  # the picture the reference layer shows
        self.applied = self.deferred = self.refreshes = 0
        self.last_apply_ms = 0.0  # GUI time of the last write + canvas refresh
        self.status = "not connected"  # what the docker shows: the last note, then the frame line
        self._note = "not connected"  # the last thing that happened; stays until the next one
        self._frame_line = ""  # which frame the layer shows (kept apart so it never hides a note)
        self.url: str | None = None
        self.channel = "main"  # the daemon channel of the active document
        self.channels = PerDocument("main")  # the channel chosen for each document (found with ==)
        self._pending: Picture | None = None
        self._needs_refresh = False
        self._worker: FrameWorker | None = None
        self._sender: ParamSender | None = None
        self._recorder: RecordSender | None = None
        self.recording = False
        self._input: InputSender | None = None
        self.feed = InputFeed(host, self._set_status, retry_ms, parent=self)
        self.signals = Signals(self)
        self.signals.frame_ready.connect(self._on_frame_ready)
        self.signals.connected.connect(self._on_connected)
        self.signals.status.connect(self._set_status)
        self.signals.recording.connect(self._on_recording)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._apply)

    # -- from the docker -----------------------------------------------------------------
    def connect_to(self, address: str) -> str:
        """(Re)connect to the daemon at ``address``; returns the normalized URL (ValueError: why not)."""
        checked = parse_address(address)
        url = checked.url
        self.stop()
        self.url = url
        self._edited = set()
        self._set_status(f"connecting to {url}" + (f", channel {self.channel}" if self.channel != "main" else ""))
        self._worker = FrameWorker(checked, self.signals, prefer_shm=self.prefer_shm, channel=self.channel)
        self._worker.target = self._doc_size()
        self._sender = ParamSender(url, self.signals, channel=self.channel)
        self._input = InputSender(url, self.signals, channel=self.channel)
        self._recorder = RecordSender(url, self.signals)  # recording is channel main's
        if not self.live:
            self._worker.live.clear()
        for thread in (self._worker, self._sender, self._input, self._recorder):
            thread.start()
        self.feed.attach(self._input)
        return url

    def stop(self) -> None:
        for thread in (self._worker, self._sender, self._input, self._recorder):
            if thread is not None:
                thread.stop()
        self._worker = self._sender = self._input = self._recorder = None
        self.connection = None
        self._timer.stop()
        self.feed.detach()

    def set_params(self, changes: dict) -> None:
        self.params.update(merge_changes(self.params, changes))
        self._edited.update(changes)
        if self.live and self._sender is not None:
            self._sender.submit(changes)

    def set_live(self, live: bool) -> None:
        """Off: nothing is sent and the layer stays as it is. On: catch up with the docker."""
        self.live = live
        if self._worker is not None:
            (self._worker.live.set if live else self._worker.live.clear)()
        if live and self._sender is not None and self.params:
            self._sender.submit(dict(self.params))

    def set_recording(self, on: bool) -> None:
        """Start or stop the daemon's recording (into its --output-dir)."""
        if self._recorder is not None:
            self._recorder.submit("start" if on else "stop")

    def _on_recording(self, on: bool) -> None:
        self.recording = on
        self.recording_changed.emit(on)

    def set_opacity(self, percent: int) -> None:
        if self.reference.set_opacity(self.host.activeDocument(), percent):
            self._needs_refresh = True
            self._schedule(0)

    def keep_frame(self):
        """Add the current frame as a normal layer (one undo step); None if there is none."""
        doc = self.host.activeDocument()
        if doc is None or self.current is None:
            self._set_status("no frame to keep yet" if doc is not None else "open a document first")
            return None
        try:
            node = keep(doc, self._fitted(self.current, doc), f"turbo-bridge frame {self.current.seq}")
        except Exception as exc:  # a Qt slot: report, never let it reach Krita's event loop
            log.exception("keep as layer failed")
            self._set_status(f"could not keep the frame: {exc}")
            return None
        self._needs_refresh = True
        self._schedule(0)
        return node

    def set_channel(self, name: str) -> str:
        """The active document's channel (each document keeps its own); reconnects when it changed."""
        name = check_channel(name)  # ValueError: the docker shows the rule
        doc = self.host.activeDocument()
        if doc is not None:
            self.channels.set(doc, name, open_documents=self.host.documents())
        self._switch(name)
        return name

    def _switch(self, name: str) -> None:
        if name == self.channel:
            return
        self.channel, self.current, self._pending = name, None, None  # another stream's pictures
        if self.url is not None:
            self.connect_to(self.url)

    def document_changed(self) -> None:
        """The active view changed: frames go to its document from now on; a reference layer it
        already has catches up at once, others get one with the next frame (or the frame that
        came while no document was active, not shown anywhere yet). A document with a
        channel of its own switches the connection to that channel, any other to main."""
        doc = self.host.activeDocument()
        if doc is not None:
            self._switch(self.channels.get(doc))  # a document nobody gave a channel: main
        if self._worker is not None:
            self._worker.target = self._doc_size()
        doc = self.host.activeDocument()
        if not self.live or doc is None:
            return
        if self._pending is None and self.current is not None and find_reference(doc) is not None:
            self._pending = self.current
        if self._pending is not None:  # also a frame that came while no document was active (_apply left it)
            self._schedule(0)

    # -- from the workers and the timer --------------------------------------------------
    def _on_frame_ready(self) -> None:
        picture = self._worker.take() if self._worker is not None else None
        if picture is not None and self._input is not None:
            self._input.frame_size = (picture.frame.shape[1], picture.frame.shape[0])
        if picture is not None and self.live:
            self._pending = picture
            self._schedule(0)

    def _on_connected(self, connection: Connection) -> None:
        # The worker read the daemon's parameters while the user may already have been typing (an
        # edit on its way, or held while Live is off): those fields keep the docker's values.
        edited = {k: self.params[k] for k in self._edited if k in self.params}
        connection = replace(connection, params={**connection.params, **edited})
        self.connection = connection
        self.params = {k: connection.params[k] for k in ("prompt", "negative_prompt", "seed", "guidance", "steps",
                                                         "strength", "loras", "tiling")
                       if k in connection.params}
        self.connected.emit(connection)
        self._set_status(f"connected: {connection.model} on {connection.device}, frames by {connection.transport}")

    def _schedule(self, delay_ms: int) -> None:
        if not self._timer.isActive():
            self._timer.start(delay_ms)

    def _apply(self) -> None:
        doc = self.host.activeDocument()
        if doc is None or (self._pending is None and not self._needs_refresh):
            return
        if not is_idle(doc):  # a stroke is running: don't make it wait for us
            self.deferred += 1
            self._timer.start(self.retry_ms)
            return
        picture, self._pending = self._pending, None
        started = time.perf_counter()
        try:
            if picture is not None:
                picture = self._fitted(picture, doc)
                self.reference.show(doc, picture)
                self.current = picture
                self.applied += 1
                if self.connection is not None:
                    self._frame_line = f"frame {picture.seq} · {self.connection.transport}"
                    self._show_status()
        except DocumentError as exc:
            self._set_status(str(exc))
            return
        except Exception as exc:  # a Qt slot: report, never let it reach Krita's event loop
            log.exception("writing the frame failed")
            self._set_status(f"could not show the frame: {exc}")
            return
        self._needs_refresh = False
        doc.refreshProjection()
        self.refreshes += 1
        self.last_apply_ms = (time.perf_counter() - started) * 1000

    def _fitted(self, picture: Picture, doc) -> Picture:
        size = (doc.width(), doc.height())
        if self._worker is not None:
            self._worker.target = size
        return picture if picture.doc_size == size else place(picture.frame, picture.seq, *size)

    def _doc_size(self):
        doc = self.host.activeDocument()
        return (doc.width(), doc.height()) if doc is not None else None

    def _set_status(self, text: str) -> None:
        if text != self._note:
            log.info("%s", text)
        self._note = text
        self._show_status()

    def _show_status(self) -> None:
        frame_line = self._frame_line if self.connection is not None else ""
        text = f"{self._note}\n{frame_line}" if frame_line else self._note
        if text != self.status:
            self.status = text
            self.status_changed.emit(text)
