"""One render thread's work: the frames due on every channel it serves, in rounds, batched by shape.

Each channel's scheduler keeps at most one frame in flight, so the queue holds at most one job per
channel. A round takes every job waiting when it starts and asks each channel for its newest state
then (latest-wins stays per channel, and a state superseded while waiting is never rendered). The
round's jobs are grouped by the renderer's ``batch_key`` (the graph shape: size, steps, guidance
on/off, image-to-image or not; None renders alone) and each group renders as one batch, oldest
job's group first.
Jobs that arrive during a round wait for the next one: a change on one channel waits for at most
one frame of each other channel, which is one batch when their shapes match.

A round starts with whoever is waiting; with ``join_window_s`` (``serve --batch-window-ms``, 0 by
default: off) it may first wait, at most that long, for the channels it batched with to queue their
next frames (``batch_window.py``).

The renderer is asked only what ``bridge.core.renderer.Renderer`` declares.

Each job has two futures: ``begun`` (its channel may queue its next frame) and ``future`` (the
published frame). Here a frame is begun when it is published; ``OverlappingQueue``
(``overlap_queue.py``) begins the next batch while one decodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ..core.frame import Frame, Rendered
from ..core.params import Params
from ..core.renderer import Renderer
from ..core.scene import Scene
from .batch_window import BatchWindow
from .render_thread import RenderThread

log = logging.getLogger(__name__)

MAX_BATCH = 8  # frames in one batch; a larger group renders as several batches


@dataclass(frozen=True)
class Snapshot:
    """What a channel renders next: taken on the event loop when the job's round starts."""

    params: Params
    scene: Scene
    version: int


@dataclass(eq=False)
class Job:
    stream: str
    take: Callable[[], Snapshot]  # on the event loop: the channel's newest state (marks it started)
    finish: Callable[[Snapshot, Rendered, float], Frame]  # on the render (or publishing) thread: into the sinks
    future: asyncio.Future  # the published frame, or the render's exception
    begun: asyncio.Future  # None once the frame's GPU work is queued (or it is done); never an exception
    snapshot: Snapshot | None = None
    key: Hashable | None = None  # its batch key once its round took its state (None: renders alone)
    abandoned: bool = False  # its device was lost: whatever it renders there is never published

    def mark_begun(self) -> None:
        if not self.begun.done():
            self.begun.set_result(None)

    def settle(self, outcome: Any) -> None:
        """The frame or the exception, unless the job was abandoned (its channel went away)."""
        if not self.future.done():
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)
        self.mark_begun()


@dataclass
class QueueStats:
    rounds: int = 0
    batches: int = 0
    frames: int = 0
    largest_batch: int = 0
    busy_s: float = 0.0
    full_waits: int = 0  # overlap: times a batch waited for one in flight to publish (MAX_IN_FLIGHT)
    window_waits: int = 0  # rounds that waited for the channels of the rounds before (join_window_s)
    window_wait_s: float = 0.0  # ... in all
    batch_sizes: dict[int, int] = field(default_factory=dict)


