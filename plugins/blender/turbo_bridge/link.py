"""The add-on's network side: worker threads that talk to the daemon; no bpy here.

Blender's main thread never waits on the network. It hands changes to ``Link.submit`` (merged,
latest-wins) and collects what the workers found with ``Link.events()`` and
``Link.take_frame()`` from a ``bpy.app.timers`` function.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import urllib.error
from collections.abc import Mapping
from typing import Any

from ._bridge.client import BridgeHTTPError, DaemonAddress, FrameInfo, HttpClient, segment_name
from .events import Accepted, Connected, ControlTaken, Down, InputTaken, LorasListed, Recorded, Rejected

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 4.0
HEARTBEAT_S = 2.0  # how often an idle, connected link checks that the daemon is still there
FRAME_POLL_S = 0.5  # long-poll window for frames over HTTP
REQUEST_TIMEOUT_S = 3.0
CLEAR = b""  # the input slot's "drop the daemon's input" (an empty image is never sent)


def describe(exc: BaseException) -> str:
    """A short reason a person can act on."""
    if isinstance(exc, BridgeHTTPError):
        return f"not a turbo-bridge daemon? ({exc})"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `turbo-bridge serve` running?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer (timed out)"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return str(exc) or type(exc).__name__


class Link:
    """Two daemon threads: control (health, changes, retries) and frames over HTTP (on request)."""

    def __init__(self, address: DaemonAddress, name: str = "turbo-bridge", channel: str = "main"):
        self.address = address
        self.channel = channel
        self._client = HttpClient(address.url, timeout=REQUEST_TIMEOUT_S, channel=channel)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._input: bytes | None = None  # a PNG for PUT /v1/input; CLEAR: DELETE it
        self._record: str | None = None  # "start" or "stop" for POST /v1/record
        self._controls: dict[str, bytes] = {}  # NAME -> a PNG for PUT /v1/control/NAME, newest wins
        self._connected = threading.Event()
        self._uptime_s = 0.0
        self._generation = 0  # bumped on every (re)connection
        self._frame_lock = threading.Lock()
        self._frame: FrameInfo | None = None
        self._name = name
        self._threads = [threading.Thread(target=self._control, name=f"{name}-control", daemon=True)]
        self._frames_thread: threading.Thread | None = None

    # -- main-thread API (never blocks on the network) --
    def start(self) -> None:
        self._threads[0].start()

    def submit(self, changes: Mapping[str, Any]) -> None:
        """Queue a partial change; newer values of a field replace older unsent ones."""
        with self._wake:
            if "loras" in changes and "loras" in self._pending:  # per LoRA name, like the daemon
                changes = {**changes, "loras": {**self._pending["loras"], **changes["loras"]}}
            self._pending.update(changes)
            self._wake.notify()

    def submit_input(self, png: bytes | None) -> None:
        """Queue an input image (PNG bytes), or None to drop the daemon's input; newest wins."""
        with self._wake:
            self._input = CLEAR if png is None else png
            self._wake.notify()

    def submit_control(self, name: str, png: bytes) -> None:
        """Queue a control image (PNG bytes) for ControlNet ``name``; newest wins per name."""
        with self._wake:
            self._controls[name] = png
            self._wake.notify()

    def submit_record(self, action: str) -> None:
        """Queue a recording start or stop (``POST /v1/record``); answered by a ``Recorded`` event."""
        with self._wake:
            self._record = action
            self._wake.notify()

    def fetch_frames_over_http(self) -> None:
        """Start pulling frames with HTTP long-polls (when shared memory is not available)."""
        if self._frames_thread is None:
            self._frames_thread = threading.Thread(target=self._frames, name=f"{self._name}-frames", daemon=True)
            self._threads.append(self._frames_thread)
            self._frames_thread.start()

    def events(self) -> list:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def take_frame(self) -> FrameInfo | None:
        """The newest frame fetched over HTTP (rows bottom-first), once; None if none is new."""
        with self._frame_lock:
            frame, self._frame = self._frame, None
        return frame

    def stop(self, wait: float = 0.25) -> bool:
        """Signal the threads and wait up to ``wait`` s; True when all have ended.

        Idle threads end at once. One in the middle of a request (a long-poll, or a daemon that
        does not answer) ends when it returns, at most REQUEST_TIMEOUT_S later, without touching
        anything outside this Link: the UI does not wait for it."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.info("turbo-bridge: %s will end after its current request", ", ".join(alive))
        return not alive

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # -- worker threads --
    def _control(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            changes: dict[str, Any] = {}
            image = record = None
            controls: dict[str, bytes] = {}
            try:
                if not self._connected.is_set():
                    self._hello()
                    backoff = BACKOFF_FIRST_S
                with self._wake:
                    if not self._pending and self._input is None and self._record is None and not self._controls \
                            and not self._stop.is_set():
                        self._wake.wait(HEARTBEAT_S)
                    changes, self._pending = self._pending, {}
                    image, self._input = self._input, None
                    record, self._record = self._record, None
                    controls, self._controls = self._controls, {}
                if self._stop.is_set():
                    return
                if changes:
                    self._send(changes)
                if image is not None:
                    self._send_input(image)
                sent_controls = bool(controls)
                while controls:  # one at a time: a failure keeps the ones not sent yet
                    name, png = next(iter(controls.items()))
                    self._send_control(name, png)
                    del controls[name]
                if record is not None:
                    state = self._client.record(record)
                    self._events.put(Recorded(bool(state["recording"]), tuple(state["files"]), state["error"]))
                if not changes and image is None and record is None and not sent_controls:
                    self._heartbeat()
            except BridgeHTTPError as exc:
                if self._connected.is_set():
                    self._events.put(Rejected(exc.field, exc.message))
                    continue
                error: BaseException = exc  # /v1/health refused: not a turbo-bridge daemon
            except (OSError, ValueError) as exc:  # URLError, refused, timeouts, a non-JSON answer
                error = exc
            else:
                continue
            if changes or image is not None or controls:  # not delivered: keep them, under anything newer
                with self._wake:
                    self._pending = {**changes, **self._pending}
                    self._input = self._input if self._input is not None else image
                    self._controls = {**controls, **self._controls}
            self._connected.clear()
            self._events.put(Down(describe(error), backoff))
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _hello(self, health: dict | None = None) -> None:
        """(Re)connected: send the queued settings first, then report Connected, so the main
        thread never takes the previous state's frame for ours (Keep would keep it)."""
        health = self._client.health() if health is None else health
        if self.channel != "main":
            self._client.patch({})  # creates the channel (from the daemon's initial parameters) if new
        self._uptime_s = float(health.get("uptime_s", 0.0))
        self._generation += 1  # tells the frames thread to count frames from the start again
        with self._wake:
            changes, self._pending = self._pending, {}
        outcome, version = None, 0
        try:
            if changes:
                answer = self._client.patch(changes)
                version = int(answer.get("version", 0))
                outcome = Accepted(version, tuple(answer.get("warnings", ())))
        except BridgeHTTPError as exc:  # refused: the daemon kept its state, we are connected anyway
            outcome = Rejected(exc.field, exc.message)
        except BaseException:
            with self._wake:  # not delivered: keep them, under anything newer
                self._pending = {**changes, **self._pending}
            raise
        self._connected.set()
        self._events.put(Connected(str(health.get("model", "?")), str(health.get("device", "?")),
                                   segment_name(health["shm_name"], self.channel) if health.get("shm_name")
                                   else None, version))
        if outcome is not None:
            self._events.put(outcome)
        listing = self._client.loras()
        self._events.put(LorasListed(tuple(f["name"] for f in listing.get("loras", ()) if "error" not in f),
                                     dict(listing.get("active", {}))))

    def _heartbeat(self) -> None:
        """Notice a daemon that went away, or one restarted between two beats (a new segment)."""
        health = self._client.health()
        if float(health.get("uptime_s", 0.0)) < self._uptime_s:
            self._hello(health)
        else:
            self._uptime_s = float(health.get("uptime_s", 0.0))

    def _send(self, changes: dict[str, Any]) -> None:
        answer = self._client.patch(changes)
        self._events.put(Accepted(int(answer.get("version", 0)), tuple(answer.get("warnings", ()))))

    def _send_input(self, image: bytes) -> None:
        if not image:  # CLEAR
            self._client.clear_input()
            self._events.put(InputTaken(cleared=True))
            return
        answer = self._client.put_input(image)
        self._events.put(InputTaken(int(answer["width"]), int(answer["height"]), bool(answer["changed"])))

    def _send_control(self, name: str, png: bytes) -> None:
        answer = self._client.put_input(png, control=name)
        self._events.put(ControlTaken(name, int(answer["width"]), int(answer["height"]), bool(answer["changed"])))

    def _frames(self) -> None:
        after, generation = 0, self._generation
        while not self._stop.is_set():
            if not self._connected.wait(FRAME_POLL_S):
                continue
            if generation != self._generation:
                after, generation = 0, self._generation  # a restarted daemon counts frames from 1
            try:
                frame = self._client.frame(after=after, timeout=FRAME_POLL_S)
            except (OSError, ValueError, BridgeHTTPError) as exc:
                log.debug("frame poll failed: %s", describe(exc))
                self._stop.wait(BACKOFF_FIRST_S)  # the control thread reports and retries
                continue
            if frame is None:
                continue
            after = frame.seq
            # Blender's images start at the bottom row; flip here, off the main thread.
            flipped = FrameInfo(frame.seq, frame.version, frame.seed, frame.width, frame.height,
                                frame.render_ms, frame.published_ns, frame.pixels[::-1].copy())
            with self._frame_lock:
                self._frame = flipped  # latest wins: an unapplied older frame is dropped
