"""Latest-wins scheduling: one render in flight, the newest state pending.

Front ends hand their changes to ``bridge.engine.changes.ChangeDoor``, which checks them
(:meth:`Scheduler.check`) and commits them (:meth:`Scheduler.commit`: merge, bump the version);
they return at once. The render loop takes a snapshot of the newest state whenever the GPU is
free, so a burst of changes renders a handful of frames and a superseded state is never started.
The state (``ChannelState``, bridge.engine.state) is the params, the steering images and a
transition in progress: while one glides, the loop keeps rendering (one step per frame) without
new changes.
All torch work runs on the render thread (``RenderQueue``, which may batch this channel's frame
with other channels'); sinks publish there too, right after the render, so a frame reaches
shared memory without a hop through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.errors import ValidationError, is_out_of_memory
from ..core.frame import Frame, Rendered
from ..core.params import PROMPT_FIELDS, Limits, Params, parse_changes, prompt_texts
from ..core.renderer import Renderer
from .error_log import FailureLog
from .loras import LoraGate
from .render_queue import RenderQueue, Snapshot
from .state import ChannelState

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives every frame on the GPU thread; must be quick (a copy, not an encode)."""

    def publish(self, frame: Frame) -> None: ...


@dataclass(frozen=True)
class Applied:
    """The outcome of an accepted change."""

    version: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checked:
    """A channel's change that passed every check: what ``Scheduler.commit`` makes the state."""

    base: Params  # the params it was checked against
    params: Params  # the params after the change
    warnings: tuple[str, ...] = ()


def check_change(current: Params, values: Mapping[str, Any], loras: LoraGate | None, renderer: Renderer,
                 channel: str, *, warn: bool = True) -> Checked:
    """Merge parsed values into ``current`` and check what a merge cannot: the LoRAs it turns on are
    loaded, and ``channel``'s new set keeps its device within the LoRAs it can keep loaded at once.
    ``warn``: also find the prompt warnings (``renderer.prompt_warnings``), for a sender told them.

    Also for a channel not created yet (``current``: the daemon's initial params). Raises ``ValidationError``.
    """
    merged = current.merged(values)  # may refuse a combination (a control's start after its end, a fifth LoRA)
    if "loras" in values:
        names = [name for name, _ in merged.loras if name not in dict(current.loras)]
        if loras is not None:
            loras.check(names)
            loras.check_room(channel, [name for name, _ in merged.loras])
        elif names:
            raise ValidationError("loras", "this daemon's model takes no LoRAs")
    warnings = tuple(w for name in PROMPT_FIELDS if warn and name in values
                     for text in prompt_texts(values[name]) for w in renderer.prompt_warnings(text))
    return Checked(current, merged, warnings)


