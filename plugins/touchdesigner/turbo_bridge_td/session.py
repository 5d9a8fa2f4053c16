"""One session per control COMP, and the functions the callback DATs call.

The session owns the frame source (reopened when Source, Shmname, Host, Ports or Token change),
the OSC controller and the cues, and writes what it knows into the ``status`` Table DAT. Every
function here runs on TouchDesigner's main thread and returns quickly.
"""

from __future__ import annotations

import threading
import time

from ._client import client
from .control import FIELD_PARS, INPUT_PARS, LORA_PARS, OUTPUT_PARS, STYLE_PARS, Controller, channel, ports
from .cues import CueError, Cues
from .inputs import CONTROL_SLOTS, ControlSender, InputSender, StyleSender
from .sources import HttpSource, ShmSource

RETRY_S = 1.0  # between attempts to attach to a segment that is not there (yet)
STALE_S = 1.0  # feedback without the frame in our segment for this long: the daemon restarted
_SESSIONS: dict[str, Session] = {}
CONNECTION_PARS = {"Source", "Shmname", "Host", "Ports1", "Ports2", "Ports3", "Token", "Channel"}


class Session:
    def __init__(self, comp):
        self.comp = comp
        self.op_id = comp.id
        self.controller = Controller(comp)
        self.cues = Cues(comp, self.controller)
        self.input = InputSender(comp)
        self.control_senders = [ControlSender(comp, slot) for slot in CONTROL_SLOTS]
        self.style_sender = StyleSender(comp)
        self.source = None
        self._source_key: tuple | None = None
        self._next_attach = 0.0
        self._creator: threading.Thread | None = None  # creates this COMP's channel on the daemon
        self._creator_error: str | None = None
        self.latest = None  # the newest frame taken from the source (rows bottom-first)
        self.tops: dict[str, int] = {}  # Script TOP path -> seq of the frame it shows
        self.copies = 0
        self._feedback_seq, self._feedback_at = 0, 0.0
        self._status: dict[str, str] = {}

    # -- status ----------------------------------------------------------------------------
    def status(self, key: str, value) -> None:
        """Write one row of the status table, only when it changed (tables cost a cook).
        Never called from onCook: a cook that writes a table would start another cook."""
        value = str(value)
        if self._status.get(key) == value:
            return
        table = self.comp.op("status")
        if table is None:  # not built yet, or deleted by hand: nothing to show it in
            return
        self._status[key] = value
        if table[key, 0] is None:
            table.appendRow([key, value])
        else:
            table[key, 1] = value

    # -- frames ----------------------------------------------------------------------------
    def http_url(self) -> str:
        return f"http://{str(self.comp.par.Host.eval()).strip()}:{ports(self.comp)[0]}"

    def _wanted_source(self) -> tuple:
        par = self.comp.par
        mode = str(par.Source.eval())
        if mode == "http":
            return ("http", self.http_url(), str(par.Token.eval()), channel(self.comp))
        return ("shm", client.segment_name(str(par.Shmname.eval()).strip(), channel(self.comp)))

    def frame_source(self, now: float):
        """The current source, (re)opened when its settings changed; None while unavailable."""
        key = self._wanted_source()
        if key != self._source_key:
            self.close_source()
            self._source_key, self._next_attach = key, 0.0
            self.latest, self.tops = None, dict.fromkeys(self.tops, 0)  # another daemon's seqs
        if self.source is None and now >= self._next_attach:
            try:
                self.source = HttpSource(key[1], token=key[2], channel=key[3]) if key[0] == "http" \
                    else ShmSource(key[1])
            except (OSError, ValueError) as exc:  # no segment yet, or not ours
                self._next_attach = now + RETRY_S
                self.status("source", f"waiting for shared memory {key[1]!r}: {exc}")
                self._create_channel()
                return None
        if self.source is not None:
            self.status("source", self.source.error or self.source.describe())
        return self.source

    def _create_channel(self) -> None:
        """A channel other than main exists once the daemon got a PATCH for it: send one, off the cook."""
        name = channel(self.comp)
        if self._creator_error:
            self.status("channel", f"could not create channel {name!r}: {self._creator_error}")
        if name == "main" or (self._creator is not None and self._creator.is_alive()):
            return
        url, token = self.http_url(), str(self.comp.par.Token.eval()) or None

        def create() -> None:
            try:
                client.HttpClient(url, timeout=3.0, token=token, channel=name).patch({})
            except (client.BridgeHTTPError, OSError) as exc:  # no daemon yet, or past --max-channels
                self._creator_error = str(exc)

        self._creator = threading.Thread(target=create, name="turbo-bridge-channel", daemon=True)
        self._creator.start()

    def close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        for sender in (self.input, *self.control_senders, self.style_sender):
            sender.reattach()  # a new source may be a restarted daemon

    def _pull(self, now: float):
        """Move a new frame, if any, from the source to ``latest``; returns ``latest``."""
        source = self.frame_source(now)
        if source is not None and source.changed():
            frame = source.take()
            if frame is not None:
                self.latest = frame
        return self.latest

    def frame_start(self, now: float) -> None:
        """Every frame: renew the feedback subscription now and then, and cook the Script TOPs
        that have not shown the newest frame yet (none, most frames)."""
        self.controller.maybe_resubscribe(now)
        if self._stale_segment(now):
            self.close_source()  # reattached just below
        latest = self._pull(now)
        for sender in (self.input, *self.control_senders, self.style_sender):
            sender.frame_start(self.http_url(), str(self.comp.par.Token.eval()), self.status)
        if latest is None:
            return
        for path, seq in list(self.tops.items()):
            if seq != latest.seq:
                top = self.comp.op(path)
                if top is None:
                    del self.tops[path]  # deleted from the network
                else:
                    top.cook(force=True)
        if latest.seq in self.tops.values():
            self.status("copied seq", latest.seq)  # here, not in onCook (see status)

    def _stale_segment(self, now: float) -> bool:
        """A restarted daemon made a new segment: the feedback names a frame our mapping never
        shows, a while after the last feedback."""
        return (isinstance(self.source, ShmSource) and self._feedback_seq > 0
                and now - self._feedback_at > STALE_S
                and (self.latest is None or self.latest.seq != self._feedback_seq)
                and not self.source.changed())

    def cook(self, script_op) -> None:
        """A Script TOP's onCook: copy the newest frame taken, on every cook.

        Reads no table, writes none and does not touch the source (frame_start takes frames),
        so nothing it does makes TouchDesigner cook the TOP again."""
        self.tops.setdefault(script_op.path, 0)
        latest = self.latest
        if latest is None:
            return
        script_op.copyNumpyArray(latest.pixels)  # H x W x 4 uint8, rows bottom-first
        self.tops[script_op.path] = latest.seq
        self.copies += 1

    # -- feedback and control --------------------------------------------------------------
    def on_feedback(self, address: str, args: list) -> None:
        prefix = f"/bridge/ch/{channel(self.comp)}/"
        if address.startswith(prefix):  # this COMP's channel's feedback
            address = "/bridge/" + address[len(prefix):]
        if address == "/bridge/frame" and len(args) >= 3:
            self._feedback_seq, self._feedback_at = int(args[0]), time.monotonic()
            self.status("frame seq", args[0])
            self.status("params version", args[1])
            self.status("render ms", f"{float(args[2]):.1f}")
        elif address == "/bridge/error" and args:
            self.status("last error", args[0])
        elif address in ("/cue/next", "/cue/prev"):
            self.run_cue(lambda: self.cues.step(1 if address.endswith("next") else -1))
        elif address == "/cue/go" and args:
            target = args[0]
            self.run_cue(lambda: self.cues.go(self.cues.find(target) if isinstance(target, str)
                                              else int(target)))

    def report(self, action) -> None:
        """Run a send; a parameter that is not a valid value (Seed text) shows as last error."""
        try:
            action()
        except ValueError as exc:
            self.status("last error", exc)

    def run_cue(self, action) -> None:
        try:
            action()
        except CueError as exc:
            self.status("last error", exc)
            return
        self.status("cue", f"{self.cues.current} {self.cues.name(self.cues.current)}".strip())

    def on_value_change(self, par) -> None:
        name = par.name
        if name in FIELD_PARS or name in INPUT_PARS or name in STYLE_PARS or name in OUTPUT_PARS:
            self.report(lambda: self.controller.on_field_par(par))
        elif name in LORA_PARS:
            self.report(lambda: self.controller.on_lora_par(par))
        elif name == "Record":
            self.report(lambda: self.controller.record(bool(par.eval())))
        elif name == "Live" and par.eval():
            self.report(self.controller.send_all)  # catch the daemon up with what was edited offline
        elif name == "Cue" and int(par.eval()) != self.cues.applied:
            self.run_cue(lambda: self.cues.go(int(par.eval())))  # typed or bound by hand
        elif name in CONNECTION_PARS:
            self.controller.subscribe(time.monotonic())  # new host or ports: subscribe there

    def on_pulse(self, par) -> None:
        name = par.name
        if name == "Send":
            self.report(self.controller.send_all)
        elif name == "Reconnect":
            self.close_source()
            self._source_key = None  # reopened next frame; every TOP copies its next frame
            self.controller.subscribe(time.monotonic())
        elif name in ("Cuenext", "Cueprev"):
            self.run_cue(lambda: self.cues.step(1 if name == "Cuenext" else -1))
        elif name == "Cuego":
            self.run_cue(lambda: self.cues.go(self.cues.current))

    def close(self) -> None:
        self.close_source()
        for sender in (self.input, *self.control_senders, self.style_sender):
            sender.stop(self.http_url(), str(self.comp.par.Token.eval()))


def session_for(comp) -> Session:
    """The session of a control COMP (a new one if the COMP was re-created under the same path)."""
    session = _SESSIONS.get(comp.path)
    if session is None or session.op_id != comp.id:
        if session is not None:
            session.close()
        session = _SESSIONS[comp.path] = Session(comp)
    return session


def close_all() -> None:
    for session in _SESSIONS.values():
        session.close()
    _SESSIONS.clear()


# -- entry points for the callback DATs (see network.py) ----------------------------------
def on_start(comp) -> None:
    session = session_for(comp)
    frame = comp.op("frame")
    if frame is not None:
        session.tops.setdefault(frame.path, 0)  # polled from the first frame on
    session.controller.subscribe(time.monotonic())


def on_frame_start(comp) -> None:
    session_for(comp).frame_start(time.monotonic())


def on_value_change(par) -> None:
    session_for(par.owner).on_value_change(par)


def on_pulse(par) -> None:
    session_for(par.owner).on_pulse(par)


def on_receive_osc(dat, address: str, args) -> None:
    session_for(dat.parent()).on_feedback(address, list(args))


def on_exit() -> None:
    close_all()