class RenderQueue:
    """Feeds one renderer on one thread (``executor`` has one worker); everything else on the loop."""

    def __init__(self, renderer: Renderer, executor: Executor | None, name: str = "gpu", max_batch: int = MAX_BATCH,
                 join_window_s: float = 0.0):
        self.renderer = renderer
        self.name = name
        self._executor = executor
        self._max_batch = max_batch
        self.window = BatchWindow(join_window_s)
        self._pending: list[Job] = []
        self._round_jobs: list[Job] = []  # the jobs of the last round started (their states taken)
        self._drainer: asyncio.Task | None = None
        self._in_flight: asyncio.Future | None = None  # the render thread's call under way
        self._rendering: list[Job] = []  # the batch in flight
        self._unfinished: deque[asyncio.Future] = deque()  # overlap (OverlappingQueue): begun, not yet published
        self._changed = asyncio.Event()  # a job was queued or a channel forgotten: a waiting drainer looks again
        self._streams: set[str] = set()  # the streams that queue frames here (until forgotten)
        self.stats = QueueStats()
        self.loras: Any = None  # the device's LoRA gate (engine/loras.py), set by the app

    @property
    def overlapping(self) -> bool:
        return False  # OverlappingQueue (engine/overlap_queue.py)

    def submit(self, stream: str, take: Callable[[], Snapshot],
               finish: Callable[[Snapshot, Rendered, float], Frame]) -> Job:
        """Queue one frame of ``stream``; the job's ``begun`` and ``future`` tell how it goes.

        Cancelling ``begun`` (its channel's render loop stopped while waiting) abandons the job."""
        loop = asyncio.get_running_loop()
        job = Job(stream, take, finish, loop.create_future(), loop.create_future())
        job.begun.add_done_callback(lambda begun: job.future.cancel() if begun.cancelled() else None)
        self._streams.add(stream)
        self._pending.append(job)
        self._changed.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain_guarded(), name=f"render-queue-{self.name}")
        return job

    async def render(self, stream: str, take: Callable[[], Snapshot],
                     finish: Callable[[Snapshot, Rendered, float], Frame]) -> tuple[Snapshot, Frame]:
        """Queue one frame of ``stream``; returns the state it rendered and the published frame."""
        job = self.submit(stream, take, finish)
        frame = await job.future
        return job.snapshot, frame

    async def idle(self) -> None:
        """Wait until the render thread is done with the batch it is rendering (if any), and with
        overlap, until every batch begun is published."""
        if self._in_flight is not None:
            await asyncio.gather(asyncio.shield(self._in_flight), return_exceptions=True)
        if self._unfinished:
            await asyncio.gather(*(asyncio.shield(f) for f in list(self._unfinished)), return_exceptions=True)

    def abandon(self, error: BaseException) -> int:
        """The device is lost: fail every job queued or in flight here with ``error`` at once (their
        channels render elsewhere), and never publish what the lost device may still return.
        ``idle()`` no longer waits for the batch in flight. Returns the jobs failed."""
        jobs = [job for job in [*self._pending, *self._rendering] if not job.future.done()]
        for job in jobs:
            job.abandoned = True
            job.settle(error)  # its render loop waits on ``begun``: settle marks it begun too
        self._pending = []
        self._in_flight = None
        return len(jobs)

    async def stop_waiting(self) -> None:
        """The daemon stops: no round waits for its channels any more (``join_window_s``); returns once
        the jobs queued now have begun, so the teardown of their channels (which stops their render
        loops) drops no frame a round was holding back for its neighbours."""
        self.window.stopping = True
        self._changed.set()
        queued = {job.begun for job in self._waiting()}
        while queued and self._drainer is not None and not self._drainer.done():  # a drainer that died begins none
            await asyncio.wait(queued | {self._drainer}, return_when=asyncio.FIRST_COMPLETED)
            queued = {begun for begun in queued if not begun.done()}

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        await self.idle()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._let_others_join()
            if not self._pending:
                return
            for batch in self._round():
                batch = [job for job in batch if not job.future.done()]
                if not batch:
                    continue
                self._rendering = batch
                in_flight = self._in_flight = loop.run_in_executor(self._executor, self._render, batch)
                try:
                    outcomes = await asyncio.shield(in_flight)
                except Exception as exc:  # the executor gave up (shut down): every frame of the batch fails
                    outcomes = [exc] * len(batch)
                finally:
                    if in_flight.done():  # else cancelled mid-batch: idle() still waits for it
                        self._rendering = []
                        if self._in_flight is in_flight:
                            self._in_flight = None
                for job, outcome in zip(batch, outcomes):
                    job.settle(outcome)

    async def _drain_guarded(self) -> None:
        """``_drain``, a loop boundary: a render's failure settles its own jobs, so what reaches here is a bug (a
        renderer's ``batch_key`` raising, say). The frames it holds fail with it, so their channels report it and go on
        (each one's next change starts a new drain), instead of waiting for them forever."""
        try:
            await self._drain()
        except Exception as exc:
            log.exception("render queue %s stopped: its waiting frames fail; the next change starts it anew", self.name)
            jobs, self._pending = [*self._round_jobs, *self._pending], []
            for job in jobs:
                if not job.begun.done():  # one begun settles with its own frame (overlap: when published)
                    job.settle(exc)

    async def _let_others_join(self) -> None:
        """Let the channels whose frames just finished queue their next one (a few loop turns: their
        render loops publish and come back), so they batch with the ones waiting. A queue with one
        stream has nobody to wait for: its frame starts at once."""
        if len(self._streams) > 1:
            for _ in range(3):
                await asyncio.sleep(0)
            waited = await self.window.wait(self._queued, self._streams, self._changed)
            if waited is not None:
                self.stats.window_waits += 1
                self.stats.window_wait_s += waited

    def _waiting(self) -> list[Job]:
        """The jobs queued for the next round whose channels are still here (a deleted channel's job is
        cancelled)."""
        return [job for job in self._pending if not job.future.done()]

    def _queued(self) -> set[str]:
        """The channels with a live job waiting."""
        return {job.stream for job in self._waiting()}

    def _round(self) -> list[list[Job]]:
        """A new round: the jobs waiting now, each with its channel's newest state, in batches."""
        jobs = self._round_jobs = self._waiting()
        self._pending = []
        self.window.took(jobs)
        self.stats.rounds += 1
        for job in jobs:
            job.snapshot = job.take()
        return self._batches(jobs)

    def _batches(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs grouped by graph shape, in the order of each group's oldest job, at most max_batch each."""
        groups: dict[Hashable, list[Job]] = {}
        for index, job in enumerate(jobs):
            key = job.key = self.renderer.batch_key(job.snapshot.params, job.snapshot.scene)
            groups.setdefault(("alone", index) if key is None else key, []).append(job)
        return [group[i:i + self._max_batch] for group in groups.values()
                for i in range(0, len(group), self._max_batch)]

    def _render(self, batch: list[Job]) -> list[Any]:
        # On the render thread: the only thread that touches the renderer or writes the sinks.
        start = time.perf_counter()
        try:
            rendered = self.renderer.render_batch([(job.stream, job.snapshot.params, job.snapshot.scene)
                                                   for job in batch])
        except Exception as exc:  # every frame of a failed batch fails alike
            self.stats.busy_s += time.perf_counter() - start
            return [exc] * len(batch)
        return self._finished(batch, rendered, time.perf_counter() - start)

    def _finished(self, batch: list[Job], rendered: list[Rendered], elapsed: float) -> list[Any]:
        """Count the batch and publish each frame (its job's ``finish``); the outcome per job."""
        self.stats.busy_s += elapsed
        render_ms = elapsed * 1e3
        self.stats.batches += 1
        self.stats.frames += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
        outcomes: list[Any] = []
        for job, result in zip(batch, rendered):
            if job.abandoned:  # its channel renders on another device now: a late frame from here is stale
                outcomes.append(None)
                continue
            try:
                outcomes.append(job.finish(job.snapshot, result, render_ms))
            except Exception as exc:  # a sink failing for one channel fails that channel's frame only
                outcomes.append(exc)
        return outcomes

    def forget(self, stream: str) -> None:
        """A channel is gone or moved: the renderer may drop what it kept for it (transition state),
        and its LoRAs stay loaded here only if another channel uses them."""
        self._streams.discard(stream)
        self.window.forget(stream)
        self._changed.set()  # a round waiting for it (--batch-window-ms) looks again
        if self.loras is not None:
            self.loras.release(stream)
        self.renderer.forget(stream)

    def health(self) -> dict:
        s = self.stats
        return {"rounds": s.rounds, "batches": s.batches, "frames": s.frames, "largest_batch": s.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(s.batch_sizes.items())},
                "busy_s": round(s.busy_s, 3), "overlap": self.overlapping,
                "batch_window_ms": round(self.window.seconds * 1e3, 3), "window_waits": s.window_waits,
                "window_wait_s": round(s.window_wait_s, 3),
                **({"render_thread": self._executor.health()} if isinstance(self._executor, RenderThread) else {}),
                **({"lora_loader": self.loras.health()} if self.loras is not None else {})}
