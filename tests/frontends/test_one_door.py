"""One door for every change (issue 23): REST, the WebSocket and OSC hand their changes to the
engine's ``ChangeDoor``, which parses them once, validates them as a whole (LoRA files loaded
first, only for a change whose every field is valid) and applies all of it or none of it.

Real daemons (null renderer), real sockets: each test failed on the code before the door.
"""

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import shared_memory

import aiohttp
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

from bridge.client import parse_osc_message
from bridge.engine.loras import LoraGate
from bridge.frontends.http import inputs
from bridge.frontends.http.rest import CHANNELS
from conftest import null_factory
from lora_folders import NotedFolder
from osc_messages import message
from waiting import settle

SENTINEL = "/bridge/colour"  # an unknown address: its error reply marks the end of what came before


@pytest.fixture
async def api(config, daemon_factory, tmp_path):
    async with daemon_factory(config, renderer_factory=null_factory, max_channels=3,
                              output_dir=tmp_path / "out") as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


@pytest.fixture
async def listener(api):
    """A UDP socket subscribed to channel main's OSC feedback."""
    _, daemon = api
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.sendto(message("/bridge/subscribe").dgram, ("127.0.0.1", daemon.osc_port))
    await settle(lambda: len(daemon.osc.subscribers) == 1)
    yield sock
    sock.close()


def bundle(*messages) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        builder.add_content(m)
    return builder.build().dgram


async def errors_until_sentinel(sock, daemon) -> list[str]:
    """Every ``/bridge/error`` that came before the reply to an unknown address sent now (frames skipped)."""
    sock.sendto(message(SENTINEL, 1).dgram, ("127.0.0.1", daemon.osc_port))
    errors = []
    while True:
        address, args = parse_osc_message(await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), 10))
        if address == "/bridge/error":
            if SENTINEL in args[0]:
                return errors
            errors.append(args[0])


def channel(daemon, name):
    found = daemon.app[CHANNELS].get(name)
    return None if found is None else found.scheduler


async def test_a_refused_osc_bundle_moves_no_channel_and_is_reported_once(api, listener):
    session, daemon = api
    async with session.patch("/v1/channels/a/params", json={"seed": 1}) as r:
        assert r.status == 200
    a = channel(daemon, "a")
    before = (a.params, a.version)
    rejected = daemon.osc.stats.rejected
    # Channel a's part is valid; main's LoRA does not exist on this daemon (no LoRA folder).
    listener.sendto(bundle(message("/bridge/ch/a/seed", 5), message("/bridge/lora", "x", 1.0)),
                    ("127.0.0.1", daemon.osc_port))
    errors = await errors_until_sentinel(listener, daemon)
    assert len(errors) == 1 and "LoRA" in errors[0], errors
    assert daemon.osc.stats.rejected == rejected + 1
    assert (a.params, a.version) == before  # same version, same seed


async def test_a_command_in_a_refused_bundle_does_not_run(api, listener):
    session, daemon = api
    listener.sendto(bundle(message("/bridge/record", 1), message("/bridge/steps", 99)), ("127.0.0.1", daemon.osc_port))
    errors = await errors_until_sentinel(listener, daemon)
    assert len(errors) == 1 and "steps" in errors[0], errors
    async with session.get("/v1/record") as r:
        assert (await r.json())["recording"] is False
    # The same command with a good change: both happen.
    listener.sendto(bundle(message("/bridge/record", 1), message("/bridge/seed", 3)), ("127.0.0.1", daemon.osc_port))
    assert await errors_until_sentinel(listener, daemon) == []
    async with session.get("/v1/record") as r:
        assert (await r.json())["recording"] is True
    assert daemon.scheduler.params.seed == 3
    async with session.post("/v1/record", json={"action": "stop"}) as r:
        assert r.status == 200, await r.text()


@pytest.fixture
def folders(api):
    """Each device's LoRA folder: a stand-in that notes every file it reads."""
    _, daemon = api
    loader = ThreadPoolExecutor(1)
    noted = []
    for queue in daemon.app[CHANNELS].queues:
        noted.append(NotedFolder())
        queue.loras = LoraGate(noted[-1], loader)
    yield noted
    loader.shutdown()


