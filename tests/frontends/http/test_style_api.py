"""The style image and style_scale through a real daemon: PUT/GET/DELETE /v1/style (PNG, JPEG, raw
RGBA, a segment written by another process), WebSocket TBS1 messages, OSC /bridge/style_scale and
/bridge/params; the refusals of a daemon without --ip-adapter. Plumbing on a recording renderer,
end-to-end frames on the demo model with the demo IP-Adapter."""

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from bridge.client import osc_message
from bridge.frontends.http import inputs
from bridge.frontends.http.style_api import STYLES
from test_input_api import RecordingRenderer, frame_of, segment_writer
from uploads import encoded, rgba


@pytest.fixture
async def api(config, daemon_factory):
    renderer = RecordingRenderer()
    factory = lambda config: (renderer, {"model": "recording", "device": "cpu", "dtype": "none"})  # noqa: E731
    async with daemon_factory(config, renderer_factory=factory, ip_adapter="demo") as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, renderer


async def put(session, data, content_type, path="/v1/style", **headers):
    async with session.put(path, data=data, headers={"Content-Type": content_type, **headers}) as r:
        return r.status, await r.json()


async def patch(session, body):
    async with session.patch("/v1/params", json=body) as r:
        return r.status, await r.json()


def last_style(renderer):
    params, scene = renderer.scenes[-1]
    return params.style_scale, scene.style


async def test_style_image_steers_only_while_its_scale_is_on(api):
    session, daemon, renderer = api
    pixels = rgba()
    status, body = await put(session, encoded(pixels, "PNG"), "image/png")
    assert status == 200 and body["changed"] and not body["active"] and body["version"] == 1  # scale 0: no frame
    status, body = await patch(session, {"style_scale": 0.8})
    assert status == 200
    await frame_of(daemon, body["version"])
    scale, image = last_style(renderer)
    assert scale == 0.8 and np.array_equal(image.pixels, pixels)
    status, again = await put(session, encoded(pixels, "PNG"), "image/png")  # same content: nothing new
    assert not again["changed"] and again["version"] == body["version"]
    status, body = await put(session, pixels.tobytes(), "application/octet-stream", **{"X-Width": "32",
                                                                                      "X-Height": "24"})
    assert not body["changed"]  # the same pixels as raw RGBA
    status, body = await put(session, encoded(rgba(40, 30), "JPEG"), "image/jpeg")
    assert body["changed"] and body["active"]
    await frame_of(daemon, body["version"])
    assert last_style(renderer)[1].width == 40
    async with session.get("/v1/style") as r:
        state = await r.json()
    assert state["enabled"] and state["present"] and state["active"] and state["scale"] == 0.8
    assert state["source"] == "rest" and state["accepted"] == 2 and state["unchanged"] == 2
    assert daemon.health()["style"]["digest"] == body["digest"]
    async with session.delete("/v1/style") as r:
        body = await r.json()
    assert body["cleared"]
    await frame_of(daemon, body["version"])
    assert last_style(renderer)[1] is None
    status, body = await patch(session, {"style_scale": 2.5})
    assert status == 400 and body["error"]["field"] == "style_scale" and "from 0 (off) to 2" in body["error"]["message"]
    status, body = await put(session, b"not a png", "image/png")
    assert status == 400 and body["error"]["field"] == "style" and "not a valid PNG" in body["error"]["message"]


async def test_websocket_style_messages(api):
    session, daemon, renderer = api
    pixels = rgba(16, 8)
    async with session.ws_connect("/v1/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_bytes(inputs.pack_ws_input("rgba", pixels.tobytes(), 16, 8, style=True))
        await ws.send_str(json.dumps({"params": {"style_scale": 1.5}}))
        replies = []
        while len(replies) < 2:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] != "params":
                replies.append(json.loads(message.data))
    style, applied = replies
    assert style["type"] == "style" and style["changed"] and (style["width"], style["height"]) == (16, 8)
    assert applied["type"] == "applied" and daemon.scheduler.style_active
    assert daemon.scheduler.style.source == "websocket"


async def test_osc_style_scale(api):
    session, daemon, renderer = api
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", daemon.osc_port))
    try:
        transport.sendto(osc_message("/bridge/style_scale", 1.25))
        for _ in range(500):
            if daemon.scheduler.params.style_scale == 1.25:
                break
            await asyncio.sleep(0.01)
        transport.sendto(osc_message("/bridge/params", json.dumps({"style_scale": 0.5, "seed": 3})))
        transport.sendto(osc_message("/bridge/style_scale", 7.0))  # out of range: rejected, state untouched
        for _ in range(500):
            if daemon.osc.health()["rejected"] >= 1 and daemon.scheduler.params.style_scale == 0.5:
                break
            await asyncio.sleep(0.01)
    finally:
        transport.close()
    assert daemon.scheduler.params.style_scale == 0.5 and daemon.scheduler.params.seed == 3
    assert daemon.osc.health()["rejected"] >= 1


