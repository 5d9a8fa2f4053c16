"""The renderer workers' life: started and warmed, watched, lost, restarted by Ray, and back.

A worker is ``starting`` until its renderer is warm (its ``info`` answers), then ``ready``. It is
``lost`` when Ray says its process or node died (a call fails at once) or when its heartbeat goes
unanswered for ``lost_after_s`` (a hung process: stopped, deadlocked, cut off); a hung worker is
then killed, so that Ray restarts it. Ray restarts a lost worker's actor (``max_restarts=-1``): the
new process loads and warms the renderer, answers ``info``, and the worker is ``ready`` again.

The pool only watches and tells: ``on_lost(worker, error)`` and ``on_ready(worker)`` (the app moves
channels off a lost worker and back onto a ready one). Heartbeats run on the event loop (awaiting
Ray's object refs); blocking Ray calls (``ray.kill``) run off it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from .proxy import RemoteRenderer, worker_error
from .worker import WorkerInfo

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.5
LOST_AFTER_S = 3.0  # a heartbeat unanswered this long: lost (detected within PING_INTERVAL_S + this)
START_TIMEOUT_S = 900.0  # a worker's model load and warm-up (a cold compile of a full-size model takes minutes)
RETRY_S = 2.0  # between looks at a worker whose actor Ray reports dead for good


@dataclass(eq=False)
class Worker:
    """One renderer worker: its actor, its state and, once warm, its renderer (the proxy the daemon renders with)."""

    id: str
    actor: Any
    state: str = "starting"  # starting | ready | lost
    renderer: RemoteRenderer | None = None
    error: str | None = None  # why it was last lost (or failed to start)
    losses: int = 0
    started_s: float = field(default_factory=time.monotonic)

    @property
    def info(self) -> WorkerInfo | None:
        return None if self.renderer is None else self.renderer.info

    def health(self) -> dict:
        info = self.info
        return {"id": self.id, "node": info.node if info else None, "device": info.device if info else None,
                "pid": info.pid if info else None, "state": self.state, "losses": self.losses, "error": self.error}


Listener = Callable[..., Awaitable[None]]


class WorkerPool:
    """Watches the workers (one heartbeat task each); ``on_lost``/``on_ready`` are set by whoever places channels."""

    def __init__(self, workers: list[Worker], *, ping_interval_s: float = PING_INTERVAL_S,
                 lost_after_s: float = LOST_AFTER_S, start_timeout_s: float = START_TIMEOUT_S):
        self.workers = workers
        self.ping_interval_s, self.lost_after_s, self.start_timeout_s = ping_interval_s, lost_after_s, start_timeout_s
        self.on_lost: Listener = _nothing
        self.on_ready: Listener = _nothing
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> list[Worker]:
        """Wait until every worker is warm (or failed); the ready ones, at least one (else ``ConfigError``)."""
        await asyncio.gather(*(self._wait_ready(worker, self.start_timeout_s) for worker in self.workers))
        ready = [w for w in self.workers if w.state == "ready"]
        if not ready:
            raise ConfigError("no renderer worker started: " + "; ".join(f"{w.id}: {w.error}" for w in self.workers))
        return ready

    def watch(self) -> None:
        """Start the heartbeats (after ``on_lost``/``on_ready`` are set)."""
        self._tasks = [asyncio.create_task(self._watch(worker), name=f"heartbeat-{worker.id}")
                       for worker in self.workers]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def health(self) -> list[dict]:
        return [worker.health() for worker in self.workers]

    # -- the heartbeat --------------------------------------------------------------------
    async def _watch(self, worker: Worker) -> None:
        while True:
            try:
                await self._beat(worker)
            except asyncio.CancelledError:
                raise
            except Exception:  # a listener failing must not end the heartbeat: the worker stays watched
                log.exception("worker %s: its heartbeat failed; watching on", worker.id)
                await asyncio.sleep(RETRY_S)

    async def _beat(self, worker: Worker) -> None:
        """One turn: wait for a worker that is not ready, else ping it once after ``ping_interval_s``."""
        import ray

        if worker.state != "ready":
            if await self._wait_ready(worker, self.start_timeout_s):
                await self.on_ready(worker)
            return
        await asyncio.sleep(self.ping_interval_s)
        try:
            pid = await asyncio.wait_for(_call(worker.actor.ping), self.lost_after_s)
        except asyncio.TimeoutError:
            await self._lose(worker, f"no heartbeat for {self.lost_after_s:g} s (hung, stopped or cut off)",
                             kill=True)
        except ray.exceptions.RayError as exc:
            await self._lose(worker, str(worker_error(worker.id, exc)).removeprefix(f"worker {worker.id} lost: "))
        else:
            if pid != worker.info.pid:  # died and came back between two heartbeats
                await self._lose(worker, f"restarted (pid {worker.info.pid}, now {pid})")

    async def _wait_ready(self, worker: Worker, timeout: float) -> bool:
        """Wait for the worker's renderer to be warm (Ray runs the call once the actor is up); False if not yet."""
        import ray

        try:
            info = await asyncio.wait_for(_call(worker.actor.info), timeout)
        except asyncio.TimeoutError:
            worker.error = f"not warm after {timeout:g} s"
            return False
        except ray.exceptions.RayError as exc:  # restarting (the call was cut off), or its start failed
            if worker.renderer is None:  # never started: why is the news (a lost one keeps why it was lost)
                if worker.error != (why := _first_line(exc)):
                    log.error("worker %s cannot start: %s", worker.id, why)
                worker.error = why
            else:
                log.info("worker %s not back yet: %s", worker.id, _first_line(exc))
            await asyncio.sleep(RETRY_S)
            return False
        if worker.renderer is None:
            worker.renderer = RemoteRenderer(worker.actor, worker.id, info)
        else:
            worker.renderer.reset(info)
        worker.state = "ready"
        log.info("worker %s ready: pid %d on node %s, %s, model %s (%s)", worker.id, info.pid, info.node, info.device,
                 info.model.get("model"), info.model.get("family"))
        return True

    async def _lose(self, worker: Worker, reason: str, kill: bool = False) -> None:
        info = worker.info
        worker.state, worker.losses = "lost", worker.losses + 1
        worker.error = f"worker {worker.id} (pid {info.pid} on node {info.node}) lost: {reason}"
        log.error("%s", worker.error)
        await self.on_lost(worker, worker.error)
        if kill:  # a hung process holds its GPU: Ray kills it and starts a fresh one
            import ray

            await asyncio.get_running_loop().run_in_executor(None, lambda: ray.kill(worker.actor, no_restart=False))


def _call(method) -> asyncio.Future:
    """One call of an actor's method in the heartbeat's own concurrency group, as an asyncio future."""
    return asyncio.wrap_future(method.options(concurrency_group="health").remote().future())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


async def _nothing(*args) -> None:
    return None
