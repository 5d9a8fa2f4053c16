"""Wires the engine: where channels render (this host's devices, ``bridge.app.devices``, or a
cluster's workers, ``bridge.app.cluster``), the channel registry with each channel's outputs
(``bridge.app.outputs``), channel main first.

Each function here returns one aiohttp cleanup context: what it starts, it stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..config import Config
from ..core.params import SIZE_MULTIPLE, Limits
from ..core.renderer import Renderer
from ..engine.changes import ChangeDoor
from ..engine.channel import Channel
from ..engine.channel_outputs import ChannelOutputs
from ..engine.channels import MAIN, ChannelRegistry
from ..frontends.http import record_api, rest
from ..outputs.png import PngCache
from ..outputs.record import Recorder
from . import outputs
from .cluster import cluster_devices
from .devices import Devices, local_devices
from .renderers import initial_params

log = logging.getLogger(__name__)

MODEL_INFO = web.AppKey("model_info", dict)
DEVICES = web.AppKey("devices", object)  # where channels render (app.devices.Devices): local or a cluster
MAIN_OUTPUTS = web.AppKey("main_outputs", ChannelOutputs)  # kept for /v1/health, also once stopped
FIRST_FRAME_WAIT_S = 30.0  # at start, for channel main's first frame (the model is warm by then)
PNG_FRAMES_KEPT = 4  # encoded frames kept per channel (HTTP clients asking for the same frame)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def render_engine(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]]) -> CleanupContext:
    """Loads a renderer per device (or starts a cluster's renderer workers) and makes the channel registry
    with channel main (``rest.CHANNELS``) and the door every change enters by (``rest.DOOR``)."""

    async def executors(app: web.Application) -> AsyncIterator[None]:
        encoder = ThreadPoolExecutor(2, thread_name_prefix="encode")
        lora_loader = ThreadPoolExecutor(1, thread_name_prefix="lora-loader")
        try:
            png_cache = PngCache(encoder, keep=PNG_FRAMES_KEPT * config.max_channels)
            made = outputs.factory(config, outputs.OutputParts(png_cache))
            # main's outputs first: a live daemon of the same --shm-name, a missing NDI library or an
            # output folder that cannot be made is refused before loading a model.
            main_outputs = app[MAIN_OUTPUTS] = ChannelOutputs(MAIN, made(MAIN))
            await main_outputs.start()
            app[record_api.RECORDER] = outputs.find(main_outputs, Recorder)
            where = cluster_devices(config, lora_loader) if config.cluster is not None \
                else local_devices(config, renderer_factory, lora_loader)
            try:
                async with where as devices, _channels(app, config, devices, made, png_cache):
                    yield
            finally:
                await main_outputs.close()  # closed with channel main already, unless the devices never came up
        finally:
            encoder.shutdown(wait=True)
            lora_loader.shutdown(wait=True, cancel_futures=True)  # a load running finishes; none queued starts

    return executors


@contextlib.asynccontextmanager
async def _channels(app: web.Application, config: Config, devices: Devices, made, png_cache: PngCache
                    ) -> AsyncIterator[None]:
    """The channel registry on ``devices`` with channel main, until the daemon stops."""
    app[DEVICES] = devices
    app[MODEL_INFO] = devices.model_info
    registry = app[rest.CHANNELS] = ChannelRegistry(
        devices.queues, initial=initial_params(config, devices.model_info), outputs=made,
        limits=Limits(config.max_size, devices.model_info.get("size_multiple", SIZE_MULTIPLE),
                      tuple(spec.name for spec in config.controlnets), style=config.ip_adapter is not None,
                      min_guidance=devices.model_info.get("min_guidance", 0.0),
                      default_guidance=devices.model_info.get("default_guidance", 0.0),
                      guidance_mode=devices.model_info.get("guidance_mode", "cfg")),
        max_channels=config.max_channels)

    def png_cache_of(channel: Channel) -> None:
        channel.services[rest.PNG_CACHE] = png_cache

    registry.extend(png_cache_of)
    main = await registry.create(MAIN, outputs=app[MAIN_OUTPUTS])
    app[rest.SCHEDULER] = main.scheduler
    app[rest.DOOR] = ChangeDoor(main.scheduler, registry)  # every front end's changes enter here
    app[rest.PNG_CACHE] = png_cache
    await devices.attach(registry)
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
