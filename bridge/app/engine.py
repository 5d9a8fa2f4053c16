"""Wires the engine: a render thread, renderer and render queue per device, the channel registry,
channel main's segment and extra sinks (recorder, NDI), and the PNG files of ``--output-dir``.

Each function here returns one aiohttp cleanup context: what it starts, it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..core.frame import Renderer, StagedRenderer
from ..core.params import Limits
from ..engine.channels import MAIN, Channel, ChannelRegistry
from ..engine.loras import LoraGate
from ..engine.overlap_queue import OverlappingQueue
from ..engine.render_queue import RenderQueue
from ..engine.render_thread import RenderThread
from ..outputs.ndi import NdiSender
from ..outputs.png import PngCache, PngFileWriter
from ..outputs.record import Recorder
from ..outputs.shm import ShmWriter
from ..frontends.http import rest
from .renderers import resolve_devices

log = logging.getLogger(__name__)

PNG_WRITER = web.AppKey("png_writer", PngFileWriter)
MODEL_INFO = web.AppKey("model_info", dict)
DEVICE_INFO = web.AppKey("device_info", list)  # one model info per device
FIRST_FRAME_WAIT_S = 30.0  # at start, for channel main's first frame (the model is warm by then)
RECORD_FINISH_TIMEOUT_S = 30.0  # at shutdown, for the recorder to finish its file

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def render_engine(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]], recorder: Recorder,
                  ndi: NdiSender | None) -> CleanupContext:
    """Loads a renderer per device and makes the channel registry with channel main (``rest.CHANNELS``)."""

    async def executors(app: web.Application) -> AsyncIterator[None]:
        devices = resolve_devices(config.device)
        # One render thread per device; the first keeps the name "gpu".
        gpus = [RenderThread("gpu" if i == 0 else f"gpu{i}", config.render_spin_ms / 1e3) for i in range(len(devices))]
        publishers: list[RenderThread | None] = []  # with --overlap on: one per device
        encoder = ThreadPoolExecutor(2, thread_name_prefix="encode")
        lora_loader = ThreadPoolExecutor(1, thread_name_prefix="lora-loader")
        loop = asyncio.get_running_loop()
        try:
            # main's segment first: a live daemon of the same --shm-name is refused before loading a model.
            main_shm = ShmWriter(config.shm_name, config.max_size, config.max_size) if config.shm_name else None
            if main_shm is not None:
                main_shm.open()
            # Each device loads its own pipeline on its own thread, all at once.
            try:
                loaded = await asyncio.gather(*(
                    loop.run_in_executor(gpu, renderer_factory,
                                         config if device is None else replace(config, device=device))
                    for gpu, device in zip(gpus, devices)))
            except BaseException:
                if main_shm is not None:
                    main_shm.close()
                raise
            app[MODEL_INFO] = loaded[0][1]
            app[DEVICE_INFO] = [info for _, info in loaded]
            # --overlap on: each device's frames publish on a thread of their own, so its render thread
            # takes the next frame while one decodes (a model that cannot overlap, e.g. null, does not).
            publishers.extend(RenderThread(f"{gpu.name}-out") if config.overlap and isinstance(renderer, StagedRenderer)
                              else None for (renderer, _), gpu in zip(loaded, gpus))
            queues = [_queue(renderer, gpu, publisher, str(info.get("device", i)) if len(loaded) == 1
                             else f"{i}:{info.get('device', i)}")
                      for i, ((renderer, info), gpu, publisher) in enumerate(zip(loaded, gpus, publishers))]
            for queue in queues:  # each device folds LoRAs into its own UNet, from its own catalog
                queue.loras = LoraGate(getattr(getattr(queue.renderer, "loras", None), "catalog", None), lora_loader)
            registry = app[rest.CHANNELS] = ChannelRegistry(
                queues, initial=config.initial, shm_name=config.shm_name,
                limits=Limits(config.max_size, tuple(spec.name for spec in config.controlnets),
                              style=config.ip_adapter is not None),
                max_channels=config.max_channels)

            def png_cache(channel: Channel) -> None:
                channel.services[rest.PNG_CACHE] = PngCache(encoder)

            registry.extend(png_cache)
            if ndi is not None:
                ndi.start()
            main = registry.create(MAIN, shm=main_shm, sinks=tuple(s for s in (recorder, ndi) if s is not None))
            app[rest.SCHEDULER] = main.scheduler
            app[rest.PNG_CACHE] = main.services[rest.PNG_CACHE]
            # Serve once main's first frame is out (or failed): a client's first change then never
            # races the initial frame, which would otherwise answer its wait with the older state.
            if not await main.scheduler.first_frame(FIRST_FRAME_WAIT_S):
                log.warning("no first frame after %.0f s; serving anyway", FIRST_FRAME_WAIT_S)
            try:
                yield
            finally:
                await registry.close()  # normally already closed by the channels context
                for queue in queues:
                    await queue.close()
                # The render and publishing threads may still be finishing a frame into shared memory.
                await asyncio.gather(*(loop.run_in_executor(worker, lambda: None)
                                       for worker in (*gpus, *publishers) if worker is not None))
                # Then no frame comes any more: a recording ends in a finished file (SIGTERM too).
                await loop.run_in_executor(None, recorder.close, RECORD_FINISH_TIMEOUT_S)
                if ndi is not None:
                    await loop.run_in_executor(None, ndi.close, RECORD_FINISH_TIMEOUT_S)
        finally:
            for worker in (*gpus, *publishers):
                if worker is not None:
                    worker.shutdown(wait=True)
            encoder.shutdown(wait=True)
            lora_loader.shutdown(wait=True)

    return executors


def _queue(renderer: Renderer, gpu: RenderThread, publisher: RenderThread | None, name: str) -> RenderQueue:
    return RenderQueue(renderer, gpu, name) if publisher is None else OverlappingQueue(renderer, gpu, publisher, name)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def png_files(config: Config) -> CleanupContext:
    """Writes every channel's frames as PNG files into ``--output-dir`` (nothing without one)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if config.output_dir is None:
            yield
            return
        files = ThreadPoolExecutor(1, thread_name_prefix="png-files")
        config.output_dir.mkdir(parents=True, exist_ok=True)  # at start, parents too; an error stops the start

        def start(channel: Channel) -> None:
            # main keeps --output-dir itself; channel NAME writes into its folder NAME there.
            folder = config.output_dir if channel.name == MAIN else config.output_dir / channel.name
            folder.mkdir(exist_ok=True)
            writer = PngFileWriter(folder, channel.services[rest.PNG_CACHE], files, config.keep_frames,
                                   on_error=channel.scheduler.broadcast_error)
            channel.services[PNG_WRITER] = writer
            channel.scheduler.on_frame(writer.offer)
            if channel.scheduler.latest is not None:  # main's first frame is out before the writer starts
                writer.offer(channel.scheduler.latest)
            channel.services["png-writer-task"] = asyncio.create_task(writer.run(), name=f"png-writer-{channel.name}")

        async def stop(channel: Channel) -> None:
            task = channel.services.pop("png-writer-task", None)
            if task is not None:
                await _cancel(task)

        app[rest.CHANNELS].extend(start, stop)
        app[PNG_WRITER] = app[rest.CHANNELS].main.services[PNG_WRITER]
        try:
            yield
        finally:
            for channel in app[rest.CHANNELS]:
                await stop(channel)
            files.shutdown(wait=True)

    return context
