"""The only module that wires: pipeline, scheduler, sinks and front ends into one daemon.

Each part starts and stops in one aiohttp cleanup context, in order; ``Daemon`` binds the
sockets and ``serve`` runs until a stop signal (``STOP_SIGNALS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import AsyncIterator, Callable

from aiohttp import web

from .frontends import (channels_api, connections, control_api, input_api, live, openapi, record_api, rest,
                        security, sockets, style_api)
from .config import Config, lora_folder
from .core.frame import NullRenderer, Renderer
from .frontends.osc import ADDRESSES, OscServer
from .core.params import Limits
from .engine.channels import MAIN, Channel, ChannelRegistry
from .engine.loras import LoraGate
from .engine.render_queue import RenderQueue
from .engine.render_thread import RenderThread
from .engine.startup import StartupPhases
from .engine.scheduler import Scheduler
from .engine.sinks.png import PngCache, PngFileWriter
from .engine.sinks.ndi import NdiSender
from .engine.sinks.record import Recorder
from .engine.sinks.shm import ShmWriter
from .frontends.streams import FrameEncoder, FrameHub

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
OSC = web.AppKey("osc", OscServer)
PNG_WRITER = web.AppKey("png_writer", PngFileWriter)
MODEL_INFO = web.AppKey("model_info", dict)
DEVICE_INFO = web.AppKey("device_info", list)  # one model info per device
OSC_SOCKET = web.AppKey("osc_socket", socket.socket)  # bound early by Daemon (see bridge.frontends.sockets)
GUARD = web.AppKey("connection_guard", connections.ConnectionGuard)
SHUTDOWN_TIMEOUT_S = 2.0  # handlers still running this long after SIGTERM are cancelled
FIRST_FRAME_WAIT_S = 30.0  # at start, for channel main's first frame (the model is warm by then)
RECORD_FINISH_TIMEOUT_S = 30.0  # at shutdown, for the recorder to finish its file


def load_renderer(config: Config) -> tuple[Renderer, dict]:
    """Load the configured pipeline and warm it up for the initial size (on the GPU thread)."""
    log.info("cache folder %s (demo model, compile caches)", config.cache_dir)
    if config.model == "null":
        return NullRenderer(), {"model": "null", "family": "none", "device": "none", "dtype": "none", "compile": False}
    phases = StartupPhases()
    with phases("imports"):  # torch, diffusers, transformers: seconds before anything else can happen
        from .pipeline import loader
        from .pipeline.batch import ChannelRenderer
        from .pipeline.optimize import configure_compile_cache
        from .pipeline.renderer import DiffusersRenderer

    device = config.device if config.device not in (None, "auto") else loader.default_device()
    loader.bind_thread(device)  # this is the device's render thread: everything after runs here
    dtype = loader.resolve_dtype(config.dtype, device)
    compile = config.compile == "on" or (config.compile == "auto" and device.startswith("cuda"))
    artifacts = None
    if compile:
        configure_compile_cache(config.cache_dir)
        if config.compile_artifacts:
            from .pipeline.compile_artifacts import CompileArtifacts

            artifacts = CompileArtifacts.for_renderer(config.cache_dir, config.model, config.vae, dtype, device,
                                                      controlnets=[s.source for s in config.controlnets],
                                                      ip_adapter=config.ip_adapter)
            with phases("compile_artifacts"):
                artifacts.load()
    elif config.compile_artifacts:
        log.info("--compile-artifacts on: nothing to do, this daemon does not compile (%s, --compile %s)", device,
                 config.compile)
    with phases("model"):  # the pipeline modules' own (lazy) imports count here
        vae = None if config.vae == "full" else loader.load_tiny_vae(config.vae, config.model, device, dtype)
        pipe = loader.load_pipeline(config.model, device, dtype, config.cache_dir, vae=vae, scheduler=config.scheduler)
        renderer = DiffusersRenderer(pipe, device, dtype, compile=compile, lora_dir=lora_folder(config),
                                     controlnets=load_controlnets(config, pipe, device, dtype),
                                     canny_thresholds=config.canny_thresholds,
                                     ip_adapter=load_ip_adapter(config, pipe, device, dtype))
    if compile:  # compile and capture for the initial size before the ports open
        with phases("warm_up"):
            renderer.render(config.initial)
        log.info("warm-up for %dx%d done in %.1f s", config.initial.width, config.initial.height,
                 phases.seconds["warm_up"])
        if artifacts is not None:
            renderer.after_compile = artifacts.save  # later sizes and graphs too
            with phases("compile_artifacts_save"):
                artifacts.save()
    log.info("start-up (%s): %s", device, phases.summary())
    info = {"model": config.model, "family": renderer.family.name, "scheduler": renderer.sampler, "device": device,
            "dtype": str(dtype).removeprefix("torch."), "vae": config.vae, "compile": compile,
            "controlnets": {spec.name: spec.source for spec in config.controlnets},
            "t2i_adapters": sorted(renderer.controlnets.adapters), "ip_adapter": config.ip_adapter,
            "startup_s": phases.rounded()}
    return ChannelRenderer(renderer), info  # several channels' frames batched, each with its own transitions


def resolve_devices(spec: str | None) -> list[str | None]:
    """``--device``: one device, a comma-separated list (one resident pipeline each), or ``all`` GPUs."""
    if spec is None:
        return [None]
    if spec == "all":
        from .pipeline import loader

        return loader.all_devices()
    return [part.strip() for part in spec.split(",") if part.strip()] or [None]


def load_controlnets(config: Config, pipe, device: str, dtype):
    """The ``--controlnet`` models, each loaded once (with progress) and resident."""
    from .pipeline.controlnet import ControlNets, load_controlnet

    return ControlNets({spec.name: load_controlnet(spec, pipe.unet.config, device, dtype)
                        for spec in config.controlnets})


def load_ip_adapter(config: Config, pipe, device: str, dtype):
    """The ``--ip-adapter`` (image encoder, projection, K/V weights), loaded once and resident; or None."""
    if config.ip_adapter is None:
        return None
    from .pipeline.family import family_of_pipeline
    from .pipeline.ip_adapter import load_ip_adapter as load

    return load(config.ip_adapter, pipe.unet, device, dtype, family_of_pipeline(pipe).name)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]] = load_renderer
               ) -> web.Application:
    security.check_exposure(config.host, config.access)
    app = web.Application(client_max_size=rest.MAX_BODY_BYTES)
    app[CONFIG] = config
    app[security.ACCESS] = config.access
    app[GUARD] = connections.ConnectionGuard(config.http)
    app[connections.HTTP_LIMITS] = config.http
    app[connections.LARGE_BODIES] = asyncio.Semaphore(config.http.max_large_bodies)
    app.middlewares.append(app[GUARD].middleware)  # outermost: marks the connection busy
    app.middlewares.append(security.middleware(config.host, config.access))  # before any route
    app.on_response_prepare.append(security.add_cors_headers)
    app[rest.OSC_ADDRESSES] = {**ADDRESSES, record_api.OSC_ADDRESS: "i: 1 starts recording, 0 stops (channel main)"}
    app[rest.SCHEMA_EXTRA] = {**live.SCHEMA, **input_api.SCHEMA, **channels_api.SCHEMA, **record_api.SCHEMA,
                              **control_api.SCHEMA, **style_api.SCHEMA}
    app[record_api.RECORDER] = recorder = Recorder(config.output_dir)  # records channel main
    ndi = NdiSender(config.ndi) if config.ndi else None  # sends channel main
    rest.add_routes(app)
    live.add_routes(app)
    input_api.add_routes(app)
    channels_api.add_routes(app)
    record_api.add_routes(app)
    control_api.add_routes(app)
    style_api.add_routes(app)
    openapi.add_routes(app)
    app.on_shutdown.extend([rest.end_long_polls, live.close_clients])  # before the cleanup contexts below unwind
    started = time.monotonic()

    async def executors(app: web.Application) -> AsyncIterator[None]:
        devices = resolve_devices(config.device)
        # One render thread per device; the first keeps the name "gpu".
        gpus = [RenderThread("gpu" if i == 0 else f"gpu{i}", config.render_spin_ms / 1e3) for i in range(len(devices))]
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
            queues = [RenderQueue(renderer, gpu, name=str(info.get("device", i)) if len(loaded) == 1
                                  else f"{i}:{info.get('device', i)}")
                      for i, ((renderer, info), gpu) in enumerate(zip(loaded, gpus))]
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
                # The render threads may still be finishing a frame into shared memory.
                await asyncio.gather(*(loop.run_in_executor(gpu, lambda: None) for gpu in gpus))
                # Then no frame comes any more: a recording ends in a finished file (SIGTERM too).
                await loop.run_in_executor(None, recorder.close, RECORD_FINISH_TIMEOUT_S)
                if ndi is not None:
                    await loop.run_in_executor(None, ndi.close, RECORD_FINISH_TIMEOUT_S)
        finally:
            for gpu in gpus:
                gpu.shutdown(wait=True)
            encoder.shutdown(wait=True)
            lora_loader.shutdown(wait=True)

    async def osc(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        sock = app[OSC_SOCKET] if OSC_SOCKET in app else sockets.bind_osc(config.host, config.osc_port)
        allow = security.SenderFilter(config.access.osc_allow) \
            if config.access.osc_allow or not security.is_loopback(config.host) else None
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: OscServer(app[rest.SCHEDULER], allow, app[rest.CHANNELS],
                              {record_api.OSC_ADDRESS: lambda args: record_api.osc_record(recorder, args)}),
            sock=sock)
        app[OSC] = protocol
        app[rest.CHANNELS].extend(protocol.attach, protocol.detach)
        try:
            yield
        finally:
            transport.close()

    async def png_files(app: web.Application) -> AsyncIterator[None]:
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

    async def streams(app: web.Application) -> AsyncIterator[None]:
        encoder = ThreadPoolExecutor(2, thread_name_prefix="stream-encode")

        def start(channel: Channel) -> None:
            sched = channel.scheduler
            hub = channel.services[live.HUB] = FrameHub(lambda: sched.latest)
            channel.services[live.ENCODER] = FrameEncoder(encoder, channel.services[rest.PNG_CACHE])
            channel.services[live.CLOSERS] = set()
            sched.on_frame(hub.publish)

        app[rest.CHANNELS].extend(start, lambda channel: live.close_channel_clients(channel.services))
        app[live.HUB] = app[rest.CHANNELS].main.services[live.HUB]
        app[live.ENCODER] = app[rest.CHANNELS].main.services[live.ENCODER]
        try:
            yield
        finally:
            for channel in app[rest.CHANNELS]:
                channel.services[live.HUB].close()
            encoder.shutdown(wait=True)

    async def live_input(app: web.Application) -> AsyncIterator[None]:
        decoder = ThreadPoolExecutor(1, thread_name_prefix="input")

        def start(channel: Channel) -> None:
            channel.services[input_api.INPUTS] = input_api.InputService(
                channel.scheduler, decoder, own_shm_name=config.shm_name)
            channel.services[control_api.CONTROLS] = control_api.ControlService(
                channel.scheduler, decoder, own_shm_name=config.shm_name)
            channel.services[style_api.STYLES] = style_api.StyleFeed(
                channel.scheduler, decoder, own_shm_name=config.shm_name, enabled=config.ip_adapter is not None)

        async def stop(channel: Channel) -> None:
            await channel.services[style_api.STYLES].detach()
            await channel.services[control_api.CONTROLS].detach()
            await channel.services[input_api.INPUTS].detach()

        app[rest.CHANNELS].extend(start, stop)
        app[input_api.INPUTS] = app[rest.CHANNELS].main.services[input_api.INPUTS]
        app[control_api.CONTROLS] = app[rest.CHANNELS].main.services[control_api.CONTROLS]
        app[style_api.STYLES] = app[rest.CHANNELS].main.services[style_api.STYLES]
        try:
            yield
        finally:
            for channel in app[rest.CHANNELS]:
                await stop(channel)
            decoder.shutdown(wait=True)

    async def channels(app: web.Application) -> AsyncIterator[None]:
        # Last in, first out: every channel is torn down while all its front ends still exist.
        try:
            yield
        finally:
            await app[rest.CHANNELS].close()

    def health() -> dict:
        sched = app[rest.SCHEDULER]
        latest = sched.latest
        out = {
            "status": "degraded" if sched.stats.failing or (PNG_WRITER in app and app[PNG_WRITER].error) else "ok",
            **app[MODEL_INFO],
            "version": sched.version,
            "frame_seq": latest.seq if latest else 0,
            "uptime_s": round(time.monotonic() - started, 3),
            "changes": sched.stats.changes,
            "rejected": sched.stats.rejected,
            "frames": sched.stats.frames,
            "render_errors": sched.stats.render_errors,
            "last_error": sched.stats.last_error,
            "last_stages_ms": {k: round(v, 3) for k, v in sched.stats.last_stages_ms.items()},
            "osc": app[OSC].health(),
            "http": app[GUARD].health(),
            "shm_name": config.shm_name,
            "streams": app[live.HUB].health(),
            "input": app[input_api.INPUTS].health(),
            "channels": app[rest.CHANNELS].health(),
            "max_channels": config.max_channels,
            "devices": [{**info, **queue} for info, queue in zip(app[DEVICE_INFO], app[rest.CHANNELS].devices())],
            "record": recorder.state(),
            "controls": app[control_api.CONTROLS].health(),
            "style": app[style_api.STYLES].health(),
        }
        if ndi is not None:
            out["ndi"] = ndi.health()
        if PNG_WRITER in app:
            out["png_files"] = app[PNG_WRITER].health()  # main's, also once the daemon stopped
        return out

    app[rest.HEALTH] = health
    app.cleanup_ctx.extend([executors, osc, png_files, streams, live_input, channels])
    return app


class Daemon:
    """Starts the app and binds its sockets; ``http_port``/``osc_port`` are the bound ports."""

    def __init__(self, config: Config, renderer_factory=load_renderer):
        self.config = config
        self.app = create_app(config, renderer_factory)
        # handler_cancellation: a long-poll whose client went away ends at once, not at its timeout.
        # keepalive_timeout: aiohttp closes a connection still waiting for a complete request head
        # (new, or idle after a response) this long after it opened or answered: slow clients go.
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT_S, handler_cancellation=True,
                                     keepalive_timeout=config.http.head_timeout_s)
        self.http_port = config.http_port
        self.osc_port = config.osc_port

    async def __aenter__(self) -> "Daemon":
        # Both ports first: one taken is reported at once, not after loading the model.
        http_sock = sockets.bind_http(self.config.host, self.config.http_port)
        try:
            self.app[OSC_SOCKET] = osc_sock = sockets.bind_osc(self.config.host, self.config.osc_port)
        except BaseException:
            http_sock.close()
            raise
        try:
            await self._runner.setup()
            await connections.GuardedSite(self._runner, http_sock, self.app[GUARD]).start()
        except BaseException:
            await self._runner.cleanup()
            http_sock.close()
            osc_sock.close()  # a no-op if the OSC transport took it and closed it
            raise
        self.http_address = self._runner.addresses[0][:2]
        self.osc_address = self.app[OSC].address
        self.http_port, self.osc_port = self.http_address[1], self.osc_address[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    @property
    def scheduler(self) -> Scheduler:
        return self.app[rest.SCHEDULER]

    @property
    def osc(self) -> OscServer:
        return self.app[OSC]

    def health(self) -> dict:
        return self.app[rest.HEALTH]()


# Every signal whose default would kill the daemon mid-frame stops it gracefully instead (clients
# told, segment unlinked). SIGHUP too: a closed terminal or `kill -HUP` means stop, not reload.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")


async def serve(config: Config) -> None:
    """Run the daemon until SIGINT, SIGTERM, SIGHUP, SIGUSR1 or SIGUSR2."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # For the whole run: asyncio's accept() retries can still fire after the server has closed.
    connections.install_loop_error_log(loop, config.http.log_interval_s)

    def stop_on(name: str) -> None:
        if not stop.is_set():
            log.info("%s received", name)
        stop.set()

    for name in STOP_SIGNALS:
        if hasattr(signal, name):  # Windows has only some of them, and no add_signal_handler
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(getattr(signal, name), stop_on, name)
    async with Daemon(config) as daemon:
        log.info("ready: http://%s:%d/v1/  OSC udp %s:%d  shared memory %r", config.host, daemon.http_port,
                 config.host, daemon.osc_port, config.shm_name)
        await stop.wait()
        log.info("shutting down")
