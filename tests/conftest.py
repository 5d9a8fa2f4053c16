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
from bridge.core.frame import NullRenderer
from bridge.core.params import Params


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


# -- TouchDesigner plugin tests (helpers in td_harness.py) ---------------------------------------
@pytest.fixture(scope="module")
def td_daemon(cache_dir):
    """A real daemon process (demo model, 64x64, --max-size 256) for one TouchDesigner test module."""
    from td_harness import Daemon

    name = unique_shm_name()
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "demo", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", name, "--width", "64", "--height", "64",
                             "--max-size", "256"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
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
    daemon = Daemon(proc, int(match.group(1)), int(match.group(2)), name)
    daemon.log = lines
    threading.Thread(target=lambda: daemon.log.extend(proc.stderr), daemon=True).start()
    daemon.client.frame(0, 30)  # the first frame is out
    yield daemon
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture
def td():
    """The TouchDesigner stand-in; on exit every plugin session closes (and its HTTP worker stops)."""
    import td_standin
    from td_harness import tb_session

    td = td_standin.TouchDesigner()
    yield td
    sources = [s.source for s in tb_session._SESSIONS.values() if s.source is not None]
    td.exit()  # onExit closes every session
    for source in sources:
        if hasattr(source, "join"):
            assert source.join(timeout=10), "HTTP worker did not stop"


@pytest.fixture
def net(td, td_daemon):
    """The network the setup script builds, pointed at an idle test daemon, after the project starts."""
    from td_harness import PLUGIN_DIR, SETUP_SCRIPT, free_udp_port, idle

    idle(td_daemon)
    td.textport(SETUP_SCRIPT, TB_PLUGIN_DIR=str(PLUGIN_DIR), TB_SHM_NAME=td_daemon.shm_name,
                TB_PORTS=(td_daemon.http_port, td_daemon.osc_port, free_udp_port()))
    td.start()
    return td.project.op("turbo_bridge")
