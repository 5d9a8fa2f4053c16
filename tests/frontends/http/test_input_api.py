"""Live input through a real daemon: PUT/GET/DELETE /v1/input, WebSocket input messages, a
client's input segment written by another process, OSC blends; plumbing on a recording renderer,
one end-to-end check on the demo model."""

import asyncio
import contextlib
import io
import subprocess
import sys
import textwrap

import aiohttp
import numpy as np
import pytest
from PIL import Image

from bridge.client import ShmInputWriter, osc_message, to_rgba8
from bridge.core.renderer import NullRenderer
from bridge.core.scene import InputImage
from bridge.frontends.http import inputs
from bridge.frontends.http.connections import GUARD
from bridge.frontends.http.input_api import INPUTS
from conftest import null_factory, unique_shm_name
from uploads import encoded, rgba


class RecordingRenderer(NullRenderer):
    def __init__(self):
        super().__init__()
        self.scenes = []

    def render(self, params, scene=None):
        self.scenes.append((params, scene))
        return super().render(params, scene)


@pytest.fixture
async def api(config, daemon_factory):
    renderer = RecordingRenderer()
    factory = lambda config: (renderer, {"model": "recording", "device": "cpu", "dtype": "none"})  # noqa: E731
    async with daemon_factory(config, renderer_factory=factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, renderer


async def frame_of(daemon, version):
    frame = await daemon.scheduler.next_frame(0, 5)
    while frame.version < version:
        frame = await daemon.scheduler.next_frame(frame.seq, 5)
    return frame


def last_input(renderer):
    params, scene = renderer.scenes[-1]
    return scene.input


async def put(session, data, content_type, **headers):
    async with session.put("/v1/input", data=data, headers={"Content-Type": content_type, **headers}) as r:
        return r.status, await r.json()


async def test_png_then_the_same_pixels_raw_is_no_change(api):
    session, daemon, renderer = api
    pixels = rgba()
    status, body = await put(session, encoded(pixels, "PNG"), "image/png")
    assert status == 200 and body["changed"] and body["active"] and (body["width"], body["height"]) == (32, 24)
    assert body["digest"] == InputImage.from_pixels(pixels).digest and body["version"] == 2
    await frame_of(daemon, 2)
    assert last_input(renderer).digest == body["digest"]
    status, again = await put(session, pixels.tobytes(), "application/octet-stream", **{"X-Width": "32",
                                                                                           "X-Height": "24"})
    assert status == 200 and again == {**body, "changed": False}
    async with session.get("/v1/input") as r:
        state = await r.json()
    assert state["present"] and state["active"] and state["accepted"] == 1 and state["unchanged"] == 1
    assert state["source"] == "rest" and daemon.health()["input"]["digest"] == body["digest"]


async def test_jpeg_is_accepted(api):
    session, daemon, renderer = api
    status, body = await put(session, encoded(rgba(), "JPEG"), "image/jpeg")
    assert status == 200 and body["changed"] and len(body["digest"]) == 32


async def test_strength_zero_input_off_and_delete_return_to_text_to_image(api):
    session, daemon, renderer = api
    status, body = await put(session, encoded(rgba(), "PNG"), "image/png")
    await frame_of(daemon, body["version"])
    for change, back in (({"strength": 0}, {"strength": 0.5}), ({"input": "off"}, {"input": True})):
        version = daemon.scheduler.apply(change).version
        await frame_of(daemon, version)
        assert last_input(renderer) is None
        version = daemon.scheduler.apply(back).version
        await frame_of(daemon, version)
        assert last_input(renderer).digest == body["digest"]
    async with session.delete("/v1/input") as r:
        cleared = await r.json()
    assert cleared["cleared"] and cleared["version"] == daemon.scheduler.version
    await frame_of(daemon, cleared["version"])
    assert last_input(renderer) is None
    async with session.delete("/v1/input") as r:
        assert (await r.json())["cleared"] is False


async def test_input_while_off_renders_nothing_new(api):
    session, daemon, renderer = api
    version = daemon.scheduler.apply({"input": False}).version
    status, body = await put(session, encoded(rgba(), "PNG"), "image/png")
    assert status == 200 and body["changed"] and not body["active"] and body["version"] == version


@pytest.mark.parametrize("data,content_type,headers,status,needle", [
    (b"GIF89a", "image/gif", {}, 415, "Content-Type must be one of application/octet-stream, image/png"),
    (bytes(16), "application/octet-stream", {}, 400, "needs its width and height"),
    (bytes(15), "application/octet-stream", {"X-Width": "2", "X-Height": "2"}, 400, "must be 16 bytes"),
    (bytes(16), "application/octet-stream", {"X-Width": "-2", "X-Height": "2"}, 400, "X-Width must be"),
    (bytes(4), "application/octet-stream", {"X-Width": "1", "X-Height": "4097"}, 400, "1 to 4096 pixels a side"),
    (b"\x89PNG not really", "image/png", {}, 400, "not a valid PNG image"),
    (b'{"shm": "../etc"}', "application/json", {}, 400, "shm must be a segment name"),
    (b'{"shm": "tb-no-such-segment"}', "application/json", {}, 400, "no shared-memory segment named"),
    (b'{"url": "x"}', "application/json", {}, 400, '{"shm": NAME}'),
])
async def test_bad_inputs_teach_and_change_nothing(api, data, content_type, headers, status, needle):
    session, daemon, renderer = api
    got, body = await put(session, data, content_type, **headers)
    assert got == status and needle in body["error"]["message"]
    assert daemon.scheduler.version == 1 and daemon.scheduler.input is None


async def test_oversized_png_and_body_are_refused(api, monkeypatch):
    session, daemon, renderer = api
    wide = encoded(np.zeros((1, 4097, 4), np.uint8), "PNG")
    status, body = await put(session, wide, "image/png")
    assert status == 400 and "4097x1" in body["error"]["message"]
    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 1000)
    status, body = await put(session, bytes(1001), "image/png")
    assert status == 413 and "at most 1000 bytes" in body["error"]["message"]


