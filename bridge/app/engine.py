"""Wires the engine: a render thread, renderer and render queue per device, the channel registry
with each channel's outputs (``bridge.app.outputs``), channel main first.

Each function here returns one aiohttp cleanup context: what it starts, it stops.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..core.renderer import Renderer
from ..core.params import Limits
from ..engine.changes import ChangeDoor
from ..engine.channel_outputs import ChannelOutputs
from ..engine.channels import MAIN, Channel, ChannelRegistry
from ..engine.loras import LoraGate
from ..engine.overlap_queue import OverlappingQueue
from ..engine.render_queue import RenderQueue
from ..engine.render_thread import RenderThread
from ..frontends.http import record_api, rest
from ..outputs.png import PngCache
from ..outputs.record import Recorder
from . import outputs
from .renderers import resolve_devices

log = logging.getLogger(__name__)

MODEL_INFO = web.AppKey("model_info", dict)
DEVICE_INFO = web.AppKey("device_info", list)  # one model info per device
MAIN_OUTPUTS = web.AppKey("main_outputs", ChannelOutputs)  # kept for /v1/health, also once stopped
FIRST_FRAME_WAIT_S = 30.0  # at start, for channel main's first frame (the model is warm by then)
PNG_FRAMES_KEPT = 4  # encoded frames kept per channel (HTTP clients asking for the same frame)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def render_engine(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]]) -> CleanupContext:
    """Loads a renderer per device and makes the channel registry with channel main (``rest.CHANNELS``)
    and the door every change enters by (``rest.DOOR``)."""

    async def executors(app: web.Application) -> AsyncIterator[None]:
        devices = resolve_devices(config.device)
        # One render thread per device; the first keeps the name "gpu".
        gpus = [RenderThread("gpu" if i == 0 else f"gpu{i}", config.render_spin_ms / 1e3) for i in range(len(devices))]
        # --overlap on: each device's frames finish and publish on a thread of their own, so its render
        # thread begins the next frame while one decodes (Renderer.begin_batch).
        publishers = [RenderThread(f"{gpu.name}-out") for gpu in gpus] if config.overlap else []
        encoder = ThreadPoolExecutor(2, thread_name_prefix="encode")
        lora_loader = ThreadPoolExecutor(1, thread_name_prefix="lora-loader")
        loop = asyncio.get_running_loop()
        try:
            png_cache = PngCache(encoder, keep=PNG_FRAMES_KEPT * config.max_channels)
            made = outputs.factory(config, outputs.OutputParts(png_cache))
            # main's outputs first: a live daemon of the same --shm-name, a missing NDI library or an
            # output folder that cannot be made is refused before loading a model.
            main_outputs = app[MAIN_OUTPUTS] = ChannelOutputs(MAIN, made(MAIN))
            await main_outputs.start()
            app[record_api.RECORDER] = outputs.find(main_outputs, Recorder)
            # Each device loads its own pipeline on its own thread, all at once.
            try:
                loaded = await asyncio.gather(*(
                    loop.run_in_executor(gpu, renderer_factory,
                                         config if device is None else replace(config, device=device))
                    for gpu, device in zip(gpus, devices)))
            except BaseException:
                await main_outputs.close()
                raise
            app[MODEL_INFO] = loaded[0][1]
            app[DEVICE_INFO] = [info for _, info in loaded]
            queues = [_queue(renderer, gpu, publishers[i] if publishers else None,
                             str(info.get("device", i)) if len(loaded) == 1 else f"{i}:{info.get('device', i)}")
                      for i, ((renderer, info), gpu) in enumerate(zip(loaded, gpus))]
            for queue in queues:  # each device folds LoRAs into its own UNet, from its own catalog
                queue.loras = LoraGate(queue.renderer.lora_catalog, lora_loader)
            registry = app[rest.CHANNELS] = ChannelRegistry(
                queues, initial=config.initial, outputs=made,
                limits=Limits(config.max_size, tuple(spec.name for spec in config.controlnets),
                              style=config.ip_adapter is not None),
                max_channels=config.max_channels)

            def png_cache_of(channel: Channel) -> None:
                channel.services[rest.PNG_CACHE] = png_cache

            registry.extend(png_cache_of)
            main = await registry.create(MAIN, outputs=main_outputs)
            app[rest.SCHEDULER] = main.scheduler
            app[rest.DOOR] = ChangeDoor(main.scheduler, registry)  # every front end's changes enter here
            app[rest.PNG_CACHE] = png_cache
            # Serve once main's first frame is out (or failed): a client's first change then never
            # races the initial frame, which would otherwise answer its wait with the older state.
            if not await main.scheduler.first_frame(FIRST_FRAME_WAIT_S):
                log.warning("no first frame after %.0f s; serving anyway", FIRST_FRAME_WAIT_S)
            try:
                yield
            finally:
                # Normally already closed by the channels context. Each channel's outputs close once its
                # last frame is out: a recording ends in a finished file (SIGTERM too).
                await registry.close()
                for queue in queues:
                    await queue.close()
                # The render (and publishing) threads may still be finishing a frame.
                await asyncio.gather(*(loop.run_in_executor(worker, lambda: None) for worker in (*gpus, *publishers)))
        finally:
            for worker in (*gpus, *publishers):
                worker.shutdown(wait=True)
            encoder.shutdown(wait=True)
            lora_loader.shutdown(wait=True)

    return executors


def _queue(renderer: Renderer, gpu: RenderThread, publisher: RenderThread | None, name: str) -> RenderQueue:
    return RenderQueue(renderer, gpu, name) if publisher is None else OverlappingQueue(renderer, gpu, publisher, name)
