"""The daemon as a whole: the aiohttp app with its parts in start order, its health, the bound
sockets (``Daemon``) and the run until a stop signal (``serve``, ``STOP_SIGNALS``).

What each part wires lives next door: ``renderers`` (a warm pipeline per device), ``engine``
(render queues, channels), ``outputs`` (each channel's outputs), ``frontends`` (HTTP, OSC,
per-channel front-end services).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..core.renderer import Renderer
from ..engine.scheduler import Scheduler
from ..frontends import security, sockets
from ..frontends.http import connections, control_api, input_api, live, rest, style_api
from ..frontends.osc.server import OscServer
from .engine import DEVICES, MAIN_OUTPUTS, MODEL_INFO, render_engine
from .frontends import GUARD, OSC, OSC_SOCKET, http, live_input, osc, streams
from .renderers import load_renderer

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
SHUTDOWN_TIMEOUT_S = 2.0  # handlers still running this long after SIGTERM are cancelled


async def _close_channels(app: web.Application) -> AsyncIterator[None]:
    # The last context: it unwinds first, so every channel is torn down while all its front ends still exist.
    try:
        yield
    finally:
        await app[rest.CHANNELS].close()


def create_app(config: Config, renderer_factory: Callable[[Config], tuple[Renderer, dict]] = load_renderer
               ) -> web.Application:
    """The daemon's aiohttp app: the front ends' routes, every part's cleanup context in start order, health."""
    security.check_exposure(config.host, config.access)
    app = web.Application(client_max_size=rest.MAX_BODY_BYTES)
    app[CONFIG] = config
    http(app, config)
    started = time.monotonic()

    def health() -> dict:
        sched = app[rest.SCHEDULER]
        latest = sched.latest
        main_outputs = app[MAIN_OUTPUTS]  # main's, also once the daemon stopped
        registry, devices = app[rest.CHANNELS], app[DEVICES]
        fault = devices.fault()  # a lost cluster worker whose channels do not render yet
        failing = sched.stats.failing or main_outputs.errors() or registry.output_errors() or fault
        channels = registry.health()
        for channel in registry:
            channels[channel.name].update(devices.channel_health(channel))
        return {
            "status": "degraded" if failing else "ok",
            **app[MODEL_INFO],
            "version": sched.version,
            "frame_seq": latest.seq if latest else 0,
            "uptime_s": round(time.monotonic() - started, 3),
            "changes": sched.stats.changes,
            "rejected": sched.stats.rejected,
            "frames": sched.stats.frames,
            "render_errors": sched.stats.render_errors,
            "last_error": fault or sched.stats.last_error,
            "last_stages_ms": {k: round(v, 3) for k, v in sched.stats.last_stages_ms.items()},
            "osc": app[OSC].health(),
            "http": app[GUARD].health(),
            "shm_name": config.shm_name,
            "streams": app[live.HUB].health(),
            "input": app[input_api.INPUTS].health(),
            "channels": channels,
            "max_channels": config.max_channels,
            "devices": [{**devices.info(queue), **entry} for queue, entry in zip(registry.queues, registry.devices())],
            **devices.health(registry),  # a cluster's workers
            "controls": app[control_api.CONTROLS].health(),
            "style": app[style_api.STYLES].health(),
            "output_errors": registry.output_errors(),
            **main_outputs.health(),  # by kind: shm, png_files (--output-dir), record, ndi (--ndi)
        }

    app[rest.HEALTH] = health
    # Started in this order, stopped in the reverse one.
    app.cleanup_ctx.extend([render_engine(config, renderer_factory), osc(config), streams, live_input(config),
                            _close_channels])
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

    async def __aenter__(self) -> Daemon:
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