async def test_style_segment_written_by_another_process_is_polled(api):
    session, daemon, renderer = api
    async with segment_writer() as (name, write):
        async with session.put("/v1/style", json={"shm": name}) as r:
            assert r.status == 200 and (await r.json())["shm"] == name
        await write(90, 40, 24)
        feed = daemon.app[STYLES]
        for _ in range(500):
            if feed.shm_reads >= 1:
                break
            await asyncio.sleep(0.01)
        image = daemon.scheduler.style
        assert image.source == "shm" and (image.width, image.height) == (40, 24) and image.pixels[0, 0, 0] == 90
        async with session.delete("/v1/style") as r:
            assert (await r.json())["cleared"]
        assert daemon.health()["style"]["shm"] is None


async def test_without_ip_adapter_style_is_refused_with_the_way_out(config, daemon_factory):
    factory = lambda config: (RecordingRenderer(), {"model": "recording", "device": "cpu", "dtype": "none"})  # noqa
    async with daemon_factory(config, renderer_factory=factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            status, body = await put(session, encoded(rgba(), "PNG"), "image/png")
            assert status == 409 and body["error"]["field"] == "style" and "--ip-adapter" in body["error"]["message"]
            before = daemon.scheduler.params, daemon.scheduler.version
            status, body = await patch(session, {"style_scale": 0.5, "seed": 4})
            assert status == 400 and body["error"]["field"] == "style_scale" \
                and "--ip-adapter" in body["error"]["message"]
            assert (daemon.scheduler.params, daemon.scheduler.version) == before
            status, body = await patch(session, {"style_scale": 0})  # off is always fine
            assert status == 200
            async with session.get("/v1/style") as r:
                assert (await r.json())["enabled"] is False
            async with session.get("/v1/schema") as r:
                schema = await r.json()
            assert schema["parameters"]["style_scale"]["maximum"] == 0 and "PUT /v1/style" in schema["style"]
            async with session.ws_connect("/v1/ws") as ws:
                assert (await ws.receive_json())["type"] == "hello"
                await ws.send_bytes(inputs.pack_ws_input("png", encoded(rgba(), "PNG"), style=True))
                reply = await ws.receive_json()
                while reply["type"] != "error":
                    reply = await ws.receive_json()
                assert "--ip-adapter" in reply["error"]["message"]
    assert daemon.scheduler.style is None


async def test_demo_daemon_renders_with_the_demo_ip_adapter(config, daemon_factory):
    async with daemon_factory(config, ip_adapter="demo") as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            plain = await daemon.scheduler.next_frame(0, 120)
            status, body = await put(session, encoded(rgba(64, 64), "PNG"), "image/png")
            status, body = await patch(session, {"style_scale": 1.0})
            styled = await frame_of_slow(daemon, body["version"])
            assert not np.array_equal(plain.pixels, styled.pixels)
            status, body = await patch(session, {"style_scale": 0})
            off = await frame_of_slow(daemon, body["version"])
            assert np.array_equal(plain.pixels, off.pixels)  # scale 0: exactly the frame without the adapter
            assert daemon.health()["ip_adapter"] == "demo"


async def frame_of_slow(daemon, version, timeout=120):
    frame = await daemon.scheduler.next_frame(0, timeout)
    while frame.version < version:
        frame = await daemon.scheduler.next_frame(frame.seq, timeout)
    return frame


async def test_style_images_are_per_channel(api):
    session, daemon, renderer = api
    from bridge.frontends.http.rest import CHANNELS

    status, body = await patch(session, {"style_scale": 0.0})
    async with session.patch("/v1/channels/left/params", json={"style_scale": 0.7}) as r:
        assert r.status == 200
    status, body = await put(session, rgba(16, 16).tobytes(), "application/octet-stream",
                             path="/v1/channels/left/style", **{"X-Width": "16", "X-Height": "16"})
    assert status == 200 and body["active"] is True
    left = daemon.app[CHANNELS]["left"].scheduler
    assert left.style is not None and daemon.scheduler.style is None  # main has none
    async with session.get("/v1/style") as r:
        assert (await r.json())["present"] is False
    async with session.get("/v1/channels/left/style") as r:
        state = await r.json()
    assert state["present"] and state["active"] and state["scale"] == 0.7
    for _ in range(500):  # left's frame carries its style image
        if any(scene is not None and scene.style is not None for _, scene in renderer.scenes):
            break
        await asyncio.sleep(0.01)
    assert any(params.style_scale == 0.7 and scene.style.width == 16 for params, scene in renderer.scenes
               if scene is not None and scene.style is not None)
    async with session.delete("/v1/channels/left/style") as r:
        assert (await r.json())["cleared"] is True
    assert left.style is None
