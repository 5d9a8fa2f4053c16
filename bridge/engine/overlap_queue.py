"""``--overlap on``: a render queue whose batches overlap, one decoding while the next one starts.

A batch is begun on the render thread (``Renderer.begin_batch``, bridge.core.renderer: for a model,
its GPU work queued, text encoders and UNet, then the VAE decode and the copy to the host on a
second stream) and finished on the device's publishing thread (``InFlight.result``: waiting for
its pixels, then publishing into the sinks). The render thread is free again once the work is
queued, so the next batch's UNet runs while this one decodes. Each job's ``begun`` is set once its batch is begun: its
channel may then queue its next frame, whose state is taken when the next round starts.

What stays as without overlap:
- latest-wins: a round takes its jobs' states only once there is room in the pipeline (at most
  ``max_in_flight`` batches begun and unpublished: ``MAX_IN_FLIGHT``, or the renderer's render lanes
  where it has more, ``--render-lanes``), so changes that come meanwhile are taken;
- order: batches publish in the order they began (one publishing thread), so every channel's
  frames reach its sinks in order;
- a lone change: begun, then finished, with no wait in between (the GPU never idles for it).

A lone batch (begun with no other batch in flight or waiting, as a single change after a pause) is
collected on the render thread itself (``_collect_lone``): it polls ``InFlight.ready`` every
``LONE_POLL_S`` and publishes the frames there, as ``--overlap off`` does. Handing it to the publishing
thread made a lone SD-Turbo change 0.16-0.25 ms slower than with overlap off (runs S16, S17, H100; bench
``--modes lone``: the same call 8.17 ms collected on one thread, 8.72 on another). A job that arrives
during the poll (another channel's, or this channel's next change: its jobs are marked begun once the work
is queued) ends it: the batch goes to the publishing thread and the new one begins while it decodes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from ..core.frame import Frame, Rendered
from ..core.renderer import MAX_IN_FLIGHT, InFlight, Renderer
from .render_queue import MAX_BATCH, Job, RenderQueue, Snapshot

# How often a lone batch's poll asks whether its frames are ready: a lone change's frame is collected up to about
# one poll after it is ready (a median 24-26 us late on a 2-vCPU VM, bench/lone_poll.py). Each poll is a timed
# wait, which Linux ends up to the thread's timer slack late: the render thread's is 1 us
# (render_thread.TIMER_SLACK_NS), not 50.
LONE_POLL_S = 20e-6


class OverlappingQueue(RenderQueue):
    """A ``RenderQueue`` that begins batches and publishes them on ``publisher`` (one worker)."""

    def __init__(self, renderer: Renderer, executor: Executor, publisher: Executor, name: str = "gpu",
                 max_batch: int = MAX_BATCH, join_window_s: float = 0.0, max_in_flight: int = MAX_IN_FLIGHT):
        super().__init__(renderer, executor, name, max_batch, join_window_s)
        self._publisher = publisher
        self._max_in_flight = max_in_flight
        self._arrived = threading.Event()  # a job was queued: a lone batch's poll hands over
        self.lone_collected = 0  # lone batches collected and published on the render thread (written there)
        self.lone_handed_over = 0  # lone batches handed to the publishing thread: a job arrived during the poll

    @property
    def overlapping(self) -> bool:
        return True

    def health(self) -> dict:
        return {**super().health(), "max_in_flight": self._max_in_flight, "lone_collected_here": self.lone_collected,
                "lone_handed_over": self.lone_handed_over}

    def submit(self, stream: str, take: Callable[[], Snapshot],
               finish: Callable[[Snapshot, Rendered, float], Frame]) -> Job:
        job = super().submit(stream, take, finish)
        self._arrived.set()
        return job

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._let_others_join()  # as without overlap: channels whose frames just began
            self._forget_published()
            if not self._pending:
                if not self._unfinished:
                    return
                # Nothing to begin: wait for a job, or for the oldest batch to be published.
                self._changed.clear()
                arrival = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({arrival, self._unfinished[0]}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    arrival.cancel()
                continue
            # Room first, states then: a change that comes while the pipeline is full is still taken.
            await self._room()
            batches = self._round()
            for index, batch in enumerate(batches):
                batch = [job for job in batch if not job.future.done()]
                if not batch:
                    continue
                await self._room()  # the round's later batches, as their turn comes
                mark_lone_begun = None
                if index == len(batches) - 1 and not self._pending and not self._unfinished:
                    self._arrived.clear()  # from here on a job that arrives ends the lone batch's poll
                    mark_lone_begun = self._lone_begun(loop, batch)
                self._in_flight = loop.run_in_executor(self._executor, self._begin, batch, mark_lone_begun)
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

    async def _room(self) -> None:
        """Until fewer than ``max_in_flight`` batches are begun and unpublished."""
        self._forget_published()
        while len(self._unfinished) >= self._max_in_flight:
            self.stats.full_waits += 1
            await asyncio.wait({self._unfinished[0]})
            self._forget_published()

    def _forget_published(self) -> None:
        while self._unfinished and self._unfinished[0].done():
            self._unfinished.popleft()

    @staticmethod
    def _lone_begun(loop: asyncio.AbstractEventLoop, batch: list[Job]) -> Callable[[], None]:
        """For the render thread: mark a lone batch's jobs begun, so their channels may queue their next frames
        (which end its poll) while it is collected."""
        def mark() -> None:
            for job in batch:
                job.mark_begun()
        return lambda: loop.call_soon_threadsafe(mark)

    @staticmethod
    def _settle(batch: list[Job], published: asyncio.Future) -> None:
        if published.cancelled():
            outcomes: list[Any] = [RuntimeError("the publishing thread stopped")] * len(batch)
        else:
            outcomes = published.result()
        for job, outcome in zip(batch, outcomes):
            job.settle(outcome)

    def _begin(self, batch: list[Job], mark_lone_begun: Callable[[], None] | None) -> Future:
        # On the render thread: queue the batch's GPU work, hand its finishing to the publishing thread (a lone
        # batch's, given ``mark_lone_begun``: only if a job arrives before it is ready).
        start = time.perf_counter()
        try:
            staged: InFlight | Exception = self.renderer.begin_batch(
                [(job.stream, job.snapshot.params, job.snapshot.scene) for job in batch])
        except Exception as exc:  # every frame of a failed batch fails alike
            staged = exc
        if mark_lone_begun is not None and not isinstance(staged, Exception):
            if self._collect_lone(staged, mark_lone_begun):
                collected: Future = Future()
                collected.set_result(self._publish(batch, staged, start))
                return collected
        return self._publisher.submit(self._publish, batch, staged, start)

    def _collect_lone(self, staged: InFlight, mark_begun: Callable[[], None]) -> bool:
        """Poll until the lone batch's frames are ready (True: collect them here) or a job arrives (False)."""
        if not _ready(staged):  # a renderer that renders in begin_batch (``Finished``) is ready at once
            mark_begun()
            while not self._arrived.wait(LONE_POLL_S):
                if _ready(staged):
                    break
            else:
                self.lone_handed_over += 1
                return False
        self.lone_collected += 1
        return True

    def _publish(self, batch: list[Job], staged: InFlight | Exception, start: float) -> list[Any]:
        # On the publishing thread, in the order the batches began (a lone batch: on the render thread, with no
        # other batch unpublished): wait for the pixels, publish.
        if isinstance(staged, Exception):
            return [staged] * len(batch)
        try:
            rendered = staged.result()
        except Exception as exc:
            return [exc] * len(batch)
        return self._finished(batch, rendered, time.perf_counter() - start)


def _ready(staged: InFlight) -> bool:
    try:
        return staged.ready()
    except Exception:  # the device failed (a CUDA error surfaces at any call): ``result`` raises it for every frame
        return True
