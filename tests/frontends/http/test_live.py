"""The live front end over real loopback sockets: page, WebSocket protocol, MJPEG, slow clients."""

import asyncio
import io
import json
import socket
import time
import tracemalloc

import aiohttp
import numpy as np
import pytest
from PIL import Image

from bridge.frontends import sockets
from bridge.frontends.http import live
from bridge.frontends.http.streams import HEADER
from conftest import null_factory
from renderers import noise_factory

BOUNDARY = f"--{live.MJPEG_BOUNDARY}\r\n".encode()


@pytest.fixture
async def api(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def receive_json(ws, type_=None):
    """The next text message (of ``type_`` if given), skipping frames."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT:
            body = json.loads(msg.data)
            if type_ is None or body["type"] == type_:
                return body


async def receive_frame(ws, version=None):
    """The next binary frame (of params ``version`` or later if given): header fields and payload."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.BINARY:
            magic, size, fmt, _, seq, ver, width, height, render_ms, length = HEADER.unpack_from(msg.data)
            assert magic == b"TBW1" and len(msg.data) == size + length
            if version is None or ver >= version:
                return {"format": fmt, "seq": seq, "version": ver, "width": width, "height": height,
                        "render_ms": render_ms}, msg.data[size:]


async def test_page_static_files_and_schema(api):
    session, daemon = api
    async with session.get("/") as r:
        html = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert '<textarea id="prompt"' in html and "/static/page.js" in html and "http" not in html.split("<body>")[1]
    for name, kind in (("page.js", "javascript"), ("page.css", "text/css")):
        async with session.get(f"/static/{name}") as r:
            assert r.status == 200 and kind in r.content_type
    async with session.get("/static/../app.py") as r:
        assert r.status in (403, 404)
    async with session.get("/v1/schema") as r:
        schema = await r.json()
    assert set(schema["live"]) == {"GET /", "GET /v1/ws", "GET /v1/stream.mjpeg"}
    assert schema["websocket"]["out_binary"]["header_bytes"] == 40
    assert [f[0] for f in schema["websocket"]["out_binary"]["fields"]][:6] == \
        ["magic", "header_size", "format", "reserved", "seq", "params_version"]


async def test_websocket_change_in_frame_out_in_every_format(api):
    session, daemon = api
    async with session.ws_connect("/v1/ws?format=png") as ws:
        hello = await receive_json(ws, "hello")
        assert hello["params"]["width"] == 64 and hello["version"] == 1 and hello["format"] == "png"
        await ws.send_json({"params": {"seed": 258, "prompt": "abc"}})
        assert await receive_json(ws, "applied") == \
            {"type": "applied", "version": 2, "warnings": [], "format": "png", "quality": 80}
        while (params := await receive_json(ws, "params"))["version"] < 2:
            pass  # the first frame's (version 1) may come first
        assert params["version"] == 2 and params["params"]["seed"] == 258 and params["params"]["prompt"] == "abc"
        header, png = await receive_frame(ws, 2)
        assert header["format"] == 1 and header["version"] == 2 and (header["width"], header["height"]) == (64, 64)
        assert header["seq"] == daemon.scheduler.latest.seq and header["render_ms"] > 0
        expected = daemon.scheduler.latest.pixels
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)

        await ws.send_json({"format": "rgba"})  # the current frame comes again, in the new format
        assert (await receive_json(ws, "applied"))["format"] == "rgba"
        header, raw = await receive_frame(ws)
        assert header["format"] == 0 and header["seq"] == daemon.scheduler.latest.seq
        assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(64, 64, 4), expected)

        await ws.send_json({"format": "jpeg", "quality": 95, "params": {"width": 128}})
        assert (await receive_json(ws, "applied"))["quality"] == 95
        header, jpeg = await receive_frame(ws, 3)
        image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.int16)
        assert header["format"] == 2 and image.shape == (64, 128, 3)
        # NullRenderer's flat colour: (seed & 255, seed >> 8 & 255, len(prompt)) = (2, 1, 3)
        assert np.abs(image - (2, 1, 3)).max() <= 4
    async with session.get("/v1/params") as r:
        assert (await r.json())["version"] == 3


@pytest.mark.parametrize("change", [
    {"seed": "7a"}, {"seed": -1}, {"width": 100}, {"width": 4096}, {"steps": 9}, {"guidance": "high"},
    {"prompt": 5}, {"prompt": "x" * 4001}, {"colour": 1}, [1], "a cat",
])
async def test_bad_params_get_the_same_error_as_rest(api, change):
    session, daemon = api
    async with session.patch("/v1/params", json=change) as r:
        assert r.status == 400
        rest_error = await r.json()
    async with session.ws_connect("/v1/ws") as ws:
        await ws.send_json({"params": change})
        reply = await receive_json(ws, "error")
        assert reply == {"type": "error", **rest_error}
        await ws.send_json({"params": {"seed": 99}})  # the connection stays usable
        assert (await receive_json(ws, "applied"))["version"] == 2
    assert daemon.scheduler.stats.rejected == 2