async def test_websocket_binary_message_is_an_input(api):
    session, daemon, renderer = api
    pixels = rgba(16, 8)
    async with session.ws_connect("/v1/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_bytes(inputs.pack_ws_input("rgba", pixels.tobytes(), 16, 8))
        await ws.send_bytes(inputs.pack_ws_input("png", encoded(pixels, "PNG")))
        await ws.send_bytes(b"TBI1" + bytes(30))
        replies = []
        while len(replies) < 3:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT and message.json()["type"] in ("input", "error"):
                replies.append(message.json())
    first, second, bad = replies
    assert first["type"] == "input" and first["changed"] and first["digest"] == InputImage.from_pixels(pixels).digest
    assert second["type"] == "input" and not second["changed"] and second["digest"] == first["digest"]
    assert bad["type"] == "error" and bad["error"]["field"] == "input"
    assert daemon.scheduler.input.source == "websocket"


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from bridge.client import ShmInputWriter
    name = sys.argv[1]
    with ShmInputWriter(name, 64, 64) as writer:
        print("ready", flush=True)
        for line in sys.stdin:  # one frame per line: "value width height"
            value, width, height = map(int, line.split())
            pixels = np.full((height, width, 3), value / 255.0, np.float32)  # float RGB, bottom-up rows
            pixels[0] = 0.0  # the bottom row (first in a bottom-up buffer) is black
            writer.write(pixels, flip=True)
            print("written", flush=True)
""")


@contextlib.asynccontextmanager
async def segment_writer():
    """Another process writing a client segment (WRITER): yields (name, write); ``await write(value,
    width, height)`` returns once that frame is in the segment."""
    name = unique_shm_name()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, name, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)

    async def write(value: int, width: int, height: int) -> None:
        proc.stdin.write(f"{value} {width} {height}\n".encode())
        await proc.stdin.drain()
        assert (await proc.stdout.readline()).strip() == b"written"

    try:
        assert (await proc.stdout.readline()).strip() == b"ready"
        yield name, write
    finally:
        proc.stdin.close()
        await proc.wait()


async def test_input_segment_written_by_another_process_is_polled(api):
    session, daemon, renderer = api
    name = unique_shm_name()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, name, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
    try:
        assert (await proc.stdout.readline()).strip() == b"ready"
        async with session.put("/v1/input", json={"shm": name}) as r:
            assert r.status == 200 and (await r.json())["shm"] == name
        for written, value in enumerate((10, 200, 200), 1):
            proc.stdin.write(f"{value} 40 24\n".encode())
            await proc.stdin.drain()
            assert (await proc.stdout.readline()).strip() == b"written"
            for _ in range(300):  # this write read (the third has the second's pixels: count the reads)
                if daemon.app[INPUTS].shm_reads >= written and daemon.scheduler.input.pixels[0, 0, 0] == value:
                    break
                await asyncio.sleep(0.01)
            image = daemon.scheduler.input
            assert daemon.app[INPUTS].shm_reads == written and image.source == "shm"
            assert (image.width, image.height) == (40, 24)
            assert image.pixels[0, 0, 0] == value and (image.pixels[-1, :, :3] == 0).all()  # rows flipped
        assert daemon.scheduler.stats.inputs == 2  # the repeated frame had the same content: no new input
        async with session.delete("/v1/input") as r:
            assert (await r.json())["cleared"]
        assert daemon.health()["input"]["shm"] is None
    finally:
        proc.stdin.close()
        await proc.wait()


async def test_osc_blend_strength_and_transition_fields(api):
    session, daemon, renderer = api
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", daemon.osc_port))
    try:
        transport.sendto(osc_message("/bridge/prompt", "a cat", 0.75, "a lion", 0.25))
        transport.sendto(osc_message("/bridge/strength", 0.75))
        transport.sendto(osc_message("/bridge/input", "off"))
        transport.sendto(osc_message("/bridge/seed_mix", 0.5))
        transport.sendto(osc_message("/bridge/seed2", str(2**64 - 1)))  # above 2**63: a decimal string
        transport.sendto(osc_message("/bridge/transition_frames", 12))
        transport.sendto(osc_message("/bridge/prompt", "a cat", 0.5, "a lion"))  # odd: rejected
        for _ in range(300):
            if daemon.osc.stats.rejected:  # the last datagram was handled
                break
            await asyncio.sleep(0.01)
    finally:
        transport.close()
    p = daemon.scheduler.params
    assert p.prompt == (("a cat", 0.75), ("a lion", 0.25)) and p.strength == 0.75 and p.input is False
    assert p.seed_mix == 0.5 and p.seed2 == 2**64 - 1 and p.transition_frames == 12
    assert daemon.osc.stats.rejected == 1


async def test_demo_model_input_changes_the_frame_and_strength_zero_restores_it(config, daemon_factory):
    async with daemon_factory(config) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            before = await frame_of(daemon, 1)
            status, body = await put(session, encoded(rgba(64, 64), "PNG"), "image/png")
            with_input = await frame_of(daemon, body["version"])
            assert not np.array_equal(before.pixels, with_input.pixels)
            off = await frame_of(daemon, daemon.scheduler.apply({"strength": 0}).version)
            assert np.array_equal(before.pixels, off.pixels)


def test_to_rgba8_converts_host_layouts():
    bgra_bottom_up = np.array([[[1, 2, 3, 4]], [[5, 6, 7, 8]]], np.uint8)
    assert to_rgba8(bgra_bottom_up, flip=True, bgra=True).tolist() == [[[7, 6, 5, 8]], [[3, 2, 1, 4]]]
    assert to_rgba8(np.array([[[1.0, 0.5, 0.0]]], np.float32)).tolist() == [[[255, 128, 0, 255]]]
    with pytest.raises(ValueError):
        to_rgba8(np.zeros((2, 2), np.uint8))
    with ShmInputWriter(unique_shm_name(), 4, 4) as writer, pytest.raises(ValueError, match="does not fit"):
        writer.write(np.zeros((5, 4, 4), np.uint8))


# -- issue 12: decode as a photo viewer would; header numbers; large uploads a few at a time ----------

async def test_16_bit_greyscale_is_scaled_not_clipped(api):
    session, daemon, renderer = api
    ramp = (np.arange(32, dtype=np.uint32).reshape(4, 8) * 65535 // 31).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")  # really a 16-bit greyscale file
    status, body = await put(session, out.getvalue(), "image/png")
    assert status == 200
    grey = daemon.scheduler.input.pixels[..., 0].astype(int)
    expected = np.round(ramp.astype(float) * 255 / 65535).astype(int)
    assert np.array_equal(grey, expected)  # clipping would make everything above 255/65535 white
    assert (daemon.scheduler.input.pixels[..., 3] == 255).all()


async def test_exif_orientation_is_applied(api):
    session, daemon, renderer = api
    stored = np.zeros((8, 16, 3), np.uint8)  # as the camera stored it: 16 wide, 8 high, left half red
    stored[:, :8, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    out = io.BytesIO()
    Image.fromarray(stored).save(out, "JPEG", exif=exif, quality=95)
    status, body = await put(session, out.getvalue(), "image/jpeg")
    assert status == 200 and (body["width"], body["height"]) == (8, 16)  # portrait, as a viewer shows it
    shown = daemon.scheduler.input.pixels.astype(int)
    assert shown[:6, :, 0].mean() > 200 and shown[-6:, :, 0].mean() < 50  # the red half is now on top


@pytest.mark.parametrize("value", ["9" * 5000, "\u0661\u0666", "\u00b2", "1e3", ""])
async def test_bad_x_width_is_400_naming_the_header(api, value):
    session, daemon, renderer = api
    async with session.put("/v1/input", data=bytes(16), headers={
            "Content-Type": "application/octet-stream", "X-Width": value, "X-Height": "2"}) as r:
        body = await r.json()
    assert r.status == 400 and body["error"]["field"] == "X-Width", body
    assert "whole number of pixels" in body["error"]["message"]
    async with session.get("/v1/health") as r:
        assert r.status == 200


async def test_raw_input_of_the_wrong_length_is_refused_before_it_is_read(api):
    session, daemon, renderer = api
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
    writer.write(b"PUT /v1/input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                 b"X-Width: 4096\r\nX-Height: 4096\r\nContent-Length: 67108865\r\n\r\n")  # no body sent at all
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")


async def test_an_image_too_large_by_its_header_is_refused_before_the_rest_arrives(api):
    session, daemon, renderer = api
    head = encoded(np.zeros((1, 4097, 4), np.uint8), "PNG")
    head += bytes(300 * 1024 - len(head))  # past the head the daemon judges; the 20 MB announced never come
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
    writer.write(b"PUT /v1/input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 20000000\r\n\r\n" + head)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400") and b"4097x1" in answer, answer[:300]
    assert daemon.scheduler.input is None


async def test_large_uploads_beyond_the_cap_get_503_and_the_daemon_serves(config, daemon_factory):
    from bridge.frontends.http.connections import HttpLimits

    limits = HttpLimits(max_large_bodies=2, body_timeout_s=60, body_grace_s=60, body_min_rate=1)  # keeping up
    async with daemon_factory(config, renderer_factory=null_factory, http=limits) as daemon:
        port = daemon.http_port
        holders = []
        for _ in range(2):  # two large PNG uploads in progress: headers and the first bytes only
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /v1/input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 20000000\r\n\r\n" + bytes(1 << 16))
            await writer.drain()
            holders.append((reader, writer))
        for _ in range(300):
            if daemon.app[GUARD].bodies.large_slots.locked():
                break
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async with session.put("/v1/input", data=bytes(2 << 20), headers={"Content-Type": "image/png"}) as r:
                body = await r.json()
            assert r.status == 503 and body["error"]["field"] == "input" and r.headers["Retry-After"] == "1"
            assert "too many large uploads at once" in body["error"]["message"]
            status, _ = await put(session, encoded(rgba(), "PNG"), "image/png")  # small ones still go through
            assert status == 200
            for _, writer in holders:
                writer.close()
            for _ in range(500):  # the slots come back when the uploads end
                if not daemon.app[GUARD].bodies.large_slots.locked():
                    break
                await asyncio.sleep(0.01)
            status, _ = await put(session, encoded(rgba(1200, 1000), "PNG"), "image/png")
            assert status == 200
