"""A channel's outputs through a real daemon (issue 24 item 8, "Degraded"; issue 29 item 5): a channel
is made whole or answered 4xx with nothing left behind, its failing PNG folder shows in health, and
a deleted channel takes its folder with it."""

import asyncio
import os
import shutil
import socket
from multiprocessing import shared_memory

import aiohttp
import pytest

from bridge.client import ShmReader, osc_message, parse_osc_message
from bridge.frontends.http.rest import CHANNELS
from conftest import null_factory
from daemon_process import segment_exists
from waiting import settle


@pytest.fixture
async def api(config, daemon_factory, tmp_path):
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=out) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, out


async def patch(session, name, body):
    async with session.patch(f"/v1/channels/{name}/params", json=body) as r:
        return r.status, await r.json()


async def exists(session, name) -> bool:
    async with session.get(f"/v1/channels/{name}") as r:
        assert r.status in (200, 404), await r.text()
        return r.status == 200


async def test_a_name_made_again_while_its_deletion_tears_down_waits_for_it(api, config):
    session, daemon, out = api
    registry = daemon.app[CHANNELS]
    tearing, release = asyncio.Event(), asyncio.Event()

    async def slow_front_end(channel):  # holds the teardown open, its segment still mapped
        if channel.name == "again":
            tearing.set()
            await release.wait()

    registry.extend(lambda channel: None, slow_front_end)
    assert (await patch(session, "again", {"seed": 3}))[0] == 200
    deleting = asyncio.ensure_future(session.delete("/v1/channels/again"))
    await tearing.wait()
    assert segment_exists(config.shm_name + ".again")  # the old channel's, not yet unlinked
    making = asyncio.ensure_future(patch(session, "again", {"seed": 9}))
    await settle(lambda: daemon.health()["http"]["busy"] == 2, 30)  # both requests are in their handlers
    assert not making.done()  # the new one waits for the teardown instead of failing on the segment
    release.set()
    async with await deleting as r:
        assert r.status == 200
    status, body = await making
    assert status == 200 and body["version"] == 2, body
    channel = registry["again"]
    await settle(lambda: channel.scheduler.latest is not None and channel.scheduler.latest.params.seed == 9, 30)
    with ShmReader(config.shm_name + ".again") as reader:  # the new channel's own segment
        assert reader.read().seed == 9


async def test_a_planted_segment_answers_409_and_leaves_nothing_made(api, config):
    session, daemon, out = api
    planted = shared_memory.SharedMemory(config.shm_name + ".taken", create=True, size=4096)
    try:
        status, body = await patch(session, "taken", {"seed": 1})
        assert status == 409 and body["error"]["field"] == "channel", body
        message = body["error"]["message"]
        assert message.startswith("channel 'taken' cannot be created: shared memory") and \
            "not a turbo-bridge frame segment" in message and message.endswith("choose another channel name"), message
        assert not await exists(session, "taken") and not (out / "taken").exists()
        assert daemon.app[CHANNELS].created == 1  # main only
        assert segment_exists(config.shm_name + ".taken")  # someone else's: left alone
    finally:
        planted.close()
        planted.unlink()
    assert (await patch(session, "taken", {"seed": 1}))[0] == 200  # free again: made


@pytest.mark.parametrize("planted", ["file", "link"])
async def test_a_file_or_link_where_its_folder_goes_answers_409_and_leaves_no_segment(api, config, tmp_path, planted):
    session, daemon, out = api
    where = out / "left"
    if planted == "file":
        where.write_text("not a folder")
    else:
        (tmp_path / "elsewhere").mkdir()
        where.symlink_to(tmp_path / "elsewhere")
    status, body = await patch(session, "left", {"seed": 1})
    assert status == 409 and body["error"]["field"] == "channel", body
    expected = "exists and is not a folder; move it away" if planted == "file" else "is a link; remove it"
    assert str(where) in body["error"]["message"] and expected in body["error"]["message"], body
    assert not await exists(session, "left")
    assert not segment_exists(config.shm_name + ".left")  # started before the folder failed: unlinked again
    assert where.is_symlink() if planted == "link" else where.read_text() == "not a folder"  # left as it was
    assert not list((tmp_path / "elsewhere").iterdir()) if planted == "link" else True
    where.unlink()
    assert (await patch(session, "left", {"seed": 1}))[0] == 200
    await settle(lambda: (where / "latest.png").is_file(), 30)


async def test_a_channel_folder_replaced_by_a_file_makes_health_degraded(api):
    session, daemon, out = api
    assert (await patch(session, "left", {"seed": 1}))[0] == 200
    folder = out / "left"
    await settle(lambda: (folder / "latest.png").is_file(), 30)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        listener.sendto(osc_message("/bridge/ch/left/subscribe"), ("127.0.0.1", daemon.osc_port))
        await settle(lambda: daemon.osc.health()["channel_subscribers"] == 1, 30)
        shutil.rmtree(folder)
        folder.write_text("in the way")
        assert (await patch(session, "left", {"seed": 2}))[0] == 200  # a frame to write
        loop = asyncio.get_running_loop()
        address = None
        while address != "/bridge/ch/left/error":  # frame feedback comes too
            address, args = parse_osc_message(await asyncio.wait_for(loop.sock_recv(listener, 65536), 10))
        assert f"PNG output to {folder} failed: File exists" in args[0], args
        async with session.get("/v1/health") as r:
            health = await r.json()
        assert health["status"] == "degraded" and health["png_files"]["error"] is None  # main's folder is fine
        assert health["output_errors"] == {"left": [f"png_files: {args[0]}"]}
        left = health["channels"]["left"]
        assert left["output_errors"] == [f"png_files: {args[0]}"] and left["outputs"]["png_files"]["failed_writes"] >= 1
        folder.unlink()  # the folder is made again on the next try
        await settle(lambda: (folder / "latest.png").is_file(), 30)
        async with session.get("/v1/health") as r:
            health = await r.json()
        assert health["status"] == "ok" and health["channels"]["left"]["output_errors"] == []
    finally:
        listener.close()


@pytest.mark.parametrize("keep_frames", [False, True])
async def test_a_deleted_channel_takes_its_folder_with_it(config, daemon_factory, tmp_path, keep_frames):
    out = tmp_path / "out"
    async with daemon_factory(config, renderer_factory=null_factory, output_dir=out, keep_frames=keep_frames) as d:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{d.http_port}") as session:
            assert (await patch(session, "gone", {"seed": 1}))[0] == 200
            await settle(lambda: (out / "gone" / "latest.png").is_file(), 30)
            async with session.delete("/v1/channels/gone") as r:
                assert r.status == 200
            left = sorted(os.listdir(out / "gone")) if (out / "gone").exists() else None
            # Kept frames are the operator's: they stay, in their folder; latest.png of a gone stream does not.
            assert left is None if not keep_frames else left and all(n.startswith("frame-") for n in left), left
            assert (out / "latest.png").is_file()  # main's, in --output-dir itself: untouched
