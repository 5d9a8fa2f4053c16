"""The render thread: one dedicated thread that runs the GPU work in order, as an ``Executor``.

It replaces ``ThreadPoolExecutor(1)`` for the render work (``loop.run_in_executor`` works the
same) and adds one lever: after each job the thread keeps polling for the next one for up to
``spin_s`` seconds before it blocks. While changes keep coming, the next frame's job then starts
without waking a sleeping thread, which on a VM (an idle vCPU halts) costs far more than the wake
itself: the first microseconds after a wake run on cold caches. The poll yields the CPU and the
GIL on every turn (``os.sched_yield``), yet each turn's GIL hand-over still makes the event loop
wait: on two busy vCPUs it measured worse than sleeping (docs/benchmarks.md), so ``spin_s`` is 0
by default (a plain blocking worker). ``spins``/``sleeps`` count how each job was picked up.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

log = logging.getLogger(__name__)

_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # Windows: sleep(0) yields too
# A RenderThread's timer slack (Linux): how late the kernel may end its timed waits, to batch wake-ups. With the
# default, 50 us, a lone batch's 20-us polls (overlap_queue.LONE_POLL_S) saw its frames ready a median 46-54 us
# late, with this slack 24-26 (bench/lone_poll.py, 2-vCPU VM). Only RenderThreads take it (render, publishing).
TIMER_SLACK_NS = 1_000
_PR_SET_NAME, _PR_SET_TIMERSLACK = 15, 29


def _tune_os_thread(name: str) -> None:
    """Give the OS thread this name too (what top -H and /proc show; 15 bytes at most) and the render
    thread's timer slack; Linux only."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            libc.prctl(_PR_SET_NAME, name.encode()[:15] + b"\0", 0, 0, 0)
            libc.prctl(_PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)  # this thread's only
        except (OSError, AttributeError):
            pass  # a libc without prctl: the name is cosmetic, the slack costs a lone batch's polls some microseconds


class RenderThread(Executor):
    """Runs submitted calls one at a time on its own thread, in submission order."""

    def __init__(self, name: str = "gpu", spin_s: float = 0.0):
        if spin_s < 0:
            raise ValueError(f"spin_s must be >= 0, got {spin_s}")
        self.name = name
        self.spin_s = spin_s
        self.spins = 0  # jobs taken without blocking (queued already, or seen while polling)
        self.sleeps = 0  # jobs the thread blocked for (woken by the submit)
        # SimpleQueue: a put wakes a blocked get once (a Condition would wake it, then make it wait
        # for the submitter's lock: two wake-ups a job, measured with turbo-bridge latency).
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._sleeping = False  # about to block (or blocked) for the next job
        self._closed = False
        self._lock = threading.Lock()  # submit vs shutdown
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"render thread {self.name!r} is shut down")
            self._jobs.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            job = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        job[0].cancel()
                self._jobs.put(None)  # after every job already queued: they still run
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def join(self, timeout: float | None = None) -> bool:
        """After ``shutdown``: wait at most ``timeout`` s for the thread to end; False if it has not (a job
        still blocked: the thread is a daemon thread, it does not hold the process)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def health(self) -> dict:
        return {"spin_ms": round(self.spin_s * 1e3, 3), "jobs_without_sleep": self.spins,
                "jobs_after_sleep": self.sleeps}

    def _next(self):
        """The next job (None: shut down), polling for up to ``spin_s`` before blocking."""
        deadline = None
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                pass
            else:
                self.spins += job is not None
                return job
            if deadline is None:
                deadline = time.perf_counter() + self.spin_s
            if self._closed or time.perf_counter() >= deadline:
                break
            _yield()  # the CPU and the GIL to whoever wants them, then look again
        self._sleeping = True
        job = self._jobs.get()
        self._sleeping = False
        self.sleeps += job is not None
        return job

    def _work(self) -> None:
        _tune_os_thread(self.name)
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
