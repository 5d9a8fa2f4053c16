"""``serve --batch-window-ms``: a render queue's round waits, at most so long, for its channels to batch again.

A round starts with whoever is waiting, so channels whose frames publish a little apart (closed
loops: each sends its next change when it sees its frame) drift into rounds of their own, each a
batch the GPU runs at nearly the cost of a full one. A ``BatchWindow`` lets a round wait, at most
``seconds``, for the channels of the round before and of the batches still in flight to queue their
next frames, so they render as one batch again: only those whose batch key another of them shares
(a shape of its own never joins a batch), each by its newest frame. A lone channel never waits (the
queue asks only with several channels), and a channel that stops changing costs one window, once.
A channel forgotten (deleted, moved) is no longer waited for, and a stopping daemon ends every wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol


class Taken(Protocol):
    """A job a round took (``render_queue.Job``): its channel, its batch key, its published frame."""

    stream: str
    key: Hashable | None  # None: renders alone
    future: asyncio.Future  # done once published (or failed, or its channel went away)


class BatchWindow:
    """What one queue's rounds wait for: each channel's newest job a round took, and the last round's
    channels. Lives on the event loop, like the queue."""

    def __init__(self, seconds: float):
        self.seconds = seconds  # 0: off
        self.stopping = False  # the daemon stops: no round waits any more
        self._recent: dict[str, Taken] = {}  # each channel's newest job a round took
        self._last_round: set[str] = set()

    def took(self, jobs: Sequence[Taken]) -> None:
        """A round took ``jobs`` (their batch keys are read at the next wait)."""
        self._last_round = {job.stream for job in jobs}
        self._recent = {stream: job for stream, job in self._recent.items() if not job.future.done()}
        self._recent.update((job.stream, job) for job in jobs)

    def forget(self, stream: str) -> None:
        self._recent.pop(stream, None)

    async def wait(self, queued: Callable[[], set[str]], streams: set[str], changed: asyncio.Event) -> float | None:
        """Until every awaited channel still in ``streams`` (the queue's, as they change) is among
        ``queued()`` (the channels with a live job queued), ``seconds`` have passed or the daemon stops;
        nothing to wait for while nothing is queued. ``changed`` is set when a job is queued, a channel
        forgotten or the daemon stops. Returns the seconds waited, None if the round did not wait."""
        if self.seconds <= 0:
            return None
        loop = asyncio.get_running_loop()
        start = loop.time()
        waited = False
        awaited = self._awaited()
        while now_queued := queued():
            if self.stopping or not (awaited & streams) - now_queued:
                break
            left = start + self.seconds - loop.time()
            if left <= 0:
                break
            waited = True
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                break
        return loop.time() - start if waited else None

    def _awaited(self) -> set[str]:
        """The channels of the last round or with a frame still in flight whose batch key another of them
        shares, each by its newest frame (an older one in flight may have had another shape): a channel of
        a shape of its own (or one that renders alone) would join the round but not the batch."""
        by_key: dict[Hashable, set[str]] = {}
        for stream, job in self._recent.items():
            if job.key is not None and (stream in self._last_round or not job.future.done()):
                by_key.setdefault(job.key, set()).add(stream)
        return {stream for streams in by_key.values() if len(streams) > 1 for stream in streams}
