"""Where channels render: this host's devices (``--device``), each a render thread, a warm renderer and
a render queue. ``bridge.app.cluster`` is the other kind: a Ray cluster's renderer workers.

Both are async context managers yielding a ``Devices`` value: what they start, they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..config import Config
from ..core.renderer import MAX_IN_FLIGHT, Renderer
from ..engine.channel import Channel
from ..engine.channels import ChannelRegistry
from ..engine.loras import LoraGate
from ..engine.overlap_queue import OverlappingQueue
from ..engine.render_queue import RenderQueue
from ..engine.render_thread import RenderThread
from .renderers import lora_refusal, resolve_devices


class Devices(Protocol):
    """What the engine's wiring and the daemon's health need of where channels render."""

    queues: list[RenderQueue]  # the devices ready at start, in order (the first is main's)
    model_info: dict  # the model's health info (model, family, device, dtype...)

    def info(self, queue: RenderQueue) -> dict:
        """The model info of one device (its device name, start-up phases...)."""

    async def attach(self, registry: ChannelRegistry) -> None:
        """The channels exist: start watching the devices (a cluster moves channels off a lost worker)."""

    def fault(self) -> str | None:
        """What degrades the daemon now (a lost worker whose channels do not render yet), else None."""

    def health(self, registry: ChannelRegistry) -> dict:
        """More top-level health keys (a cluster's ``workers``)."""

    def channel_health(self, channel: Channel) -> dict:
        """More keys of a channel's health (a cluster's ``worker``)."""


@dataclass
class LocalDevices:
    """``--device``: one render thread and warm renderer per device of this host."""

    queues: list[RenderQueue]
    infos: dict[RenderQueue, dict] = field(default_factory=dict)

    @property
    def model_info(self) -> dict:
        return self.infos[self.queues[0]]

    def info(self, queue: RenderQueue) -> dict:
        return self.infos[queue]

    async def attach(self, registry: ChannelRegistry) -> None:
        """Nothing to watch: a local device fails frame by frame (render errors), it is not lost."""

    def fault(self) -> str | None:
        return None

    def health(self, registry: ChannelRegistry) -> dict:
        return {}

    def channel_health(self, channel: Channel) -> dict:
        return {}


@contextlib.asynccontextmanager
async def local_devices(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]],
                        lora_loader: Executor) -> AsyncIterator[LocalDevices]:
    """Each device loads its own pipeline on its own render thread, all at once."""
    devices = resolve_devices(config.device)
    # One render thread per device; the first keeps the name "gpu".
    gpus = [RenderThread("gpu" if i == 0 else f"gpu{i}", config.render_spin_ms / 1e3) for i in range(len(devices))]
    # --overlap on: each device's frames finish and publish on a thread of their own, so its render
    # thread begins the next frame while one decodes (Renderer.begin_batch).
    publishers = [RenderThread(f"{gpu.name}-out") for gpu in gpus] if config.overlap else []
    loop = asyncio.get_running_loop()
    try:
        loaded = await asyncio.gather(*(
            loop.run_in_executor(gpu, renderer_factory, config if device is None else replace(config, device=device))
            for gpu, device in zip(gpus, devices)))
        queues = [_queue(renderer, gpu, publishers[i] if publishers else None,
                         str(info.get("device", i)) if len(loaded) == 1 else f"{i}:{info.get('device', i)}",
                         config.batch_window_ms / 1e3, info.get("render_lanes", 1))
                  for i, ((renderer, info), gpu) in enumerate(zip(loaded, gpus))]
        for queue, (_, info) in zip(queues, loaded):  # each device folds LoRAs into its own UNet, from its own catalog
            queue.loras = LoraGate(queue.renderer.lora_catalog, lora_loader, lora_refusal(info))
        try:
            yield LocalDevices(queues, {queue: info for queue, (_, info) in zip(queues, loaded)})
        finally:
            for queue in queues:
                await queue.close()
            # The render (and publishing) threads may still be finishing a frame.
            await asyncio.gather(*(loop.run_in_executor(worker, lambda: None) for worker in (*gpus, *publishers)))
    finally:
        for worker in (*gpus, *publishers):
            worker.shutdown(wait=True)


def _queue(renderer: Renderer, gpu: RenderThread, publisher: RenderThread | None, name: str,
           join_window_s: float, render_lanes: int) -> RenderQueue:
    """``render_lanes``: the lanes the loaded renderer runs (its health info's: 1 where frames are not graphed)."""
    if publisher is None:
        return RenderQueue(renderer, gpu, name, join_window_s=join_window_s)
    # a frame in flight per render lane, and at least MAX_IN_FLIGHT (one decoding while the next one begins)
    return OverlappingQueue(renderer, gpu, publisher, name, join_window_s=join_window_s,
                            max_in_flight=max(MAX_IN_FLIGHT, render_lanes))
