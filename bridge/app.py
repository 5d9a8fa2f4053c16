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
from typing import AsyncIterator, Callable

from aiohttp import web

from .frontends import connections, control_api, input_api, live, openapi, record_api, rest, security, sockets
from .config import Config, lora_folder
from .core.frame import NullRenderer, Renderer
from .frontends.osc import ADDRESSES, OscServer
from .core.params import Limits
from .engine.loras import LoraGate
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
OSC_SOCKET = web.AppKey("osc_socket", socket.socket)  # bound early by Daemon (see bridge.frontends.sockets)
GUARD = web.AppKey("connection_guard", connections.ConnectionGuard)
SHUTDOWN_TIMEOUT_S = 2.0  # handlers still running this long after SIGTERM are cancelled
RECORD_FINISH_TIMEOUT_S = 30.0  # at shutdown, for the recorder to finish its file


def load_renderer(config: Config) -> tuple[Renderer, dict]:
    """Load the configured pipeline and warm it up for the initial size (on the GPU thread)."""
    log.info("cache folder %s (demo model, compile caches)", config.cache_dir)
    if config.model == "null":
        return NullRenderer(), {"model": "null", "family": "none", "device": "none", "dtype": "none", "compile": False}
    phases = StartupPhases()
    with phases("imports"):  # torch, diffusers, transformers: seconds before anything else can happen
        from .pipeline import loader
        from .pipeline.optimize import configure_compile_cache
        from .pipeline.renderer import DiffusersRenderer

    device = config.device or loader.default_device()
    dtype = loader.resolve_dtype(config.dtype, device)
    compile = config.compile == "on" or (config.compile == "auto" and device.startswith("cuda"))
    artifacts = None
    if compile:
        configure_compile_cache(config.cache_dir)
        if config.compile_artifacts:
            from .pipeline.compile_artifacts import CompileArtifacts

            artifacts = CompileArtifacts.for_renderer(config.cache_dir, config.model, config.vae, dtype, device,
                                                      controlnets=[s.source for s in config.controlnets])
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
                                     canny_thresholds=config.canny_thresholds)
    if compile:  # compile and capture for the initial size before the ports open
        with phases("warm_up"):
            renderer.render(config.initial)
        log.info("warm-up for %dx%d done in %.1f s", config.initial.width, config.initial.height,
                 phases.seconds["warm_up"])
        if artifacts is not None:
            renderer.after_compile = artifacts.save  # later sizes and graphs too
            with phases("compile_artifacts_save"):
                artifacts.save()
    log.info("start-up: %s", phases.summary())
    info = {"model": config.model, "family": renderer.family.name, "scheduler": renderer.sampler, "device": device, "dtype": str(dtype).removeprefix("torch."),
            "vae": config.vae, "compile": compile,
            "controlnets": {spec.name: spec.source for spec in config.controlnets},
            "startup_s": phases.rounded()}
    return renderer, info