@pytest.mark.parametrize("send,field,needle", [
    ("str", None, "not valid JSON"),
    ('{"params": {"guidance": NaN}}', None, "NaN is not a number JSON allows"),
    ("[1, 2]", None, "expected a JSON object"),
    ('{"prompt": "a cat"}', "prompt", 'unknown message key \'prompt\'; known: params, format, quality'),
    ('{"format": "gif"}', "format", "format must be one of jpeg, png, rgba"),
    ('{"quality": 0}', "quality", "from 1 to 100"),
    (b"\x00\x01binary", "input", "send JSON text messages for everything else"),
])
async def test_bad_messages_are_answered_and_change_nothing(api, send, field, needle):
    session, daemon = api
    async with session.ws_connect("/v1/ws") as ws:
        await receive_json(ws, "hello")
        await (ws.send_bytes(send) if isinstance(send, bytes) else ws.send_str(send))
        error = (await receive_json(ws, "error"))["error"]
        assert error["field"] == field and needle in error["message"]
        await ws.send_json({"format": "png"})
        assert (await receive_json(ws, "applied"))["format"] == "png"
    assert daemon.scheduler.version == 1


async def test_huge_message_closes_with_1009_and_the_daemon_carries_on(api):
    session, daemon = api
    async with session.ws_connect("/v1/ws") as ws:
        await receive_json(ws, "hello")
        await ws.send_str(json.dumps({"params": {"prompt": "x" * live.MAX_MESSAGE_BYTES}}))
        while (await asyncio.wait_for(ws.receive(), 10)).type not in (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            pass
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    async with session.ws_connect("/v1/ws") as ws:
        await ws.send_json({"params": {"seed": 1}})
        assert (await receive_json(ws, "applied"))["version"] == 2
    assert daemon.scheduler.version == 2


async def test_websocket_from_another_origin_is_refused(api):
    session, daemon = api
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await session.ws_connect("/v1/ws", origin="http://evil.example")
    assert caught.value.status == 403
    port = daemon.http_port
    async with session.ws_connect("/v1/ws", origin=f"http://127.0.0.1:{port}") as ws:  # its own page
        assert (await receive_json(ws, "hello"))["type"] == "hello"
    async with session.get("/v1/ws?format=bmp", headers={"Connection": "Upgrade", "Upgrade": "websocket"}) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "format"


async def read_mjpeg_part(stream: aiohttp.StreamReader) -> bytes:
    """One part's JPEG; the boundary before it has been read, a part ends at the next boundary."""
    assert await stream.readuntil(b"\r\n\r\n") == b"Content-Type: image/jpeg\r\n\r\n"
    return (await stream.readuntil(b"\r\n" + BOUNDARY))[:-len(BOUNDARY) - 2]


async def open_mjpeg(session, url):
    response = await session.get(url)
    assert response.status == 200 and response.content_type == "multipart/x-mixed-replace"
    assert response.headers["Content-Type"].endswith(f"boundary={live.MJPEG_BOUNDARY}")
    assert await response.content.readexactly(len(BOUNDARY)) == BOUNDARY
    return response


async def test_mjpeg_stream_follows_changes_at_the_asked_quality(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=noise_factory, initial=config.initial.merged(
            {"width": 128, "height": 96})) as daemon:
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with aiohttp.ClientSession(base) as session:
            async with session.get("/v1/stream.mjpeg?quality=0") as r:
                assert r.status == 400 and (await r.json())["error"]["field"] == "quality"
            sizes = {}
            for quality in (20, 95):
                async with await open_mjpeg(session, f"/v1/stream.mjpeg?quality={quality}") as r:
                    first = await read_mjpeg_part(r.content)
                    assert Image.open(io.BytesIO(first)).size == (128, 96)
                    assert first == await daemon.app[live.ENCODER].jpeg(daemon.scheduler.latest, quality)
                    sizes[quality] = len(first)
                    daemon.scheduler.apply({"seed": 1000 + quality})
                    second = await read_mjpeg_part(r.content)
                    assert second == await daemon.app[live.ENCODER].jpeg(daemon.scheduler.latest, quality)
                    assert daemon.scheduler.latest.params.seed == 1000 + quality
            assert sizes[95] > 2 * sizes[20]


SOCKET_BUFFER = 64 * 1024  # the kernel doubles it for its bookkeeping


def small_receive_buffer(addr_info):
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # before connect: fixes the window
    return sock


def small_send_buffer(bind_http):
    def bind(host, port):
        sock = bind_http(host, port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)  # accepted sockets inherit it
        return sock

    return bind


@pytest.mark.parametrize("kind", ["websocket", "mjpeg"])
async def test_a_slow_client_skips_frames_and_memory_stays_flat(config, daemon_factory, kind, monkeypatch):
    """A client that stops reading: the renderer keeps going, the daemon holds one frame for it.

    The kernel's socket buffers are fixed at SOCKET_BUFFER (both ends): loopback's autotuning
    would grow them to megabytes (tcp_rmem's maximum, 32 MiB here) by an amount that depends on
    the machine's load, and the frames they hold are a backlog outside the daemon's control.
    """
    monkeypatch.setattr(sockets, "bind_http", small_send_buffer(sockets.bind_http))
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with daemon_factory(config, renderer_factory=noise_factory, initial=config.initial.merged(
            {"width": 256, "height": 256})) as daemon:
        sched, hub = daemon.scheduler, daemon.app[live.HUB]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}", connector=connector) as session:
            if kind == "websocket":
                client = await session.ws_connect("/v1/ws?format=rgba")
            else:
                client = await open_mjpeg(session, "/v1/stream.mjpeg?quality=90")
            # Not reading: aiohttp stops reading the socket once 64 KiB are buffered, then TCP fills up.

            async def render(count: int) -> int:
                pending = 0
                for _ in range(count):
                    seq = sched.latest.seq if sched.latest else 0
                    sched.apply({"seed": sched.params.seed + 1})
                    assert await sched.next_frame(seq, 10) is not None, "the renderer stalled"
                    pending = max(pending, *(sub.pending for sub in hub.subscriptions))
                return pending

            await render(200)  # fills the socket buffers and the encode cache
            (sub,) = hub.subscriptions
            taken, skipped = sub.taken, sub.skipped
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                most_pending = await render(400)
                elapsed = time.perf_counter() - started
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            taken, skipped = sub.taken - taken, sub.skipped - skipped
            print(f"{kind}: 400 frames in {elapsed:.2f} s, {taken} taken, {skipped} skipped, "
                  f"traced memory {grown / 2**20:+.2f} MiB")
            assert most_pending <= 1
            # 400 frames of 256 KiB (raw) or ~150 KB (JPEG) would be >50 MB if they queued up.
            assert grown < 4 * 2**20, f"daemon memory grew by {grown / 2**20:.1f} MiB over 400 frames"
            assert skipped >= 360, (taken, skipped)

            # Reading again, the client catches up with the newest frame, not a backlog.
            newest, received = sched.latest, 0
            newest_jpeg = await daemon.app[live.ENCODER].jpeg(newest, 90)
            while True:
                received += 1
                if kind == "websocket":
                    if (await receive_frame(client))[0]["seq"] == newest.seq:
                        break
                elif await read_mjpeg_part(client.content) == newest_jpeg:
                    break
            print(f"{kind}: caught up after {received} frames")
            assert received < 100
            client.close() if kind == "mjpeg" else await client.close()