class Scheduler(ChannelState):
    """Owns the state (``Params`` + version, images, glide; see ``ChannelState``) and the render loop."""

    def __init__(
        self,
        renderer: Renderer,
        gpu: Executor | RenderQueue | None,
        *,
        initial: Params = Params(),
        limits: Limits = Limits(),
        sinks: Iterable[Sink] = (),
        name: str = "main",
        loras: LoraGate | None = None,
    ):
        super().__init__(initial, limits)
        self.name = name
        self._renderer = renderer
        # A plain executor (one worker) is a queue of its own: this scheduler is its only channel.
        self._queue = gpu if isinstance(gpu, RenderQueue) else RenderQueue(renderer, gpu)
        if loras is not None:
            self._queue.loras = loras
        self._sinks = list(sinks)
        self._started_version = 0
        self._redo = False  # render the current state again: its frame in flight was lost with its worker
        self._seq = 0
        self._new_frame = asyncio.Condition()
        self._first_attempt = asyncio.Event()  # set once the first frame rendered or failed
        self._frame_listeners: list[Callable[[Frame], None]] = []
        self._error_listeners: list[Callable[[str], None]] = []
        self._failures = FailureLog(log)  # one traceback per kind of failure, then counted lines
        self.latest: Frame | None = None

    @property
    def loras(self) -> LoraGate | None:
        """The LoRA folder of the device this channel renders on (LoRAs fold into its UNet)."""
        return self._queue.loras

    @property
    def queue(self) -> RenderQueue:
        return self._queue

    def move_to(self, queue: RenderQueue, *, redo: bool = False) -> None:
        """Render on another queue (device) from the next frame on; the frame in flight finishes where it is.

        ``redo``: the old device is lost, and with it any frame in flight there: the current state
        renders again on the new one (its params, images and version are all here), so no change is lost.
        """
        self._queue.forget(self.name)  # its LoRAs released there
        self._queue, self._renderer = queue, queue.renderer
        if self.loras is not None:
            self.loras.hold(self.name, (name for name, _ in self._params.loras))  # loaded here before the move
        if redo:
            self.redo()

    def redo(self) -> None:
        """Render the current state again (its device was lost, or came back), even without a new change."""
        self._redo = True
        self._wake.set()

    def on_frame(self, listener: Callable[[Frame], None]) -> None:
        """Call ``listener(frame)`` on the event loop after each published frame."""
        self._frame_listeners.append(listener)

    def on_error(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(message)`` on the event loop after each failed render (and output failure)."""
        self._error_listeners.append(listener)

    def check(self, values: Mapping[str, Any], *, warn: bool = True) -> Checked:
        """Check parsed values (``parse_changes``) against this channel's state; the state is not touched.
        ``warn``: also find the prompt warnings (``check_change``)."""
        return check_change(self._params, values, self.loras, self._renderer, self.name, warn=warn)

    def commit(self, checked: Checked) -> Applied:
        """Make a checked change the state (a new version when it changes anything); never refuses."""
        if checked.base is not self._params:  # the door checks and commits in one turn of the event loop
            raise RuntimeError(f"{self.name}: a change checked against an older state cannot be committed")
        self.stats.changes += 1
        if checked.params != self._params:
            if checked.params.loras != self._params.loras and self.loras is not None:
                self.loras.hold(self.name, (name for name, _ in checked.params.loras))  # stays loaded while used
            self._change(checked.params)
            log.debug("params v%d: %s", self._version, checked.params)
        return Applied(self._version, checked.warnings)

    def apply(self, raw: Any) -> Applied:
        """Parse, check and commit one raw change of this channel alone (tests, embedding).

        Front ends hand theirs to ``bridge.engine.changes.ChangeDoor``, which loads LoRA files first
        and applies changes of several channels all or nothing. Raises ``ValidationError``.
        """
        try:
            checked = self.check(parse_changes(raw, self._limits))
        except ValidationError:
            self.stats.rejected += 1
            raise
        return self.commit(checked)

    async def next_frame(self, after: int, timeout: float) -> Frame | None:
        """The newest frame if its seq is above ``after``, waiting up to ``timeout`` seconds."""
        async with self._new_frame:
            try:
                await asyncio.wait_for(
                    self._new_frame.wait_for(lambda: self.latest is not None and self.latest.seq > after),
                    timeout,
                )
            except asyncio.TimeoutError:
                return None
        return self.latest

    async def first_frame(self, timeout: float) -> bool:
        """Wait until the first frame rendered or failed (at most ``timeout`` s); False if neither yet."""
        try:
            await asyncio.wait_for(self._first_attempt.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """The render loop; runs until cancelled.

        A frame's job is queued when there is a newer state; the next one as soon as the queue has
        begun this one (with overlap, while it still decodes: two frames in flight at most, its
        state taken when it starts). Frames land (``latest``, listeners, errors) in order."""
        landing: asyncio.Task | None = None  # the landing of the last frame begun but not published
        try:
            while True:
                if self._redo:
                    self._redo, self._started_version = False, 0
                if self._started_version >= self._version and not self._transition.active:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                job = self._queue.submit(self.name, self._take, self._publish)
                await job.begun
                if job.future.done() and (landing is None or landing.done()):
                    await self._land(job)  # without overlap: published already
                else:
                    landing = asyncio.create_task(self._land_after(landing, job), name=f"land-{self.name}")
        finally:
            if landing is not None:
                landing.cancel()

    async def _land_after(self, previous: asyncio.Task | None, job) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await asyncio.wait({job.future})
        await self._land(job)

    async def _land(self, job) -> None:
        """The outcome of a published (or failed) frame: the newest frame and its listeners, or the error."""
        if job.future.cancelled():
            return
        exc = job.future.exception()
        if exc is not None:  # a loop boundary: report, keep serving the last good frame
            self._transition.cancel()  # a failing glide would fail every frame
            params = job.snapshot.params if job.snapshot else self._params
            version = job.snapshot.version if job.snapshot else self._started_version
            self._report_error(params, exc, self._roll_back(params) if is_out_of_memory(exc) else "", version)
            self._first_attempt.set()
            return
        frame = job.future.result()
        self.latest = frame
        self._first_attempt.set()
        self.stats.frames += 1
        self.stats.failing = False
        self._failures.succeeded()
        async with self._new_frame:
            self._new_frame.notify_all()
        for listener in self._frame_listeners:
            listener(frame)

    def _take(self) -> Snapshot:
        """The newest state, when the render queue starts this channel's frame (on the event loop)."""
        scene = self._scene()
        self._started_version = self._version
        return Snapshot(self._params, scene, self._version)

    def _publish(self, taken: Snapshot, rendered: Rendered, render_ms: float) -> Frame:
        # Runs on the render thread (with overlap: the device's publishing thread), in frame order:
        # the only thread that writes this channel's sinks.
        self._seq += 1
        frame = Frame(self._seq, taken.version, taken.params, rendered.pixels, render_ms, time.time_ns())
        publish_start = time.perf_counter()
        for sink in self._sinks:
            sink.publish(frame)
        self.stats.last_stages_ms = {
            **rendered.stages_ms, "publish": (time.perf_counter() - publish_start) * 1e3,
        }
        log.debug("%s: frame %d (v%d) %.1f ms", self.name, frame.seq, taken.version, render_ms)
        return frame

    def _roll_back(self, failed: Params) -> str:
        """After running out of memory: back to the last rendered params, unless a newer change is pending.

        The restored state gets a new version (and a frame), so every client sees it.
        """
        good = self.latest.params if self.latest is not None else None
        if good is None or good == failed or self._version != self._started_version:
            return ""
        self._params = good
        self._bump()
        return f"; back to the last rendered parameters ({good.width}x{good.height}) as v{self._version}"

    def _report_error(self, params: Params, exc: BaseException, outcome: str, version: int) -> None:
        message = f"render failed for v{version} ({params.width}x{params.height}): " \
                  f"{type(exc).__name__}: {str(exc)[:500]}{outcome}"
        self.stats.render_errors += 1
        self.stats.last_error = message
        self.stats.failing = True
        self._failures.failed(message, exc, traceback=not is_out_of_memory(exc))
        self.broadcast_error(message)

    def report_fault(self, message: str) -> None:
        """One of this channel's outputs or input sources started failing (on the event loop):
        ``last_error``, OSC ``/bridge/error``."""
        self.stats.last_error = message
        self.broadcast_error(message)

    def broadcast_error(self, message: str) -> None:
        """Tell the error listeners (OSC subscribers) about a failure: a render's or a sink's."""
        for listener in self._error_listeners:
            listener(message)
