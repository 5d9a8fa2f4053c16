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
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, Future
from typing import Any

from ..core.renderer import MAX_IN_FLIGHT, InFlight, Renderer
from .render_queue import MAX_BATCH, Job, RenderQueue


class OverlappingQueue(RenderQueue):
    """A ``RenderQueue`` that begins batches and publishes them on ``publisher`` (one worker)."""

    def __init__(self, renderer: Renderer, executor: Executor, publisher: Executor, name: str = "gpu",
                 max_batch: int = MAX_BATCH, join_window_s: float = 0.0, max_in_flight: int = MAX_IN_FLIGHT):
        super().__init__(renderer, executor, name, max_batch, join_window_s)
        self._publisher = publisher
        self._max_in_flight = max_in_flight

    @property
    def overlapping(self) -> bool:
        return True

    def health(self) -> dict:
        return {**super().health(), "max_in_flight": self._max_in_flight}

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
            for batch in self._round():
                batch = [job for job in batch if not job.future.done()]
                if not batch:
                    continue
                await self._room()  # the round's later batches, as their turn comes
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
    def _settle(batch: list[Job], published: asyncio.Future) -> None:
        if published.cancelled():
            outcomes: list[Any] = [RuntimeError("the publishing thread stopped")] * len(batch)
        else:
            outcomes = published.result()
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