async def send_over(session, transport, change):
    """The error of a refused change: REST's 400 body, or the WebSocket's error reply (same shape)."""
    if transport == "rest":
        async with session.patch("/v1/params", json=change) as r:
            assert r.status == 400
            return await r.json()
    async with session.ws_connect("/v1/ws") as ws:
        await ws.send_json({"params": change})
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
            if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] in ("applied", "error"):
                reply = msg.json()
                assert reply["type"] == "error", reply
                return {"error": reply["error"]}


@pytest.mark.parametrize("transport", ["rest", "websocket"])
async def test_a_change_with_a_bad_second_field_reads_no_lora_file_and_changes_nothing(api, folders, transport):
    session, daemon = api
    before = (daemon.scheduler.params, daemon.scheduler.version, daemon.scheduler.stats.rejected)
    error = await send_over(session, transport, {"loras": {"ink": 1}, "steps": 99})
    assert error["error"]["field"] == "steps"
    assert folders[0].loaded == []  # refused before any file was read
    params, version, rejected = before
    assert (daemon.scheduler.params, daemon.scheduler.version, daemon.scheduler.stats.rejected) == \
        (params, version, rejected + 1)
    # The same LoRA in a good change is read once and applied.
    async with session.patch("/v1/params", json={"loras": {"ink": 1}, "steps": 2}) as r:
        assert r.status == 200, await r.text()
    assert folders[0].loaded == ["ink"] and dict(daemon.scheduler.params.loras) == {"ink": 1.0}


async def test_a_channel_creating_patch_refused_for_its_lora_creates_nothing(api, config):
    session, daemon = api
    registry = daemon.app[CHANNELS]
    created = registry.created
    for _ in range(registry.max_channels + 1):  # more than would fit: each leaves nothing behind
        async with session.patch("/v1/channels/fresh/params", json={"seed": 1, "loras": {"x": 1}}) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "loras"
    async with session.get("/v1/channels/fresh/params") as r:
        assert r.status == 404
    assert registry.get("fresh") is None and registry.created == created and len(registry) == 1
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(config.shm_name + ".fresh")
    async with session.patch("/v1/channels/fresh/params", json={"seed": 1}) as r:
        assert r.status == 200 and (await r.json())["version"] == 2  # v1 the defaults, v2 this change


async def receive_text(ws, *types):
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] in types:
            return msg.json()


async def test_a_websocket_creates_its_channel_with_its_first_change_as_rest_does(api):
    session, daemon = api
    async with session.ws_connect("/v1/channels/fresh/ws?format=rgba") as ws:
        hello = await receive_text(ws, "hello")
        assert (hello["channel"], hello["version"]) == ("fresh", 0)  # 0: not created yet
        assert hello["params"] == daemon.app[CHANNELS].initial.to_json()
        assert channel(daemon, "fresh") is None  # connecting creates nothing
        await ws.send_json({"format": "png"})
        assert (await receive_text(ws, "applied", "error"))["version"] == 0
        await ws.send_bytes(inputs.pack_ws_input("rgba", bytes(16), 2, 2))
        refused = await receive_text(ws, "input", "error")
        assert refused["error"]["field"] == "channel" and "a params message creates it" in refused["error"]["message"]
        assert channel(daemon, "fresh") is None  # nor does a message without params, nor an image
        await ws.send_json({"params": {"seed": 4}})
        assert (await receive_text(ws, "applied", "error")) == {
            "type": "applied", "version": 2, "warnings": [], "format": "png", "quality": 80}
        assert channel(daemon, "fresh").params.seed == 4
        notice = await receive_text(ws, "params")  # then the new channel's frames
        assert notice["version"] == 2 and notice["params"]["seed"] == 4
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.BINARY

    async with session.patch("/v1/channels/b/params", json={}) as r:
        assert r.status == 200  # main, fresh, b: --max-channels 3 reached
    async with session.patch("/v1/channels/c/params", json={"seed": 1}) as r:
        assert r.status == 409
        refusal = await r.json()
    async with session.ws_connect("/v1/channels/d/ws") as ws:
        await ws.send_json({"params": {"seed": 1}})
        assert await receive_text(ws, "applied", "error") == {"type": "error", **refusal}
    assert channel(daemon, "d") is None and len(daemon.app[CHANNELS]) == 3
