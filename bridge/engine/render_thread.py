"""The render thread: one dedicated thread that runs the GPU work in order, as an ``Executor``.

It replaces ``ThreadPoolExecutor(1)`` for the render work (``loop.run_in_executor`` works the
same) and adds one lever: after each job the thread keeps polling for the next one for up to
``spin_s`` seconds before it blocks. While changes keep coming, the next frame's job then starts
without waking a sleeping thread, which on a VM (an idle vCPU halts) costs far more than the wake
itself: the first microseconds after a wake run on cold caches. The poll yields the CPU and the
GIL on every turn (``os.sched_yield``), so the event loop thread is never starved. ``spin_s`` 0
is a plain blocking worker. ``spins``/``sleeps`` count how each job was picked up (health).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from concurrent.futures import Executor, Future
from typing import Any, Callable

log = logging.getLogger(__name__)

_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # Windows: sleep(0) yields too


class RenderThread(Executor):
    """Runs submitted calls one at a time on its own thread, in submission order."""

    def __init__(self, name: str = "gpu", spin_s: float = 0.0):
        if spin_s < 0:
            raise ValueError(f"spin_s must be >= 0, got {spin_s}")
        self.name = name
        self.spin_s = spin_s
        self.spins = 0  # jobs picked up while polling (no wake-up needed)
        self.sleeps = 0  # jobs that had to wake the thread
        self._jobs: collections.deque[tuple[Future, Callable, tuple, dict]] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._sleeping = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError(f"render thread {self.name!r} is shut down")
            self._jobs.append((future, fn, args, kwargs))
            if self._sleeping:  # a polling thread sees the job without being told
                self._ready.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._closed = True
            if cancel_futures:
                while self._jobs:
                    self._jobs.popleft()[0].cancel()
            self._ready.notify()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def health(self) -> dict:
        return {"spin_ms": round(self.spin_s * 1e3, 3), "jobs_while_polling": self.spins,
                "jobs_after_sleep": self.sleeps}

    def _next(self):
        """The next job, polling up to ``spin_s`` first; None once shut down with nothing left."""
        if self._jobs:  # deque.popleft is atomic: no lock needed to take from a non-empty queue
            self.spins += 1
            return self._jobs.popleft()
        deadline = time.perf_counter() + self.spin_s
        while self.spin_s and time.perf_counter() < deadline and not self._closed:
            _yield()
            if self._jobs:
                self.spins += 1
                return self._jobs.popleft()
        with self._ready:
            while not self._jobs:
                if self._closed:
                    return None
                self._sleeping = True
                self._ready.wait()
                self._sleeping = False
            self.sleeps += 1
            return self._jobs.popleft()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)
            del job, future, fn, args, kwargs  # drop references before waiting for the next job