def load_controlnets(config: Config, pipe, device: str, dtype):
    """The ``--controlnet`` models, each loaded once (with progress) and resident."""
    from .pipeline.controlnet import ControlNets, load_controlnet

    return ControlNets({spec.name: load_controlnet(spec, pipe.unet.config, device, dtype)
                        for spec in config.controlnets})


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
    app[rest.OSC_ADDRESSES] = {**ADDRESSES, record_api.OSC_ADDRESS: "i: 1 starts recording, 0 stops"}
    app[rest.SCHEMA_EXTRA] = {**live.SCHEMA, **input_api.SCHEMA, **record_api.SCHEMA, **control_api.SCHEMA}
    app[record_api.RECORDER] = recorder = Recorder(config.output_dir)
    ndi = NdiSender(config.ndi) if config.ndi else None
    rest.add_routes(app)
    live.add_routes(app)
    input_api.add_routes(app)
    record_api.add_routes(app)
    control_api.add_routes(app)
    openapi.add_routes(app)
    app.on_shutdown.extend([rest.end_long_polls, live.close_clients])  # before the cleanup contexts below unwind
    started = time.monotonic()

    async def executors(app: web.Application) -> AsyncIterator[None]:
        gpu = RenderThread("gpu", config.render_spin_ms / 1e3)
        encoder = ThreadPoolExecutor(2, thread_name_prefix="encode")
        lora_loader = ThreadPoolExecutor(1, thread_name_prefix="lora-loader")
        loop = asyncio.get_running_loop()
        try:
            # The segment first: a live daemon of the same --shm-name is refused before loading a model.
            with ShmWriter(config.shm_name, config.max_size, config.max_size) if config.shm_name \
                    else contextlib.nullcontext() as shm:
                renderer, info = await loop.run_in_executor(gpu, renderer_factory, config)
                app[MODEL_INFO] = info
                sinks = [sink for sink in (shm, recorder, ndi) if sink is not None]
                if ndi is not None:
                    ndi.start()
                sched = Scheduler(renderer, gpu, initial=config.initial,
                                  limits=Limits(config.max_size, tuple(s.name for s in config.controlnets)),
                                  sinks=sinks,
                                  loras=LoraGate(getattr(getattr(renderer, "loras", None), "catalog", None),
                                                 lora_loader))
                app[rest.SCHEDULER] = sched
                app[rest.PNG_CACHE] = PngCache(encoder)
                render_task = asyncio.create_task(sched.run(), name="render-loop")
                try:
                    yield
                finally:
                    await _cancel(render_task)
                    # The GPU thread may still be finishing a frame into shared memory.
                    await loop.run_in_executor(gpu, lambda: None)
                    # Then no frame comes any more: a recording ends in a finished file (SIGTERM too).
                    await loop.run_in_executor(None, recorder.close, RECORD_FINISH_TIMEOUT_S)
                    if ndi is not None:
                        await loop.run_in_executor(None, ndi.close, RECORD_FINISH_TIMEOUT_S)
        finally:
            gpu.shutdown(wait=True)
            encoder.shutdown(wait=True)
            lora_loader.shutdown(wait=True)

    async def osc(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        sock = app[OSC_SOCKET] if OSC_SOCKET in app else sockets.bind_osc(config.host, config.osc_port)
        allow = security.SenderFilter(config.access.osc_allow) \
            if config.access.osc_allow or not security.is_loopback(config.host) else None
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: OscServer(app[rest.SCHEDULER], allow,
                              {record_api.OSC_ADDRESS: lambda args: record_api.osc_record(recorder, args)}),
            sock=sock)
        app[OSC] = protocol
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
        writer = PngFileWriter(config.output_dir, app[rest.PNG_CACHE], files, config.keep_frames,
                               on_error=app[rest.SCHEDULER].broadcast_error)
        app[PNG_WRITER] = writer
        app[rest.SCHEDULER].on_frame(writer.offer)
        task = asyncio.create_task(writer.run(), name="png-writer")
        try:
            yield
        finally:
            await _cancel(task)
            files.shutdown(wait=True)

    async def streams(app: web.Application) -> AsyncIterator[None]:
        sched = app[rest.SCHEDULER]
        encoder = ThreadPoolExecutor(2, thread_name_prefix="stream-encode")
        hub = FrameHub(lambda: sched.latest)
        app[live.HUB] = hub
        app[live.ENCODER] = FrameEncoder(encoder, app[rest.PNG_CACHE])
        sched.on_frame(hub.publish)
        try:
            yield
        finally:
            hub.close()
            encoder.shutdown(wait=True)

    async def live_input(app: web.Application) -> AsyncIterator[None]:
        decoder = ThreadPoolExecutor(1, thread_name_prefix="input")
        service = app[input_api.INPUTS] = input_api.InputService(app[rest.SCHEDULER], decoder,
                                                                          own_shm_name=config.shm_name)
        controls = app[control_api.CONTROLS] = control_api.ControlService(app[rest.SCHEDULER], decoder,
                                                                          own_shm_name=config.shm_name)
        try:
            yield
        finally:
            await controls.detach()
            await service.detach()
            decoder.shutdown(wait=True)

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
            "record": recorder.state(),
            "controls": app[control_api.CONTROLS].health(),
        }
        if ndi is not None:
            out["ndi"] = ndi.health()
        if PNG_WRITER in app:
            out["png_files"] = app[PNG_WRITER].health()
        return out

    app[rest.HEALTH] = health
    app.cleanup_ctx.extend([executors, osc, png_files, streams, live_input])
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
