"""Shared fixtures: a demo model built once per session, daemons on ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.config import Config
from bridge.core.params import Params
from bridge.core.renderer import NullRenderer


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config):
    """Blender before 5.0 as a module crashes (4.2) or hangs (4.5) at interpreter exit once an
    add-on was registered, after every test passed and pytest reported: leave without the
    interpreter's teardown there (bpy_harness.leave)."""
    harness = getattr(sys.modules.get("blender_harness"), "harness", None)
    if harness is not None and harness.exit_crashes() and _EXIT_STATUS in config.stash:
        harness.leave(config.stash[_EXIT_STATUS])


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A session-wide cache so the demo model is built once (a few seconds)."""
    return tmp_path_factory.mktemp("cache")


def unique_shm_name() -> str:
    return f"tb-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(cache_dir) -> Config:
    return Config(model="demo", http_port=0, osc_port=0, shm_name=unique_shm_name(), cache_dir=cache_dir,
                  initial=Params(width=64, height=64), max_size=256)


def null_factory(config):
    return NullRenderer(), {"model": "null", "device": "cpu", "dtype": "none"}


@pytest.fixture
async def running():
    """``running(renderer, **kwargs)`` starts a Scheduler's render loop (64x64) on a GPU thread."""
    from bridge.engine.scheduler import Scheduler

    gpu = ThreadPoolExecutor(1, thread_name_prefix="gpu")
    started = []

    def start(renderer, **kwargs):
        sched = Scheduler(renderer, gpu, initial=Params(width=64, height=64), **kwargs)
        started.append(asyncio.create_task(sched.run()))
        return sched

    yield start
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)
    gpu.shutdown()


@pytest.fixture
def daemon_factory():
    """``async with daemon_factory(config, renderer_factory=...) as d`` starts a real daemon."""
    from bridge.app import Daemon, load_renderer

    def make(config: Config, renderer_factory=load_renderer, **changes):
        return Daemon(replace(config, **changes), renderer_factory)

    return make


# -- plugin tests ----------------------------------------------------------------------------------
class DemoDaemon:
    """``python -m bridge serve --model demo`` in its own process, as a plugin's host sees it."""

    def __init__(self, proc, http_port: int, osc_port: int, shm_name: str):
        from bridge.client import HttpClient

        self.proc, self.http_port, self.osc_port, self.shm_name = proc, http_port, osc_port, shm_name
        self.port, self.url = http_port, f"http://127.0.0.1:{http_port}"
        self.client = HttpClient(self.url)
        self.log: list[str] = []


@pytest.fixture(scope="module")
def demo_daemon(cache_dir, tmp_path_factory, request):
    """A real daemon process (demo model, 64x64, --max-size 256, recording into a temporary
    --output-dir) for one plugin test module; a module's ``DAEMON_ARGS`` (e.g.
    ``("--controlnet", "depth=demo")``) are added to its command line."""
    name = unique_shm_name()
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "demo", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", name, "--width", "64", "--height", "64",
                             "--max-size", "256", "--output-dir", str(tmp_path_factory.mktemp("output")),
                             *getattr(request.module, "DAEMON_ARGS", ())],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines, match, deadline = [], None, time.monotonic() + 120
    while match is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"ready: http://127\.0\.0\.1:(\d+)/v1/  OSC udp 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail("daemon did not start:\n" + "".join(lines))
    daemon = DemoDaemon(proc, int(match.group(1)), int(match.group(2)), name)
    daemon.log = lines
    threading.Thread(target=lambda: daemon.log.extend(proc.stderr), daemon=True).start()
    daemon.client.frame(0, 30)  # the first frame is out
    yield daemon
    proc.send_signal(signal.SIGTERM)  # the daemon unlinks its segment on the way out
    try:
        proc.wait(timeout=60)  # a loaded 2-core machine can take a while to unwind torch
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the daemon did not stop within 60 s of SIGTERM:\n" + "".join(daemon.log[-20:]))


# -- TouchDesigner plugin tests (helpers in td_harness.py) ---------------------------------------
@pytest.fixture
def td():
    """The TouchDesigner stand-in; on exit every plugin session closes (and its HTTP worker stops)."""
    import td_standin
    from td_harness import tb_session

    td = td_standin.TouchDesigner()
    yield td
    sources = [s.source for s in tb_session._SESSIONS.values() if s.source is not None]
    uploaders = [sender.uploader for s in tb_session._SESSIONS.values()
                 for sender in (s.input, *s.control_senders, s.style_sender) if sender.uploader is not None]
    td.exit()  # onExit closes every session
    for source in sources:
        if hasattr(source, "join"):
            assert source.join(timeout=10), "HTTP worker did not stop"
    for uploader in uploaders:
        assert uploader.join(timeout=10), "uploader thread did not stop"


@pytest.fixture
def net(td, demo_daemon):
    """The network the setup script builds, pointed at an idle test daemon, after the project starts."""
    from td_harness import PLUGIN_DIR, SETUP_SCRIPT, free_udp_port, idle

    idle(demo_daemon)
    td.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR), TB_SHM_NAME=demo_daemon.shm_name,
                TB_PORTS=(demo_daemon.http_port, demo_daemon.osc_port, free_udp_port()))
    td.start()
    return td.project.op("turbo_bridge")


# -- Blender add-on tests (helpers in blender_harness.py; they skip without bpy) ------------------
@pytest.fixture(scope="module")
def blender_daemon(cache_dir, tmp_path_factory):
    """A real daemon process (demo model, 64x64, --max-size 256, a temporary --output-dir) for one
    Blender test module."""
    from blender_harness import harness

    process = harness.start_daemon(cache_dir, extra=("--output-dir", str(tmp_path_factory.mktemp("output"))))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    from blender_harness import harness

    return harness.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(extension_zip, tmp_path_factory):
    """The zip installed into a throw-away extensions repository and enabled, as from the UI."""
    import bpy

    from blender_harness import REPO_MODULE, harness

    repo = harness.install_extension(extension_zip, tmp_path_factory.mktemp("extensions"), REPO_MODULE)
    yield
    bpy.context.preferences.extensions.repos.remove(repo)  # disables (unregisters) its add-ons
    assert not hasattr(bpy.types.Scene, "turbo_bridge")


@pytest.fixture
def ext(installed):
    """The installed add-on's modules; disconnects after the test."""
    from types import SimpleNamespace

    from blender_harness import ADDON

    modules = SimpleNamespace(**{name: sys.modules[f"{ADDON}.{name}"] for name in ("live", "datablocks", "link")})
    yield modules
    modules.live.disconnect()


# -- Krita plugin tests (helpers in krita_harness.py) ---------------------------------------------
@pytest.fixture(scope="module")
def qapp():
    from krita_harness import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def new_doc(qapp):
    from krita_harness import KRITA

    def make(width=64, height=64, depth="U8"):
        doc = KRITA.createDocument(width, height, "test", "RGBA", depth, "", 72.0)
        KRITA.setActiveDocument(doc)
        return doc
    return make


@pytest.fixture
def panel(qapp, demo_daemon):
    """The docker's panel, connected to the test daemon (as the docker does on creation)."""
    from krita_harness import KRITA
    from turbo_bridge.docker import BridgePanel

    made = []

    def make(prefer_shm=True):
        KRITA.writeSetting("turbo_bridge", "address", f"127.0.0.1:{demo_daemon.port}")
        p = BridgePanel(KRITA)
        p.controller.prefer_shm = prefer_shm
        made.append(p)
        p.reconnect()
        return p

    yield make
    for p in made:
        p.controller.stop()
