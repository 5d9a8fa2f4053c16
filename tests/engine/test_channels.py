"""Channels through a real daemon: isolation, limits, deletion while clients read, OSC addressing."""

import asyncio
import json
import socket
import threading
from multiprocessing import shared_memory

import aiohttp
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.udp_client import SimpleUDPClient

from bridge.client import ShmReader, parse_osc_message
from bridge.core.renderer import NullRenderer
from bridge.frontends.http import live
from bridge.frontends.http.rest import CHANNELS
from conftest import null_factory
from lora_folders import NotedFolder
from osc_messages import message
from waiting import settle


@pytest.fixture
async def api(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory, max_channels=3) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def frame_after(session, path, after=0):
    async with session.get(f"{path}/frame.rgba?after={after}&timeout=10") as r:
        assert r.status == 200, await r.text()
        return int(r.headers["X-Frame-Seq"]), int(r.headers["X-Seed"]), await r.read()


async def test_channels_are_isolated(api, config):
    session, daemon = api
    async with session.patch("/v1/channels/left/params", json={"seed": 7, "prompt": "left"}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["version"] == 2  # created at v1 from the defaults, then this change
    async with session.patch("/v1/params", json={"seed": 3}) as r:
        assert r.status == 200
    async with session.get("/v1/channels/left/params") as r:
        left = await r.json()
    async with session.get("/v1/params") as r:
        main = await r.json()
    assert (left["seed"], left["prompt"], left["version"]) == (7, "left", 2)
    assert (main["seed"], main["prompt"], main["version"]) == (3, "", 2)
    assert left["width"] == main["width"] == 64  # new channels start from the daemon's initial parameters

    seq, seed, _ = await frame_after(session, "/v1/channels/left")
    while seed != 7:
        seq, seed, _ = await frame_after(session, "/v1/channels/left", seq)
    seq, seed, _ = await frame_after(session, "/v1")
    while seed != 3:
        seq, seed, _ = await frame_after(session, "/v1", seq)

    # Each channel publishes into its own segment: main {shm}, left {shm}.left.
    with ShmReader(config.shm_name + ".left") as left_reader, ShmReader(config.shm_name) as main_reader:
        assert left_reader.read().seed == 7 and main_reader.read().seed == 3

    async with session.get("/v1/channels") as r:
        listed = await r.json()
    assert set(listed["channels"]) == {"main", "left"} and listed["max_channels"] == 3
    assert listed["channels"]["left"]["shm_name"] == config.shm_name + ".left"
    async with session.get("/v1/health") as r:
        health = await r.json()
    assert set(health["channels"]) == {"main", "left"} and health["max_channels"] == 3
    assert sorted(health["devices"][0]["channels"]) == ["left", "main"]
    thread = health["devices"][0]["render_thread"]  # every job it ran: the model's load and every batch
    assert thread["spin_ms"] == 0 and thread["jobs_without_sleep"] + thread["jobs_after_sleep"] > \
        health["devices"][0]["batches"]


async def test_limits_names_and_what_cannot_be_deleted(api):
    session, daemon = api
    for name in ("a", "b"):
        async with session.patch(f"/v1/channels/{name}/params", json={"seed": 1}) as r:
            assert r.status == 200
    async with session.patch("/v1/channels/c/params", json={"seed": 1}) as r:
        assert r.status == 409
        assert (await r.json())["error"]["field"] == "channel"
    async with session.delete("/v1/channels/b") as r:
        assert r.status == 200
    async with session.patch("/v1/channels/Bad.Name/params", json={"seed": 1}) as r:
        assert r.status == 400 and "channel name" in (await r.json())["error"]["message"]
    async with session.patch("/v1/channels/typo/params", json={"sede": 1}) as r:
        assert r.status == 400  # a bad change creates no channel
    async with session.get("/v1/channels/typo/params") as r:
        assert r.status == 404
    async with session.delete("/v1/channels/main") as r:
        assert r.status == 400
    async with session.delete("/v1/channels/nope") as r:
        assert r.status == 404
    async with session.get("/v1/channels") as r:
        assert set((await r.json())["channels"]) == {"main", "a"}


async def test_deleting_a_channel_while_clients_read(api, config):
    session, daemon = api
    async with session.patch("/v1/channels/gone/params", json={"seed": 5}) as r:
        assert r.status == 200
    seq, _, _ = await frame_after(session, "/v1/channels/gone")
    ws = await session.ws_connect("/v1/channels/gone/ws?format=rgba")
    hello = json.loads((await ws.receive()).data)
    assert hello["type"] == "hello" and hello["channel"] == "gone" and hello["params"]["seed"] == 5
    mjpeg = await session.get("/v1/channels/gone/stream.mjpeg")
    await mjpeg.content.readuntil(b"\xff\xd9")  # the current frame's JPEG has arrived: the stream is live
    poll = asyncio.ensure_future(session.get(f"/v1/channels/gone/frame.png?after={seq}&timeout=30"))
    reader = ShmReader(config.shm_name + ".gone")
    gone = daemon.app[CHANNELS].get("gone")
    # Every reader is waiting: both streams subscribed, the long-poll parked on the frame condition.
    await settle(lambda: gone.services[live.HUB].health()["clients"] == {"websocket": 1, "mjpeg": 1}
                 and len(gone.scheduler._new_frame._waiters) == 1)

    async def read_ws():  # a live client reads all along (and so answers the server's close)
        told = None
        while True:  # frames may come first; then the notice, then the close
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return told, msg.data, msg.extra
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "deleted":
                told = json.loads(msg.data)

    told = asyncio.ensure_future(read_ws())
    async with session.delete("/v1/channels/gone") as r:
        assert r.status == 200 and (await r.json())["deleted"] == "gone"
    assert await told == ({"type": "deleted", "channel": "gone"}, aiohttp.WSCloseCode.GOING_AWAY, "channel deleted")
    rest = await asyncio.wait_for(mjpeg.content.read(), 10)  # the stream ends instead of hanging
    assert mjpeg.content.at_eof(), rest[:100]
    answered = await asyncio.wait_for(poll, 10)
    assert answered.status == 410
    answered.release()
    # Its segment is unlinked (a reader that had it mapped keeps its mapping, as POSIX does).
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(config.shm_name + ".gone")
    reader.close()
    async with session.get("/v1/channels/gone/params") as r:
        assert r.status == 404
    # The name is free again: a new channel of that name starts from the defaults.
    async with session.patch("/v1/channels/gone/params", json={"prompt": "again"}) as r:
        assert (await r.json())["version"] == 2
    async with session.get("/v1/channels/gone/params") as r:
        assert (await r.json())["seed"] == 0
    await ws.close()
    mjpeg.release()


@pytest.fixture
async def osc(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.patch("/v1/channels/left/params", json={"seed": 1}) as r:
                assert r.status == 200
            yield SimpleUDPClient("127.0.0.1", daemon.osc_port), daemon


def channel(daemon, name):
    return daemon.app[CHANNELS].get(name).scheduler


async def test_osc_channel_addresses_reach_only_their_channel(osc):
    client, daemon = osc
    client.send_message("/bridge/ch/left/prompt", "left side")
    client.send_message("/bridge/ch/left/size", [128, 96])
    client.send_message("/bridge/seed", 9)
    await settle(lambda: channel(daemon, "left").params.width == 128 and daemon.scheduler.params.seed == 9)
    left, main = channel(daemon, "left").params, daemon.scheduler.params
    assert (left.prompt, left.seed, left.height) == ("left side", 1, 96)
    assert (main.prompt, main.width) == ("", 64)


async def test_osc_bundle_over_two_channels_is_all_or_nothing(osc):
    client, daemon = osc
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        listener.sendto(message("/bridge/subscribe").dgram, ("127.0.0.1", daemon.osc_port))
        listener.sendto(message("/bridge/ch/left/subscribe").dgram, ("127.0.0.1", daemon.osc_port))
        await settle(lambda: daemon.osc.health()["channel_subscribers"] == 1 and daemon.osc.subscribers)

        bad = OscBundleBuilder(IMMEDIATELY)
        bad.add_content(message("/bridge/ch/left/seed", 100))
        bad.add_content(message("/bridge/steps", 99))  # out of range: neither change applies
        client.send(bad.build())
        address = None
        while address != "/bridge/error":  # frame feedback of earlier changes may come first
            address, args = parse_osc_message(await asyncio.wait_for(loop.sock_recv(listener, 65536), 10))
        assert "steps" in args[0]
        assert channel(daemon, "left").params.seed == 1

        good = OscBundleBuilder(IMMEDIATELY)
        good.add_content(message("/bridge/ch/left/seed", 100))
        good.add_content(message("/bridge/seed", 200))
        client.send(good.build())
        await settle(lambda: channel(daemon, "left").params.seed == 100 and daemon.scheduler.params.seed == 200)
        seen = set()
        while not {"/bridge/frame", "/bridge/ch/left/frame"} <= seen:  # each channel's feedback, own address
            address, args = parse_osc_message(await asyncio.wait_for(loop.sock_recv(listener, 65536), 10))
            seen.add(address)

        client.send_message("/bridge/ch/nope/seed", 1)
        while True:
            address, args = parse_osc_message(await asyncio.wait_for(loop.sock_recv(listener, 65536), 10))
            if address == "/bridge/error":
                break
        assert "no channel 'nope'" in args[0]
    finally:
        listener.close()


class ThreadNoting(NullRenderer):
    """A null renderer that notes the thread each frame rendered on (one per device)."""

    def __init__(self, device):
        super().__init__()
        self.device = device
        self.threads = set()

    def render(self, params, scene=None):
        self.threads.add(threading.current_thread().name)
        return super().render(params)


async def test_channels_are_placed_on_devices_by_load_and_rebalanced(config, daemon_factory):
    by_thread = {}  # the factories run at once, each on its device's render thread: keyed by it

    def factory(cfg):
        renderer = by_thread[threading.current_thread().name] = ThreadNoting(cfg.device)
        return renderer, {"model": "null", "device": cfg.device, "dtype": "none"}

    async with daemon_factory(config, renderer_factory=factory, device="cpu,cpu", max_channels=4) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for name in ("a", "b"):
                async with session.patch(f"/v1/channels/{name}/params", json={"seed": 1}) as r:
                    assert r.status == 200
            async with session.get("/v1/health") as r:
                devices = (await r.json())["devices"]
            # main on the first device, a on the second (the lighter), b back on the first (a tie).
            assert [sorted(d["channels"]) for d in devices] == [["b", "main"], ["a"]]
            assert [d["device"] for d in devices] == ["cpu", "cpu"]
            await settle(lambda: all(c.scheduler.stats.frames for c in daemon.app[CHANNELS]))
            assert {name: r.threads for name, r in by_thread.items()} == {"gpu": {"gpu"}, "gpu1": {"gpu1"}}
            renderers = [by_thread["gpu"], by_thread["gpu1"]]  # device 0's, device 1's

            async with session.delete("/v1/channels/a") as r:  # now 2 channels on one device, 0 on the other
                assert r.status == 200
            async with session.get("/v1/health") as r:
                devices = (await r.json())["devices"]
            assert sorted(len(d["channels"]) for d in devices) == [1, 1]
            moved = next(d["channels"][0] for d in devices if d["name"].startswith("1:"))
            calls = renderers[1].calls
            seq = channel(daemon, moved).latest.seq
            channel(daemon, moved).apply({"seed": 99})
            assert (await channel(daemon, moved).next_frame(seq, 10)).params.seed == 99
            assert renderers[1].calls == calls + 1  # the moved channel renders on its new device


@pytest.mark.parametrize("mode, placed, loads", [
    ("cfg", [["main"], ["a", "b"]], [2 * 64 * 64, 2 * 64 * 64]),  # main's guidance runs a second row
    ("embedded", [["b", "main"], ["a"]], [2 * 64 * 64, 64 * 64]),  # an input of the model: one row
])
async def test_placement_weighs_a_frame_by_the_rows_the_model_runs(config, daemon_factory, mode, placed, loads):
    """The model's info says how it takes guidance; a guidance row counts only where it runs one."""

    def factory(cfg):
        return ThreadNoting(cfg.device), {"model": "null", "device": cfg.device, "dtype": "none",
                                          "guidance_mode": mode}

    async with daemon_factory(config, renderer_factory=factory, device="cpu,cpu", max_channels=4) as daemon:
        assert daemon.app[CHANNELS].limits.guidance_mode == mode
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for path, guidance in (("/v1/params", 2.0), ("/v1/channels/a/params", 0), ("/v1/channels/b/params", 0)):
                async with session.patch(path, json={"guidance": guidance}) as r:
                    assert r.status == 200, await r.text()
            async with session.get("/v1/health") as r:
                devices = (await r.json())["devices"]
    # 64x64, one step each; a goes to the empty device, b to the lighter one (on a tie, the first)
    assert [sorted(d["channels"]) for d in devices] == placed
    assert [d["load"] for d in devices] == loads


class CheckingLoras(ThreadNoting):
    """Notes every frame whose LoRAs its device's folder had not loaded when it rendered."""

    def __init__(self, device):
        super().__init__(device)
        self.lora_catalog, self.unloaded = NotedFolder(("ink", "oil")), []

    def render(self, params, scene=None):
        if not self.lora_catalog.ready(name for name, _ in params.loras):
            self.unloaded.append(params.loras)
        return super().render(params)


async def test_a_channel_moves_with_its_loras_loaded_on_the_new_device(config, daemon_factory):
    renderers = {}

    def factory(cfg):
        renderer = renderers[threading.current_thread().name] = CheckingLoras(cfg.device)
        return renderer, {"model": "null", "device": cfg.device, "dtype": "none"}

    async with daemon_factory(config, renderer_factory=factory, device="cpu,cpu", max_channels=4) as daemon:
        channels = daemon.app[CHANNELS]  # each device's gate loads into its renderer's own lora_catalog
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            for name, loras in (("a", {}), ("b", {"oil": 0.5})):
                async with session.patch(f"/v1/channels/{name}/params", json={"seed": 1, "loras": loras}) as r:
                    assert r.status == 200, await r.text()
            async with session.patch("/v1/params", json={"loras": {"ink": 1.0}}) as r:
                assert r.status == 200, await r.text()
            first, second = renderers["gpu"], renderers["gpu1"]
            # Every change rendered: the frame awaited below can only be the one of seed 99.
            await settle(lambda: all(c.scheduler.latest is not None
                                     and c.scheduler.latest.version == c.scheduler.version for c in channels))
            assert [c.name for c in channels if c.queue.renderer is first] == ["main", "b"]
            assert first.lora_catalog.loaded == ["oil", "ink"] and second.lora_catalog.loaded == []

            async with session.delete("/v1/channels/a") as r:  # device 1 empty: main or b moves there
                assert r.status == 200
            moved = next(c for c in channels if c.queue.renderer is second)
            wanted = [name for name, _ in moved.scheduler.params.loras]
            assert second.lora_catalog.loaded == wanted  # loaded there before it moved, not on its render thread
            seq = moved.scheduler.latest.seq
            moved.scheduler.apply({"seed": 99})
            assert (await moved.scheduler.next_frame(seq, 10)).params.seed == 99
            assert second.calls and first.unloaded == second.unloaded == []


def test_client_channel_helpers():
    from bridge.client import check_channel, http_path, osc_address, segment_name

    assert osc_address("/bridge/prompt", "left") == "/bridge/ch/left/prompt"
    assert osc_address("/bridge/prompt", "main") == "/bridge/prompt"
    assert osc_address("/cue/next", "left") == "/cue/next"  # not the daemon's: left alone
    assert http_path("/v1/frame.png?after=3", "left") == "/v1/channels/left/frame.png?after=3"
    assert http_path("/v1/health", "left") == "/v1/health"  # the daemon's, not a stream's
    assert segment_name("tb", "left") == "tb.left" and segment_name("tb", "main") == "tb"
    assert check_channel("") == "main"
    with pytest.raises(ValueError, match="channel name"):
        check_channel("Left!")


async def test_input_images_are_per_channel(api):
    session, daemon = api
    async with session.patch("/v1/channels/left/params", json={"strength": 0.5}) as r:
        assert r.status == 200
    pixels = bytes(range(256)) * (16 * 16 * 4 // 256)
    async with session.put("/v1/channels/left/input", data=pixels,
                           headers={"Content-Type": "application/octet-stream", "X-Width": "16",
                                    "X-Height": "16"}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["active"] is True
    async with session.get("/v1/channels/left/input") as r:
        assert (await r.json())["present"] is True
    async with session.get("/v1/input") as r:
        assert (await r.json())["present"] is False  # main has none
    assert channel(daemon, "left").input is not None and daemon.scheduler.input is None
    async with session.delete("/v1/channels/left/input") as r:
        assert (await r.json())["cleared"] is True
    assert channel(daemon, "left").input is None
