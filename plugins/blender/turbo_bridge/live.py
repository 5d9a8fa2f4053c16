"""The live session on Blender's main thread: one link to a daemon, frames into the live image.

``drain`` is the ``bpy.app.timers`` function: it applies what the worker threads reported and
copies a new frame (from shared memory, or fetched over HTTP) into the live image. It never
waits on the network; with nothing new it costs one 8-byte read of the segment's seq.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bpy

from . import datablocks, depth, renders
from ._bridge.client import DaemonAddress, FrameInfo, ShmReader
from .events import Accepted, Connected, ControlTaken, Down, InputTaken, LorasListed, Recorded, Rejected
from .link import Link

log = logging.getLogger(__name__)

TICK_S = 1 / 60  # how often the timer looks for a new frame


@dataclass(frozen=True)
class Applied:
    """The last frame written into the live image, with the main-thread cost of writing it."""

    seq: int
    version: int  # the daemon's params version the frame was rendered from
    seed: int
    width: int
    height: int
    render_ms: float
    read_ms: float
    write_ms: float  # convert to float RGBA + foreach_set + update

    @property
    def main_thread_ms(self) -> float:
        return self.read_ms + self.write_ms


class Session:
    """A connection to one daemon; ``start`` and ``stop`` bracket its threads and its timer."""

    def __init__(self, address: DaemonAddress, use_shared_memory: bool = True, channel: str = "main"):
        self.address = address
        self.channel = channel
        self.use_shared_memory = use_shared_memory and address.is_local
        self.link = Link(address, channel=channel)
        self.reader: ShmReader | None = None
        self.transport = ""  # "shared memory" or "HTTP" once connected
        self.connected = False
        self.status = f"connecting to {address.url} ..."
        # A channel per live image: channel NAME fills its own image.
        self.image_name = datablocks.LIVE_IMAGE if channel == "main" else f"{datablocks.LIVE_IMAGE} {channel}"
        self.applied: Applied | None = None
        self.recording = False  # as the daemon last said (POST /v1/record)
        self._first_version = 0  # frames of an older params version predate our settings
        self._writer = datablocks.PixelWriter()

    def start(self, changes: Mapping[str, Any]) -> None:
        if changes:
            self.link.submit(changes)
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        self._close_reader()
        self.connected = False

    def submit(self, changes: Mapping[str, Any]) -> None:
        self.link.submit(changes)

    def tick(self) -> bool:
        """Apply the workers' news and at most one new frame; True when something changed."""
        changed = False
        for event in self.link.events():
            self._on_event(event)
            changed = True
        read_started = time.perf_counter()
        frame = self.reader.read() if self.reader is not None else self.link.take_frame()
        if frame is not None:
            self._apply(frame, (time.perf_counter() - read_started) * 1e3)
            changed = True
        return changed

    def _on_event(self, event) -> None:
        if isinstance(event, Connected):
            self.connected = True
            self._first_version = event.version
            self._close_reader()  # a restarted daemon has a new segment
            if self.use_shared_memory and event.shm_name:
                try:
                    self.reader = ShmReader(event.shm_name, flip=True)
                except (OSError, ValueError) as exc:  # another user, a container, an old layout
                    log.info("shared memory %r unavailable (%s); using HTTP", event.shm_name, exc)
            self.transport = "shared memory" if self.reader is not None else "HTTP"
            if self.reader is None:
                self.link.fetch_frames_over_http()
            self.status = f"connected: {event.model} on {event.device}, frames over {self.transport}"
        elif isinstance(event, LorasListed):
            show_loras(event.names, event.active)
        elif isinstance(event, Down):
            self.connected = False
            self.status = f"daemon unreachable at {self.address.url}: {event.reason}; retrying in {event.retry_s:g} s"
        elif isinstance(event, Rejected):
            field = f"{event.field}: " if event.field else ""
            self.status = f"change refused: {field}{event.message}"
        elif isinstance(event, InputTaken):
            self.status = ("input off: text-to-image" if event.cleared else
                           f"input {event.width}x{event.height} {'sent' if event.changed else 'unchanged'}")
        elif isinstance(event, ControlTaken):
            self.status = (f"control {event.name}: depth {event.width}x{event.height} "
                           f"{'sent' if event.changed else 'unchanged'}")
        elif isinstance(event, Recorded):
            self.recording = event.recording
            self.status = ("recording into the daemon's --output-dir" if event.recording else
                           event.error or (f"recorded {event.files[-1]}" if event.files else "not recording"))
        elif isinstance(event, Accepted) and self.connected:
            self.status = (f"connected, frames over {self.transport}"
                           + (f"; warning: {'; '.join(event.warnings)}" if event.warnings else ""))

    def _apply(self, frame: FrameInfo, read_ms: float) -> None:
        if frame.version < self._first_version:
            return  # rendered before our settings reached the daemon: not ours to show or keep
        started = time.perf_counter()
        image = datablocks.live_image(frame.width, frame.height, self.image_name)
        self.image_name = image.name
        self._writer.write(image, frame.pixels)
        write_ms = (time.perf_counter() - started) * 1e3
        self.applied = Applied(frame.seq, frame.version, frame.seed, frame.width, frame.height, frame.render_ms,
                               read_ms, write_ms)

    def _close_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


