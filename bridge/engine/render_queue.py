"""One render thread's work: the frames due on every channel it serves, in rounds, batched by shape.

Each channel's scheduler keeps at most one frame in flight, so the queue holds at most one job per
channel. A round takes every job waiting when it starts and asks each channel for its newest state
then (latest-wins stays per channel, and a state superseded while waiting is never rendered). The
round's jobs are grouped by the renderer's ``batch_key`` (the graph shape: size, steps, guidance
on/off, image-to-image or not) and each group renders as one batch, oldest job's group first.
Jobs that arrive during a round wait for the next one: a change on one channel waits for at most
one frame of each other channel, which is one batch when their shapes match.

A renderer without ``render_batch`` renders the round's jobs one by one, in order.

Overlap (``publisher`` given, the renderer a ``StagedRenderer``): a batch is begun on the render
thread (its GPU work queued: text encoders and UNet, then the VAE decode and the copy to the host
on a second stream), and finished on the publishing thread (waiting for its pixels, publishing
into the sinks), so the render thread takes the next batch while this one decodes. Each job's
``begun`` is set once its batch is begun: its channel may then queue its next frame, whose state
is taken when the next batch starts. At most ``MAX_IN_FLIGHT`` batches are begun and not yet
published; they publish in the order they began (one publishing thread), so every channel's
frames reach its sinks in order. A lone change renders as without overlap: begun, then finished.
Without overlap, ``begun`` is set when the frame is published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from ..core.frame import Frame, InFlight, Rendered, Renderer, StagedRenderer
from ..core.params import Params
from ..core.scene import Scene

log = logging.getLogger(__name__)

MAX_BATCH = 8  # frames in one batch; a larger group renders as several batches
MAX_IN_FLIGHT = 2  # overlap: batches begun and not yet published (one decoding, one in its UNet)


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
    batch_sizes: dict[int, int] = field(default_factory=dict)


class RenderQueue:
    """Feeds one renderer on one thread (``executor`` has one worker); everything else on the loop."""

    def __init__(self, renderer: Renderer, executor: Executor | None, name: str = "gpu", max_batch: int = MAX_BATCH,
                 publisher: Executor | None = None):
        """``publisher``: the device's publishing thread (one worker); given, batches overlap (see above)."""
        if publisher is not None and not isinstance(renderer, StagedRenderer):
            raise TypeError(f"overlap needs a StagedRenderer (begin_batch); {type(renderer).__name__} is not one")
        self.renderer = renderer
        self.name = name
        self._executor = executor
        self._publisher = publisher
        self._max_batch = max_batch
        self._pending: list[Job] = []
        self._drainer: asyncio.Task | None = None
        self._in_flight: asyncio.Future | None = None  # the render thread's call under way
        self._unfinished: deque[asyncio.Future] = deque()  # overlap: batches begun, not yet published
        self._arrived = asyncio.Event()  # overlap: a job was queued (the drainer may begin it)
        self._streams: set[str] = set()  # the streams that queue frames here (until forgotten)
        self.stats = QueueStats()
        self.loras: Any = None  # the device's LoRA gate (engine/loras.py), set by the app

    @property
    def batching(self) -> bool:
        return hasattr(self.renderer, "render_batch") and hasattr(self.renderer, "batch_key")

    @property
    def overlapping(self) -> bool:
        return self._publisher is not None

    def submit(self, stream: str, take: Callable[[], Snapshot],
               finish: Callable[[Snapshot, Rendered, float], Frame]) -> Job:
        """Queue one frame of ``stream``; the job's ``begun`` and ``future`` tell how it goes.

        Cancelling ``begun`` (its channel's render loop stopped while waiting) abandons the job."""
        loop = asyncio.get_running_loop()
        job = Job(stream, take, finish, loop.create_future(), loop.create_future())
        job.begun.add_done_callback(lambda begun: job.future.cancel() if begun.cancelled() else None)
        self._streams.add(stream)
        self._pending.append(job)
        self._arrived.set()
        if self._drainer is None or self._drainer.done():
            drain = self._drain_overlapped() if self.overlapping else self._drain()
            self._drainer = asyncio.create_task(drain, name=f"render-queue-{self.name}")
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

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        await self.idle()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Let the channels whose frames just finished queue their next one (a few loop turns:
            # their render loops publish and come back), so they batch with the ones waiting. A
            # queue with one stream has nobody to wait for: its frame starts at once.
            if len(self._streams) > 1:
                for _ in range(3):
                    await asyncio.sleep(0)
            if not self._pending:
                return
            jobs = [job for job in self._pending if not job.future.done()]  # done: its channel went away
            self._pending = []
            self.stats.rounds += 1
            for job in jobs:
                job.snapshot = job.take()
            for batch in self._batches(jobs):
                batch = [job for job in batch if not job.future.done()]
                if not batch:
                    continue
                self._in_flight = loop.run_in_executor(self._executor, self._render, batch)
                try:
                    outcomes = await asyncio.shield(self._in_flight)
                finally:
                    if self._in_flight.done():  # else cancelled mid-batch: idle() still waits for it
                        self._in_flight = None
                for job, outcome in zip(batch, outcomes):
                    job.settle(outcome)

    async def _drain_overlapped(self) -> None:
        """``_drain`` with overlap: begin a batch, leave its finishing to the publishing thread, and
        begin the next as soon as there is one (at most ``MAX_IN_FLIGHT`` unpublished)."""
        loop = asyncio.get_running_loop()
        while True:
            if len(self._streams) > 1:  # as in _drain: let channels whose frames just began join
                for _ in range(3):
                    await asyncio.sleep(0)
            self._forget_published()
            if not self._pending:
                if not self._unfinished:
                    return
                # Nothing to begin: wait for a job, or for the oldest batch to be published.
                self._arrived.clear()
                arrival = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait({arrival, self._unfinished[0]}, return_when=asyncio.FIRST_COMPLETED)
                arrival.cancel()
                continue
            jobs = [job for job in self._pending if not job.future.done()]
            self._pending = []
            self.stats.rounds += 1
            for job in jobs:
                job.snapshot = job.take()
            for batch in self._batches(jobs):
                batch = [job for job in batch if not job.future.done()]
                if not batch:
                    continue
                while len(self._unfinished) >= MAX_IN_FLIGHT:
                    await asyncio.wait({self._unfinished[0]})
                    self._forget_published()
                self._in_flight = loop.run_in_executor(self._executor, self._begin, batch)
                try:
                    publishing: Future = await asyncio.shield(self._in_flight)
                finally:
                    if self._in_flight.done():
                        self._in_flight = None
                published = asyncio.wrap_future(publishing)
                published.add_done_callback(lambda done, batch=batch: self._settle(batch, done))
                self._unfinished.append(published)
                for job in batch:
                    job.mark_begun()

    def _forget_published(self) -> None:
        while self._unfinished and self._unfinished[0].done():
            self._unfinished.popleft()

    @staticmethod
    def _settle(batch: list[Job], published: asyncio.Future) -> None:
        outcomes = published.result() if not published.cancelled() else [RuntimeError("publishing cancelled")] * len(batch)
        for job, outcome in zip(batch, outcomes):
            job.settle(outcome)

    def _begin(self, batch: list[Job]) -> Future:
        # On the render thread: queue the batch's GPU work, hand its finishing to the publishing thread.
        start = time.perf_counter()
        try:
            staged: InFlight | Exception = self.renderer.begin_batch(
                [(job.stream, job.snapshot.params, job.snapshot.scene) for job in batch])
        except Exception as exc:  # every frame of a failed batch fails alike
            staged = exc
        return self._publisher.submit(self._publish, batch, staged, start)

    def _publish(self, batch: list[Job], staged: InFlight | Exception, start: float) -> list[Any]:
        # On the publishing thread, in the order the batches began: wait for the pixels, publish.
        if isinstance(staged, Exception):
            return [staged] * len(batch)
        try:
            rendered = staged.result()
        except Exception as exc:
            return [exc] * len(batch)
        return self._finished(batch, rendered, time.perf_counter() - start)

    def _batches(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs grouped by graph shape, in the order of each group's oldest job, at most max_batch each."""
        if not self.batching:
            return [[job] for job in jobs]
        groups: dict[Hashable, list[Job]] = {}
        for index, job in enumerate(jobs):
            key = self.renderer.batch_key(job.snapshot.params, job.snapshot.scene)
            groups.setdefault(("alone", index) if key is None else key, []).append(job)
        return [group[i:i + self._max_batch] for group in groups.values()
                for i in range(0, len(group), self._max_batch)]

    def _render(self, batch: list[Job]) -> list[Any]:
        # On the render thread: the only thread that touches the renderer or writes the sinks.
        start = time.perf_counter()
        try:
            if self.batching:
                rendered = self.renderer.render_batch([(job.stream, job.snapshot.params, job.snapshot.scene)
                                                       for job in batch])
            else:
                rendered = [self.renderer.render(batch[0].snapshot.params, batch[0].snapshot.scene)]
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
            try:
                outcomes.append(job.finish(job.snapshot, result, render_ms))
            except Exception as exc:  # a sink failing for one channel fails that channel's frame only
                outcomes.append(exc)
        return outcomes

    def forget(self, stream: str) -> None:
        """A channel is gone or moved: the renderer may drop what it kept for it (transition state)."""
        self._streams.discard(stream)
        forget = getattr(self.renderer, "forget", None)
        if forget is not None:
            forget(stream)

    def health(self) -> dict:
        s = self.stats
        return {"rounds": s.rounds, "batches": s.batches, "frames": s.frames, "largest_batch": s.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(s.batch_sizes.items())},
                "busy_s": round(s.busy_s, 3), "batching": self.batching, "overlap": self.overlapping,
                **({"render_thread": self._executor.health()} if hasattr(self._executor, "health") else {})}