async def test_each_frame_is_encoded_once_for_many_clients(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=noise_factory) as daemon:
        encoder = daemon.app[live.ENCODER]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            clients = [await session.ws_connect("/v1/ws?format=jpeg&quality=70") for _ in range(4)]
            await daemon.scheduler.next_frame(0, 10)
            for seed in range(1, 6):
                daemon.scheduler.apply({"seed": seed})
                frames = [await receive_frame(ws, daemon.scheduler.version) for ws in clients]
                assert len({payload for _, payload in frames}) == 1
                assert len({header["seq"] for header, _ in frames}) == 1
            assert encoder.encoded["jpeg"] <= daemon.scheduler.stats.frames
            health = daemon.health()["streams"]
            assert health["clients"] == {"websocket": 4} and health["frames_taken"] >= 4 * 5
            for ws in clients:
                await ws.close()


async def test_shutdown_closes_websockets_and_ends_streams(config, daemon_factory):
    async with aiohttp.ClientSession() as session:
        daemon = daemon_factory(config, renderer_factory=noise_factory, initial=config.initial.merged(
            {"width": 256, "height": 256}))
        async with daemon:
            base = f"http://127.0.0.1:{daemon.http_port}"
            reader = await session.ws_connect(f"{base}/v1/ws")
            stuck = await session.ws_connect(f"{base}/v1/ws?format=rgba")  # never reads
            stream = await session.get(f"{base}/v1/stream.mjpeg")
            for seed in range(1, 201):  # enough to fill the stuck clients' socket buffers
                seq = daemon.scheduler.latest.seq if daemon.scheduler.latest else 0
                daemon.scheduler.apply({"seed": seed})
                assert await daemon.scheduler.next_frame(seq, 10) is not None

            async def until_closed():
                while (await reader.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    pass

            closed = asyncio.create_task(until_closed())
            started = time.monotonic()
        stopped_in = time.monotonic() - started
        await asyncio.wait_for(closed, 5)
        assert reader.close_code == aiohttp.WSCloseCode.GOING_AWAY
        assert stopped_in < 3 * live.CLOSE_TIMEOUT_S  # not aiohttp's 60 s handler shutdown timeout
        try:  # the stream ends (cut, since this client did not read): reading reaches its end at once
            await asyncio.wait_for(stream.content.read(), 5)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass
        stream.close()
        await stuck.close()
