"""Control images and the controls parameter through a real daemon: PUT/GET/DELETE
/v1/control/NAME, WebSocket TBC1 messages, a control segment written by another process, OSC
/bridge/control and /bridge/params, merges per name and field; plumbing on a recording renderer,
one end-to-end frame on the demo model with a demo ControlNet."""

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from bridge.client import osc_message
from bridge.core.controls import ControlNetSpec
from bridge.frontends.http import inputs
from bridge.frontends.http.control_api import CONTROLS
from control_calls import patch, put, rendered
from test_input_api import RecordingRenderer, frame_of, segment_writer
from uploads import encoded, rgba

SPECS = (ControlNetSpec("depth", "demo"), ControlNetSpec("edges", "demo"))


@pytest.fixture
async def api(config, daemon_factory):
    renderer = RecordingRenderer()
    factory = lambda config: (renderer, {"model": "recording", "device": "cpu", "dtype": "none"})  # noqa: E731
    async with daemon_factory(config, renderer_factory=factory, controlnets=SPECS) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, renderer


def controls_of(renderer):
    params, scene = renderer.scenes[-1]
    return dict(params.controls), dict(scene.controls)


async def test_image_frames_only_once_its_scale_is_on_and_settings_merge(api):
    session, daemon, renderer = api
    pixels = rgba()
    status, body = await put(session, "depth", encoded(pixels, "PNG"), "image/png")
    assert status == 200 and body["changed"] and not body["active"] and body["version"] == 1  # scale 0: no frame
    status, body = await patch(session, {"controls": {"depth": 0.8}})  # a bare number is the scale
    assert status == 200
    await frame_of(daemon, body["version"])
    settings, images = controls_of(renderer)
    assert settings["depth"].scale == 0.8 and list(images) == ["depth"]
    assert np.array_equal(images["depth"].pixels, pixels)
    # Per field: start leaves the scale; edges has no image yet, so it is not in the frame.
    status, body = await patch(session, {"controls": {"depth": {"start": 0.25}, "edges": {"scale": 1.5,
                                                                                          "preprocess": "canny"}}})
    await frame_of(daemon, body["version"])
    settings, images = controls_of(renderer)
    assert (settings["depth"].scale, settings["depth"].start, settings["depth"].end) == (0.8, 0.25, 1.0)
    assert settings["edges"].preprocess == "canny" and list(images) == ["depth"]
    async with session.get("/v1/params") as r:
        shown = (await r.json())["controls"]
    assert shown["depth"] == {"scale": 0.8, "start": 0.25, "end": 1.0, "preprocess": "none"}
    status, body = await put(session, "edges", pixels.tobytes(), "application/octet-stream", **{"X-Width": "32",
                                                                                               "X-Height": "24"})
    assert body["active"]
    await frame_of(daemon, body["version"])
    assert sorted(controls_of(renderer)[1]) == ["depth", "edges"]
    async with session.get("/v1/control/edges") as r:
        state = await r.json()
    assert state["present"] and state["active"] and state["scale"] == 1.5 and state["source"] == "rest"
    async with session.delete("/v1/control/edges") as r:
        assert (await r.json())["cleared"]
    status, body = await patch(session, {"controls": {"depth": 0}})  # off: not in the frame
    await frame_of(daemon, body["version"])
    assert controls_of(renderer)[1] == {}


async def test_unknown_names_are_404_and_bad_changes_leave_the_state(api):
    session, daemon, renderer = api
    for method in ("get", "put", "delete"):
        async with session.request(method, "/v1/control/pose", data=b"x", headers={"Content-Type": "image/png"}) as r:
            body = await r.json()
            assert r.status == 404 and "no ControlNet named 'pose'" in body["error"]["message"]
            assert "depth, edges" in body["error"]["message"]
    before = daemon.scheduler.params, daemon.scheduler.version
    for change, needle in [({"pose": 1}, "no ControlNet named 'pose'"), ({"depth": 2.5}, "from 0 (off) to 2"),
                           ({"depth": {"preprocess": "sobel"}}, "none, canny"), ({"depth": {"start": -1}}, "0 to 1"),
                           ({"depth": {"start": 0.8, "end": 0.2}}, "must not be after end"),
                           ({"depth": {"weight": 1}}, "unknown field"), ({"depth": True}, "from 0 (off) to 2"),
                           ([1], "must be an object")]:
        status, body = await patch(session, {"controls": change, "seed": 5})
        assert status == 400 and body["error"]["field"] == "controls" and needle in body["error"]["message"], body
    assert (daemon.scheduler.params, daemon.scheduler.version) == before
    status, body = await put(session, "depth", b"not a png", "image/png")
    assert status == 400 and body["error"]["field"] == "control" and "not a valid PNG" in body["error"]["message"]
    status, body = await put(session, "depth", b"\0" * 12, "application/octet-stream", **{"X-Width": "2",
                                                                                          "X-Height": "2"})
    assert status == 400 and "must be 16 bytes" in body["error"]["message"]
    assert daemon.scheduler.control("depth") is None


