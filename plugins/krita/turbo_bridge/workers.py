"""The docker's worker threads: frames in (from a source of ``sources.py``), parameter changes
and recording presses out. No Krita calls here.

Both talk to the daemon with blocking I/O, so neither may run on Krita's GUI thread. Results go
back through Qt signals (queued onto the GUI thread) and a one-slot mailbox: however slow the
GUI, only the newest picture waits, and a burst of keystrokes becomes one request per round trip.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from dataclasses import dataclass

from .bridge_client import BridgeHTTPError, DaemonAddress, HttpClient, segment_name
from .frames import Picture, place
from .qt import QtCore, Signal
from .sources import HttpSource, ShmSource


def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "nothing answers there (start it: turbo-bridge serve)"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Connection:
    url: str
    model: str
    device: str
    transport: str  # "shared memory 'NAME'" or "HTTP"
    params: dict  # the daemon's parameters when we connected (the docker shows them)
    loras: tuple = ()  # the LoRA files the daemon lists (GET /v1/loras), by name


class Signals(QtCore.QObject):
    """Emitted from worker threads; Qt delivers them on the thread the receiver lives in."""

    frame_ready = Signal()
    connected = Signal(object)  # Connection
    status = Signal(str)
    recording = Signal(bool)  # the daemon's recorder after a start or stop


class FrameWorker(threading.Thread):
    """Connects, then fetches frames and fits them to ``target`` (the document's size)."""

    def __init__(self, address: DaemonAddress, signals: Signals, *, prefer_shm: bool = True, poll_s: float = 0.004,
                 wait_s: float = 0.5, retry_s: float = 1.0, channel: str = "main"):
        super().__init__(name="turbo-bridge frames", daemon=True)
        self.url, self.signals, self.prefer_shm, self.channel = address.url, signals, prefer_shm, channel
        # Only this machine's segment can be the daemon's: another machine's daemon reports the same default name.
        self.is_local = address.is_local
        self.poll_s, self.wait_s, self.retry_s = poll_s, wait_s, retry_s
        self.target: tuple[int, int] | None = None  # set by the GUI thread
        self.live = threading.Event()
        self.live.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._latest: Picture | None = None

    def take(self) -> Picture | None:
        """The newest picture not yet taken (GUI thread)."""
        with self._lock:
            picture, self._latest = self._latest, None
        return picture

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to end and wait a little (a long-poll ends within ``wait_s`` on loopback);
        a slower one finishes on its own and posts nothing more."""
        self._stopping.set()
        self.live.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._serve()
            except Exception as exc:  # loop boundary: say why, then try again
                if not self._stopping.is_set():
                    self.signals.status.emit(f"not connected to {self.url}: {describe(exc)}")
                self._stopping.wait(self.retry_s)

    def _open(self, client: HttpClient):
        health = client.health()
        if self.channel != "main":
            client.patch({})  # creates this document's channel (from the daemon's initial parameters) if new
        name = segment_name(health["shm_name"], self.channel) if health.get("shm_name") else ""
        source, transport = None, "HTTP"
        if self.prefer_shm and name and self.is_local:
            try:
                source, transport = ShmSource(name, self.poll_s), f"shared memory {name!r}"
            except (OSError, ValueError):
                source = None  # e.g. a daemon in a container: its segment is not ours to see
        try:
            listing = client.loras()
            loras = tuple(f["name"] for f in listing.get("loras", ()) if "error" not in f)
        except BridgeHTTPError:  # a daemon without LoRAs (older): no sliders
            loras = ()
        connection = Connection(self.url, health.get("model", "?"), health.get("device", "?"), transport,
                                client.params(), loras)
        return source or HttpSource(client), connection

    def _serve(self) -> None:
        client = HttpClient(self.url, timeout=3.0, channel=self.channel)
        source, connection = self._open(client)
        try:
            self.signals.connected.emit(connection)
            quiet_since = time.monotonic()
            while not self._stopping.is_set():
                if not self.live.is_set():
                    self.live.wait(0.2)
                    source.rewind()  # back live: start from the newest frame
                    continue
                got = source.next(self.wait_s)
                if got is None:
                    if time.monotonic() - quiet_since > 2.0:  # silence: is the daemon still ours?
                        source.check(client.health())
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                pixels, seq = got
                width, height = self.target or (pixels.shape[1], pixels.shape[0])
                self._post(place(pixels, seq, width, height))
        finally:
            source.close()

    def _post(self, picture: Picture) -> None:
        if self._stopping.is_set():
            return  # a picture from the old connection, after a reconnect
        with self._lock:
            was_empty, self._latest = self._latest is None, picture
        if was_empty:
            self.signals.frame_ready.emit()


class Outbox(threading.Thread):
    """A sender thread, latest-wins: it sleeps until there is work, takes all of it at once
    (``_take``, under the lock) and delivers it (``_deliver``, outside it)."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            with self._lock:
                work = self._take()
                self._wake.clear()
            if work:
                self._deliver(work)

    def _take(self):
        raise NotImplementedError

    def _deliver(self, work) -> None:
        raise NotImplementedError


class ParamSender(Outbox):
    """PATCHes parameter changes, latest-wins: changes made during a request merge into one."""

    def __init__(self, url: str, signals: Signals, retry_s: float = 1.0, channel: str = "main"):
        super().__init__("turbo-bridge params")
        self.client = HttpClient(url, timeout=3.0, channel=channel)
        self.signals, self.retry_s = signals, retry_s
        self.sent = 0  # requests answered
        self._pending: dict = {}

    def submit(self, changes: dict) -> None:
        with self._lock:
            self._pending.update(merge_changes(self._pending, changes))
        self._wake.set()

    def _take(self) -> dict:
        changes, self._pending = self._pending, {}
        return changes

    def _deliver(self, changes: dict) -> None:
        self._send(changes)

    def _send(self, changes: dict) -> None:
        try:
            answer = self.client.patch(changes)
            self.sent += 1
            for warning in answer.get("warnings", []):
                self.signals.status.emit(f"warning: {warning}")
        except BridgeHTTPError as exc:  # refused: resending would be refused again
            self.signals.status.emit(f"refused {exc.field or 'change'}: {exc.message}")
        except OSError as exc:  # daemon away: keep the changes (newer ones win) and retry
            self.signals.status.emit(f"not sent: {describe(exc)}")
            with self._lock:
                self._pending = {**changes, **merge_changes(changes, self._pending)}
            if not self._stopping.wait(self.retry_s):
                self._wake.set()


def merge_changes(older: dict, newer: dict) -> dict:
    """``newer``, with its ``loras`` merged per name over ``older``'s (the daemon merges them so too)."""
    if isinstance(older.get("loras"), dict) and isinstance(newer.get("loras"), dict):
        return {**newer, "loras": {**older["loras"], **newer["loras"]}}
    return newer


class RecordSender(Outbox):
    """Starts or stops the daemon's recording (``POST /v1/record``); the newest press wins."""

    def __init__(self, url: str, signals: Signals):
        super().__init__("turbo-bridge record")
        self.client = HttpClient(url, timeout=10.0)  # a stop answers once the file is finished
        self.signals = signals
        self._action: str | None = None

    def submit(self, action: str) -> None:
        with self._lock:
            self._action = action
        self._wake.set()

    def _take(self) -> str | None:
        action, self._action = self._action, None
        return action

    def _deliver(self, action: str) -> None:
        refused = False
        try:
            state = self.client.record(action)
        except BridgeHTTPError as exc:  # no --output-dir, already recording, not recording
            self.signals.status.emit(f"recording: {exc.message}")
            state, refused = None, True
            try:
                state = self.client.record()
            except (OSError, BridgeHTTPError):
                pass
        except OSError as exc:
            self.signals.status.emit(f"recording: not sent: {describe(exc)}")
            return
        if state is not None:
            self.signals.recording.emit(bool(state["recording"]))
            if not refused and not state["recording"] and action == "stop":  # the refusal stays shown
                self.signals.status.emit(state["error"] or (f"recorded {state['files'][-1]}" if state["files"]
                                                            else "recording stopped"))
