"""The latest-wins mailbox, the fan-out hub, the WebSocket header and the shared encoder."""

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from bridge.core.errors import ValidationError
from bridge.core.frame import Frame
from bridge.core.params import Params
from bridge.frontends.http.streams import HEADER, FrameEncoder, FrameHub, StreamFormat, Subscription, pack_header
from bridge.outputs.png import PngCache


def make_frame(seq: int, width: int = 48, height: int = 32) -> Frame:
    pixels = np.random.default_rng(seq).integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return Frame(seq, seq + 10, Params(seed=seq, width=width, height=height), pixels, 12.5, 0)


def test_header_layout():
    frame = make_frame(7)
    header = pack_header(frame, "jpeg", 1234)
    assert len(header) == HEADER.size == 40
    assert header[:4] == b"TBW1"
    assert HEADER.unpack(header) == (b"TBW1", 40, 2, 0, 7, 17, 48, 32, 12.5, 1234)
    assert int.from_bytes(header[8:16], "little") == 7 and int.from_bytes(header[24:28], "little") == 48


@pytest.mark.parametrize("raw,expected", [
    ({}, StreamFormat("jpeg", 80)),
    ({"format": "png"}, StreamFormat("png", 80)),
    ({"format": "jpeg", "quality": "35"}, StreamFormat("jpeg", 35)),
    ({"quality": 100}, StreamFormat("jpeg", 100)),
])
def test_stream_format_parses_query_and_json(raw, expected):
    assert StreamFormat.parse(raw) == expected


@pytest.mark.parametrize("raw,field", [
    ({"format": "gif"}, "format"), ({"format": 1}, "format"), ({"quality": 0}, "quality"),
    ({"quality": "high"}, "quality"), ({"quality": True}, "quality"), ({"quality": 50.5}, "quality"),
])
def test_stream_format_rejects_with_the_field(raw, field):
    with pytest.raises(ValidationError) as caught:
        StreamFormat.parse(raw)
    assert caught.value.field == field


async def test_mailbox_keeps_only_the_newest_frame():
    sub = Subscription("test")
    for seq in range(1, 101):
        sub.offer(make_frame(seq, 8, 8))
        assert sub.pending == 1
    assert sub.skipped == 99
    assert (await sub.take()).seq == 100 and sub.pending == 0
    waiter = asyncio.create_task(sub.take())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.offer(make_frame(101, 8, 8))
    assert (await asyncio.wait_for(waiter, 1)).seq == 101
    waiter = asyncio.create_task(sub.take())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiter, 1) is None
    sub.offer(make_frame(102, 8, 8))
    assert sub.pending == 0 and await sub.take() is None


async def test_hub_primes_fans_out_and_closes():
    latest = make_frame(1, 8, 8)
    hub = FrameHub(lambda: latest)
    with hub.subscribe("a") as a, hub.subscribe("b") as b:
        assert (await a.take()).seq == 1
        hub.publish(make_frame(2, 8, 8))
        hub.publish(make_frame(3, 8, 8))
        assert (await a.take()).seq == 3 and (await b.take()).seq == 3
        assert hub.health() == {"clients": {"a": 1, "b": 1}, "frames_taken": 3, "frames_skipped": 3}
        hub.close()
        assert await a.take() is None and await b.take() is None
    assert hub.health()["clients"] == {} and hub.health()["frames_taken"] == 3
    with hub.subscribe("late") as late:  # after close: ends at once
        assert await late.take() is None


async def test_encoder_encodes_each_frame_and_format_once():
    with ThreadPoolExecutor(2) as pool:
        encoder = FrameEncoder(pool, PngCache(pool))
        frame = make_frame(3)
        jpeg_fmt, png_fmt, rgba_fmt = StreamFormat("jpeg", 90), StreamFormat("png"), StreamFormat("rgba")
        messages = await asyncio.gather(*(encoder.ws_message(frame, fmt)
                                          for fmt in (jpeg_fmt, png_fmt, rgba_fmt) for _ in range(5)))
        assert encoder.encoded == {"ws-jpeg": 1, "jpeg": 1, "ws-png": 1, "ws-rgba": 1}
        jpeg, png, rgba = messages[0], messages[5], messages[10]
        assert all(m is jpeg for m in messages[:5]) and all(m is rgba for m in messages[10:])
        for message, code in ((jpeg, 2), (png, 1), (rgba, 0)):
            fields = HEADER.unpack_from(message)
            assert fields[2] == code and fields[4:8] == (3, 13, 48, 32) and fields[9] == len(message) - 40
        assert np.array_equal(np.frombuffer(rgba[40:], np.uint8).reshape(32, 48, 4), frame.pixels)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png[40:]))), frame.pixels)
        decoded = np.asarray(Image.open(io.BytesIO(jpeg[40:])).convert("RGB"), np.int16)
        assert decoded.shape == (32, 48, 3)
        assert await encoder.jpeg(frame, 90) == jpeg[40:]  # the MJPEG stream shares the same JPEG
        assert encoder.encoded["jpeg"] == 1
        await encoder.jpeg(frame, 30)
        assert encoder.encoded["jpeg"] == 2  # another quality is another encode
