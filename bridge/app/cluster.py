"""``--cluster ray``: channels render on a Ray cluster's renderer workers instead of this host's devices.

Each worker is a render queue of the daemon (its own render thread, which waits for the worker's
frames) whose renderer is the worker's proxy (``bridge.cluster.proxy.RemoteRenderer``), so
placement by load, rebalancing and batching are the engine's, as with ``--device``. The daemon
keeps every channel's state and every client door; a worker only renders.

Faults: the pool (``bridge.cluster.pool``) reports a lost worker; its queue is withdrawn (its
channels move, whole, to the least loaded workers left and render their current state again
there) and health is ``degraded``, ``last_error`` naming the worker, until every moved channel has
rendered again. A worker back (Ray restarted it) is restored and the channels rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

from ..cluster import ray_cluster
from ..cluster.pool import Worker, WorkerPool
from ..cluster.proxy import WorkerLostError
from ..config import Config
from ..engine.channel import Channel
from ..engine.channels import ChannelRegistry
from ..engine.loras import LoraGate
from ..engine.render_queue import RenderQueue
from ..engine.render_thread import RenderThread
from .renderers import load_worker_renderer

log = logging.getLogger(__name__)

THREAD_JOIN_S = 10.0  # a render thread still waiting for a worker at shutdown is left behind (a daemon thread)


@dataclass(eq=False)
class Fault:
    """A lost worker and the channels it had, each with its frame count then: resolved once all rendered again."""

    message: str
    channels: dict[str, tuple[Channel, int]] = field(default_factory=dict)

    def pending(self, registry: ChannelRegistry) -> list[str]:
        return [name for name, (channel, frames) in self.channels.items()
                if registry.get(name) is channel and channel.scheduler.stats.frames <= frames]


class ClusterDevices:
    """The renderer workers as render queues (``bridge.app.devices.Devices``)."""

    def __init__(self, config: Config, joined: ray_cluster.Joined, pool: WorkerPool, lora_loader: Executor):
        self._config, self.joined, self.pool, self._lora_loader = config, joined, pool, lora_loader
        self._queues: dict[str, RenderQueue] = {}  # by worker id, made when the worker is first ready
        self._threads: list[RenderThread] = []
        self._registry: ChannelRegistry | None = None
        self._faults: list[Fault] = []
        self.queues: list[RenderQueue] = [self._queue_of(w) for w in pool.workers if w.state == "ready"]

    def _queue_of(self, worker: Worker) -> RenderQueue:
        queue = self._queues.get(worker.id)
        if queue is None:
            thread = RenderThread(f"ray-{worker.id}", self._config.render_spin_ms / 1e3)
            self._threads.append(thread)
            queue = self._queues[worker.id] = RenderQueue(worker.renderer, thread, name=worker.id,
                                                          join_window_s=self._config.batch_window_ms / 1e3)
            queue.loras = LoraGate(worker.renderer.lora_catalog, self._lora_loader)
        return queue

    @property
    def model_info(self) -> dict:
        return {**self.info(self.queues[0]), "cluster": "ray"}

    def info(self, queue: RenderQueue) -> dict:
        worker = next(w for w in self.pool.workers if w.id == queue.name)
        return {**worker.info.model, "worker": worker.id, "node": worker.info.node}

    async def attach(self, registry: ChannelRegistry) -> None:
        self._registry = registry
        self.pool.on_lost, self.pool.on_ready = self._lost, self._ready
        self.pool.watch()

    async def _lost(self, worker: Worker, message: str) -> None:
        queue = self._queues.get(worker.id)
        if queue is None or self._registry is None:
            return
        fault = Fault(message, {c.name: (c, c.scheduler.stats.frames) for c in self._registry if c.queue is queue})
        self._faults.append(fault)
        moved = await self._registry.withdraw(queue, WorkerLostError(message))
        log.warning("%s; channels %s moved to %s", message, moved or "none",
                    ", ".join(q.name for q in self._registry.queues) or "no worker (they wait for one)")

    async def _ready(self, worker: Worker) -> None:
        if self._registry is None:
            return
        moved = await self._registry.restore(self._queue_of(worker))
        log.info("worker %s back; %d channel(s) moved onto it", worker.id, moved)

    def fault(self) -> str | None:
        if self._registry is None:
            return None
        self._faults = [f for f in self._faults if f.pending(self._registry)]
        return self._faults[-1].message if self._faults else None

    def health(self, registry: ChannelRegistry) -> dict:
        workers = []
        for item in self.pool.health():
            queue = self._queues.get(item["id"])
            workers.append({**item, "channels": [c.name for c in registry if queue is not None and c.queue is queue]})
        return {"cluster": {"kind": "ray", "address": self.joined.address, "started_here": self.joined.local,
                            "auth": self.joined.auth, "gpus": self.joined.gpus},
                "workers": workers}

    def channel_health(self, channel: Channel) -> dict:
        return {"worker": channel.queue.name}

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()

    def join_threads(self) -> None:
        for thread in self._threads:
            thread.shutdown(wait=False)
        for thread in self._threads:
            if not thread.join(THREAD_JOIN_S):
                log.warning("render thread %s still waits for its worker; left behind", thread.name)


@contextlib.asynccontextmanager
async def cluster_devices(config: Config, lora_loader: Executor) -> AsyncIterator[ClusterDevices]:
    """Join (or start) the cluster, start a renderer worker per GPU and wait until they are warm; at the
    end kill them and leave (a cluster started here stops)."""
    loop = asyncio.get_running_loop()
    joined = await loop.run_in_executor(None, ray_cluster.connect, config.cluster)
    workers: list[Worker] = []
    devices: ClusterDevices | None = None
    try:
        workers = await loop.run_in_executor(None, ray_cluster.start_workers, joined, config.cluster,
                                             load_worker_renderer, config)
        pool = WorkerPool(workers)
        try:
            await pool.start()
            devices = ClusterDevices(config, joined, pool, lora_loader)
            yield devices
        finally:
            await pool.close()
            if devices is not None:
                await devices.close()
    finally:
        await loop.run_in_executor(None, ray_cluster.stop_workers, workers)
        if devices is not None:
            await loop.run_in_executor(None, devices.join_threads)
        await loop.run_in_executor(None, ray_cluster.disconnect, joined)
