"""Spout and Syphon out (``--spout NAME``, ``--syphon NAME``), through a real daemon.

Neither library runs on Linux: each test installs a stand-in faithful to the library's source
(``tests/support/spout_standin.py``, ``syphon_standin.py``: argument types, the per-thread
graphics context, buffer sizes, row order, pixel format, Syphon's run-loop discovery) that
records every frame as a receiving program would see it. Without a stand-in, the options fail
at start in one line (``test_without_the_library_the_option_stops_the_start_in_one_line``).
"""

import asyncio
import time

import aiohttp
import numpy as np
import pytest

import spout_standin
import syphon_standin
from bridge.core.errors import ConfigError
from bridge.outputs.texture import TextureOutput
from bridge.texshare import libraries
from conftest import null_factory
from daemon_process import refused_in_one_line, start_daemon
from renderers import RowsRenderer, rows_pattern
from waiting import settle


def seeds(frames) -> list[int]:
    return [int(frame[0, 0, 1]) for frame in frames]  # RowsRenderer: green is the seed


async def frame_out(world, name: str, seed: int) -> np.ndarray:
    """Wait until sender ``name``'s latest frame is the one of ``seed``; return it."""
    await settle(lambda: seeds(world.frames.get(name, []))[-1:] == [seed], 10)
    return world.frames[name][-1]


async def add_channel(daemon, name: str, params: dict) -> int:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
        async with session.patch(f"/v1/channels/{name}/params", json=params) as r:
            return r.status, await r.json()


@pytest.fixture
def spout(monkeypatch):
    return spout_standin.install(monkeypatch)


@pytest.fixture
def syphon(monkeypatch):
    return syphon_standin.install(monkeypatch)


@pytest.mark.parametrize("kind", ["spout", "syphon"])
async def test_every_frame_of_main_and_each_channel_is_shared_upright_in_order(kind, monkeypatch, config,
                                                                               daemon_factory):
    world = (spout_standin if kind == "spout" else syphon_standin).install(monkeypatch)
    renderer = RowsRenderer()
    async with daemon_factory(config, renderer_factory=renderer.factory, **{kind: "tb"}) as d:
        await frame_out(world, "tb", 0)  # the first frame
        for seed in (1, 2, 3):  # each waited for: none is skipped, none is sent twice
            d.scheduler.apply({"seed": seed})
            await frame_out(world, "tb", seed)
        d.scheduler.apply({"seed": 4, "width": 96, "height": 80})  # a new size: the shared texture follows
        frame = await frame_out(world, "tb", 4)
        # Byte for byte the frame: top row first, RGBA (red = row, blue = column), at its size.
        assert np.array_equal(frame, rows_pattern(80, 96, 4))
        assert seeds(world.frames["tb"]) == [0, 1, 2, 3, 4]
        assert all(np.array_equal(f, rows_pattern(64, 64, s)) for f, s in zip(world.frames["tb"][:4], range(4)))

        status, _ = await add_channel(d, "left", {"seed": 7, "width": 72, "height": 64})
        assert status == 200
        assert np.array_equal(await frame_out(world, "tb.left", 7), rows_pattern(64, 72, 7))
        health = d.health()
        assert health[kind] == {"name": "tb", "sent": 5, "skipped": 0, "errors": 0, "error": None, "last_error": None}
        assert health["channels"]["left"]["outputs"][kind]["name"] == "tb.left"
        assert health["status"] == "ok"
        if kind == "spout":
            assert world.syncs["tb"] == 5  # receivers waiting on frame sync are woken per frame
    # Stopped: no sender left registered, every graphics context let go (on the thread that made it).
    if kind == "spout":
        assert world.senders == {} and world.contexts == set()
    else:
        assert world.servers == {} and not world.unpooled  # every Metal/Cocoa call drained its pool


async def test_a_syphon_client_that_starts_later_finds_the_server_and_gets_its_frames(syphon, config,
                                                                                     daemon_factory):
    renderer = RowsRenderer()
    async with daemon_factory(config, renderer_factory=renderer.factory, syphon="tb") as d:
        d.scheduler.apply({"seed": 5, "width": 80, "height": 72})
        await frame_out(syphon, "tb", 5)
        # A program started now (Resolume, a Syphon Spout In TOP) asks who is there: the daemon's
        # server answers only because its thread runs its run loop between frames.
        client_side = await asyncio.get_running_loop().run_in_executor(None, receive_syphon, "tb", 10.0)
        assert np.array_equal(client_side, rows_pattern(72, 80, 5))
    assert not syphon.unpooled


