"""Shared fixtures: a demo model built once per session, daemons on ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
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