# -- the one session of this Blender process --------------------------------------------------
_session: Session | None = None


def current() -> Session | None:
    return _session


def connect(address: DaemonAddress, use_shared_memory: bool, changes: Mapping[str, Any],
            channel: str = "main") -> Session:
    """Replace any session with a new one and start the timer that drains it."""
    disconnect()
    global _session
    _session = Session(address, use_shared_memory, channel)
    _session.start(changes)
    renders.watch(True)
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=TICK_S)
    return _session


def disconnect() -> None:
    global _session
    session, _session = _session, None
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)
    renders.watch(False)
    if session is not None:
        session.stop()
        redraw()


def submit(changes: Mapping[str, Any]) -> None:
    """Send a change if connected (never blocks: a worker thread delivers it)."""
    if _session is not None:
        _session.submit(changes)


def send_render(scene) -> bool:
    """Send the Render Result as the input image; False when there is none (or no session)."""
    png = renders.render_result_png(scene) if _session is not None else None
    if png is not None:
        _session.link.submit_input(png)
    return png is not None


def send_depth(scene) -> str:
    """Send the last render's Z pass as the control image of the panel's ControlNet, with its
    scale; "" when queued, else why not (no session, nothing rendered, no Z pass)."""
    if _session is None:
        return "Not connected"
    settings = scene.turbo_bridge
    name = settings.control_name.strip()
    if not name:
        return "No ControlNet name: set the daemon's --controlnet NAME (e.g. depth)"
    png, why = depth.render_depth_png(scene)
    if png is None:
        return why
    _session.link.submit_control(name, png)
    _session.link.submit({"controls": {name: {"scale": settings.control_scale}}})
    return ""


def drain() -> float | None:
    """The timer function: apply news from the workers; returns the next interval."""
    session = _session
    if session is None:
        return None  # unregisters the timer
    try:
        scene = bpy.context.scene
        if renders.take_rendered() and scene is not None:
            if scene.turbo_bridge.send_renders:
                send_render(scene)
            if scene.turbo_bridge.send_depths:
                why = send_depth(scene)
                if why:
                    session.status = why
        if session.tick():
            redraw()
    except Exception:  # a timer that raises is dropped by Blender: log, report, keep going
        log.exception("turbo-bridge: applying a frame failed")
        session.status = "error while applying a frame (see the console)"
    return TICK_S


def redraw() -> None:
    """Repaint the areas that show the panel or the image (none in background mode)."""
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR"}:
                area.tag_redraw()


_syncing_loras = False  # set while the LoRA list follows the daemon: those edits are not sent back


def show_loras(names, active) -> None:
    """One weight per LoRA file the daemon lists (the scene's list follows the folder)."""
    global _syncing_loras
    items = bpy.context.scene.turbo_bridge.loras
    _syncing_loras = True
    try:
        for i in reversed(range(len(items))):
            if items[i].name not in names:
                items.remove(i)
        known = {item.name for item in items}
        for name in names:
            if name not in known:
                items.add().name = name
        for item in items:
            item.weight = float(active.get(item.name, 0.0))
    finally:
        _syncing_loras = False


def lora_changed(item, context) -> None:
    if not _syncing_loras and context.scene.turbo_bridge.live:
        submit({"loras": {item.name: item.weight}})