async def test_websocket_control_messages(api):
    session, daemon, renderer = api
    pixels = rgba(16, 8)
    async with session.ws_connect("/v1/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_bytes(inputs.pack_ws_input("png", encoded(pixels, "PNG"), control="edges"))
        await ws.send_bytes(inputs.pack_ws_input("rgba", pixels.tobytes(), 16, 8, control="pose"))
        await ws.send_str(json.dumps({"params": {"controls": {"edges": {"scale": 0.5}}}}))
        replies = []
        while len(replies) < 3:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] != "params":
                replies.append(json.loads(message.data))  # the replies, in order (not the frames' params)
    first, unknown, applied = replies
    assert first["type"] == "control" and first["name"] == "edges" and first["changed"]
    assert unknown["type"] == "error" and "no ControlNet named 'pose'" in unknown["error"]["message"]
    assert applied["type"] == "applied" and daemon.scheduler.control_active("edges")
    assert daemon.scheduler.control("edges").source == "websocket"


async def test_osc_control_and_params(api):
    session, daemon, renderer = api
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", daemon.osc_port))
    try:
        transport.sendto(osc_message("/bridge/control", "depth", 1.25))
        transport.sendto(osc_message("/bridge/params", json.dumps({"controls": {"edges": {"end": 0.5}}})))
        transport.sendto(osc_message("/bridge/control", "pose", 1.0))  # unknown: rejected, state untouched
        for _ in range(500):
            if daemon.osc.health()["rejected"] >= 1 and len(daemon.scheduler.params.controls) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        transport.close()
    settings = dict(daemon.scheduler.params.controls)
    assert settings["depth"].scale == 1.25 and settings["edges"].end == 0.5 and settings["edges"].scale == 0


async def test_control_segment_written_by_another_process_is_polled(api):
    session, daemon, renderer = api
    async with segment_writer() as (name, write):
        async with session.put("/v1/control/depth", json={"shm": name}) as r:
            assert r.status == 200 and (await r.json())["shm"] == name
        await write(90, 40, 24)
        feed = daemon.app[CONTROLS].feeds["depth"]
        for _ in range(500):
            if feed.shm_reads >= 1:
                break
            await asyncio.sleep(0.01)
        image = daemon.scheduler.control("depth")
        assert image.source == "shm" and (image.width, image.height) == (40, 24) and image.pixels[0, 0, 0] == 90
        assert daemon.health()["controls"]["depth"]["shm"] == name
        async with session.delete("/v1/control/depth") as r:
            assert (await r.json())["cleared"]
        assert daemon.health()["controls"]["depth"]["shm"] is None


async def test_demo_daemon_renders_with_a_demo_controlnet(config, daemon_factory):
    async with daemon_factory(config, controlnets=SPECS[:1]) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            plain = await daemon.scheduler.next_frame(0, 60)
            status, body = await put(session, "depth", encoded(rgba(64, 64), "PNG"), "image/png")
            status, body = await patch(session, {"controls": {"depth": {"scale": 1.0, "preprocess": "canny"}}})
            steered = await rendered(daemon, body["version"])
            assert not np.array_equal(plain.pixels, steered.pixels)
            status, body = await patch(session, {"controls": {"depth": 0}})
            off = await rendered(daemon, body["version"])
            assert np.array_equal(plain.pixels, off.pixels)  # scale 0: exactly the frame without it
            assert daemon.health()["controlnets"] == {"depth": "demo"}
