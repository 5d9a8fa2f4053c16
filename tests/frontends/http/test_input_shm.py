"""A client's input segment, attacked: oversized, the daemon's own, empty, stuck mid-publish.

Each is attached through a real daemon over HTTP, with real shared memory; the daemon keeps
serving (health answers, a change still renders a frame) after each.
"""

import asyncio
import os

import aiohttp
import numpy as np
import pytest

from bridge.client import ShmInputWriter, layout
from bridge.frontends.http.input_api import INPUTS
from conftest import null_factory, unique_shm_name


@pytest.fixture
async def api(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def attach(session, name):
    async with session.put("/v1/input", json={"shm": name}) as r:
        return r.status, await r.json()


async def still_serving(session, daemon):
    async with session.get("/v1/health") as r:
        assert r.status == 200
    seq = daemon.scheduler.latest.seq if daemon.scheduler.latest else 0
    async with session.patch("/v1/params", json={"seed": daemon.scheduler.params.seed + 1}) as r:
        assert r.status == 200
    assert await daemon.scheduler.next_frame(seq, 10) is not None


async def test_an_input_segment_over_the_upload_limit_is_refused(api):
    session, daemon = api
    with ShmInputWriter(unique_shm_name(), 12000, 12000) as writer:  # sparse: no pages are touched
        status, body = await attach(session, writer.name)
    assert status == 400 and body["error"]["field"] == "shm"
    assert "12000x12000" in body["error"]["message"] and "4096" in body["error"]["message"]
    assert daemon.app[INPUTS].health()["shm"] is None
    await still_serving(session, daemon)


async def test_the_daemons_own_output_segment_is_refused_as_input(api, config):
    session, daemon = api
    for name in (config.shm_name, config.shm_name + ".left"):
        status, body = await attach(session, name)
        assert status == 400 and "own output segment" in body["error"]["message"], body
    await still_serving(session, daemon)


async def test_a_segment_this_process_publishes_under_another_name_is_refused(api):
    session, daemon = api
    from bridge.outputs.shm import ShmWriter

    with ShmWriter(unique_shm_name(), 64, 64) as other:  # owned by this (the daemon's) process
        status, body = await attach(session, other.name)
    assert status == 400 and "a segment this daemon publishes" in body["error"]["message"], body


@pytest.mark.parametrize("size", [0, 64])
async def test_an_empty_or_short_segment_is_refused(api, size):
    session, daemon = api
    name = unique_shm_name()
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    os.close(fd)
    try:
        status, body = await attach(session, name)
        assert status == 400 and body["error"]["field"] == "shm" and name in body["error"]["message"], body
        await still_serving(session, daemon)
    finally:
        layout.Segment.unlink_name(name)


async def test_a_segment_stuck_mid_publish_is_backed_off_from_and_recovers(api):
    session, daemon = api
    service = daemon.app[INPUTS]
    with ShmInputWriter(unique_shm_name(), 64, 64) as writer:
        writer.write(np.full((16, 16, 4), 7, np.uint8))
        status, _ = await attach(session, writer.name)
        assert status == 200
        while service.shm_reads < 1:
            await asyncio.sleep(0.01)
        # A writer that died between its two seq stores leaves seq odd for good.
        seq = layout.SEQ.unpack_from(writer._shm.buf, layout.SEQ_OFFSET)[0]
        layout.SEQ.pack_into(writer._shm.buf, layout.SEQ_OFFSET, seq + 1)
        reader = service._reader
        while service.shm_errors < 4:
            await asyncio.sleep(0.01)
        health = (await (await session.get("/v1/input")).json())
        assert "odd" in health["shm_error"] and health["shm_errors"] >= 4
        # Each failed read retried a bounded number of times with sleeps in between, not a spin,
        # and the watcher's own delay doubled after every failure.
        assert reader.retries <= 40 * service.shm_errors, (reader.retries, service.shm_errors)
        assert service.shm_retry_s >= 2 ** 4 * 0.002
        await still_serving(session, daemon)
        # The writer comes back: seq even again, a new frame; the watcher resumes.
        layout.SEQ.pack_into(writer._shm.buf, layout.SEQ_OFFSET, seq)
        writer.write(np.full((16, 16, 4), 9, np.uint8))
        while daemon.scheduler.input is None or daemon.scheduler.input.pixels[0, 0, 0] != 9:
            await asyncio.sleep(0.01)
        assert service.health()["shm_error"] is None and service.shm_retry_s == 0.002
        async with session.delete("/v1/input") as r:
            assert r.status == 200