def receive_syphon(name: str, timeout: float) -> np.ndarray:
    """As a receiving program does with syphon-python: find the server, connect, take a new frame."""
    import objc
    import syphon
    from syphon.utils.numpy import copy_mtl_texture_to_image

    deadline = time.monotonic() + timeout
    directory = syphon.SyphonServerDirectory()
    directory.run_loop_interval = 0.5
    with objc.autorelease_pool():
        while not (found := [s for s in directory.servers if s.name == name]):
            assert time.monotonic() < deadline, f"Syphon server {name!r} never answered the directory"
        client = syphon.SyphonMetalClient(found[0])
        try:
            assert client.has_new_frame  # a client that connects gets the server's current frame
            return np.ascontiguousarray(copy_mtl_texture_to_image(client.new_frame_image)[..., [2, 1, 0, 3]])  # BGRA
        finally:
            client.stop()


async def test_a_spout_name_another_program_holds_stops_the_start_and_a_channel_gets_409(spout, config,
                                                                                      daemon_factory):
    import SpoutGL

    other = SpoutGL.SpoutSender()  # another program's sender, already called "tb"
    other.createOpenGL()
    other.setSenderName("tb")
    assert other.sendImage(rows_pattern(8, 8, 1), 8, 8, SpoutGL.enums.GL_RGBA, False, 0)
    with pytest.raises(ConfigError) as refused:
        async with daemon_factory(config, renderer_factory=null_factory, spout="tb"):
            pass
    assert str(refused.value) == ("a Spout sender named 'tb' exists already (another program or daemon); choose "
                                  "another --spout name (or channel name)")
    assert list(spout.senders) == ["tb"] and len(spout.contexts) == 1  # the other's, untouched; ours let go

    other.setSenderName("tb2.left")
    other.sendImage(rows_pattern(8, 8, 1), 8, 8, SpoutGL.enums.GL_RGBA, False, 0)
    async with daemon_factory(config, renderer_factory=null_factory, spout="tb2") as d:
        status, body = await add_channel(d, "left", {"seed": 1})
        assert status == 409 and "a Spout sender named 'tb2.left' exists already" in body["error"]["message"], body
        assert "left" not in d.health()["channels"]
    other.releaseSender()
    assert other.closeOpenGL()


async def test_a_failing_send_degrades_health_once_and_recovers(spout, config, daemon_factory):
    renderer = RowsRenderer()
    async with daemon_factory(config, renderer_factory=renderer.factory, spout="tb") as d:
        await frame_out(spout, "tb", 0)
        spout.texture_access = False  # DirectX cannot write the shared texture: sendImage returns False
        for seed in (1, 2, 3):
            d.scheduler.apply({"seed": seed})
            await settle(lambda: d.health()["spout"]["errors"] >= seed, 10)
        health = d.health()
        assert health["status"] == "degraded" and health["spout"]["errors"] == 3
        assert health["spout"]["error"] == "spout sender 'tb': Spout refused a 64x64 frame for sender 'tb' " \
                                           "(Spout's log, SpoutSettings, says why)"
        assert d.scheduler.stats.last_error == health["spout"]["error"]  # reported (OSC /bridge/error) once
        spout.texture_access = True
        d.scheduler.apply({"seed": 4})
        await frame_out(spout, "tb", 4)
        health = d.health()
        assert health["status"] == "ok" and health["spout"]["error"] is None
        assert health["spout"]["last_error"] is not None and health["spout"]["sent"] == 2


def test_a_machine_without_opengl_fails_the_start_in_one_line_and_holds_nothing(spout):
    spout.opengl = False
    output = TextureOutput("spout", libraries.sender("spout", "tb"))
    with pytest.raises(ConfigError) as refused:
        output.start()
    assert str(refused.value) == ("Spout sender 'tb': no OpenGL context could be made on this machine (Spout "
                                  "needs a graphics driver with OpenGL and DirectX 11)")
    assert spout.senders == {} and spout.contexts == set()


@pytest.mark.parametrize("kind, platform, extra", [("spout", "Windows", "spout"), ("syphon", "macOS", "syphon")])
def test_without_the_library_the_option_stops_the_start_in_one_line(cache_dir, kind, platform, extra):
    proc = start_daemon(cache_dir, "", f"--{kind}", "tb")  # no segment: its start would log a line too
    line = refused_in_one_line(proc)
    assert line.endswith(f"--{kind} needs {platform}, and this is Linux: --{kind} cannot run here (on {platform}: "
                         f"pip install 'turbo-bridge[{extra}]', which brings "
                         f"{'SpoutGL' if kind == 'spout' else 'syphon-python'})"), line
