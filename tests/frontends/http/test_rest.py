"""REST over real loopback sockets against a daemon running the demo model."""

import io

import aiohttp
import numpy as np
import pytest
from PIL import Image


@pytest.fixture
async def api(config, daemon_factory):
    async with daemon_factory(config) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def test_health_params_schema(api):
    session, daemon = api
    async with session.get("/v1/health") as r:
        health = await r.json()
    assert r.status == 200 and health["status"] == "ok" and health["model"] == "demo"
    assert set(health["osc"]) >= {"malformed", "unknown", "rejected", "applied"}
    async with session.get("/v1/params") as r:
        params = await r.json()
    assert params == {"prompt": "", "seed": 0, "steps": 1, "guidance": 0.0, "width": 64, "height": 64,
                      "strength": 0.5, "input": True, "seed2": 0, "seed_mix": 0.0, "transition_frames": 0,
                      "negative_prompt": "", "loras": {},
                      "tiling": "none", "controls": {}, "style_scale": 0.0, "version": 1}
    async with session.get("/v1/schema") as r:
        s = await r.json()
    assert s["parameters"]["width"]["maximum"] == 256
    assert "/bridge/prompt" in s["osc"] and "/bridge/size" in s["osc"]


async def test_patch_then_long_poll_returns_the_new_frame(api):
    session, daemon = api
    async with session.patch("/v1/params", json={"prompt": "a cat", "seed": 5}) as r:
        assert r.status == 200
        body = await r.json()
    assert body == {"version": 2, "warnings": []}
    seq = 0
    while True:
        async with session.get(f"/v1/frame.png?after={seq}&timeout=10") as r:
            assert r.status == 200 and r.content_type == "image/png"
            seq = int(r.headers["X-Frame-Seq"])
            if int(r.headers["X-Params-Version"]) == 2:
                assert r.headers["X-Seed"] == "5" and float(r.headers["X-Render-Ms"]) > 0
                png = await r.read()
                break
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (64, 64, 4)
    async with session.get(f"/v1/frame.rgba?after={seq - 1}") as r:
        raw = np.frombuffer(await r.read(), np.uint8).reshape(64, 64, 4)
    assert np.array_equal(raw, image)  # PNG and raw carry the same pixels


async def test_long_poll_times_out_with_204(api):
    session, daemon = api
    frame = await daemon.scheduler.next_frame(0, 10)
    async with session.get(f"/v1/frame.png?after={frame.seq}&timeout=0.1") as r:
        assert r.status == 204 and r.headers["X-Frame-Seq"] == str(frame.seq)


@pytest.mark.parametrize("body,field,needle", [
    ('{"seed": "7a"}', "seed", "seed must be an integer in [0, 2**64), got '7a'"),
    ('{"width": 100}', "width", "multiple of 8"),
    ('{"width": 4096}', "width", "--max-size"),
    ('{"guidance": NaN}', None, "NaN is not a number JSON allows"),
    ('{"colour": 1}', "colour", "unknown parameter"),
    ('[1]', None, "JSON object"),
    ('{"prompt": ', None, "not valid JSON"),
    (b'{"prompt": "\xff"}', None, "UTF-8"),
])
async def test_bad_input_is_a_400_naming_the_field(api, body, field, needle):
    session, daemon = api
    before = daemon.scheduler.version
    async with session.patch("/v1/params", data=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["field"] == field and needle in error["message"]
    assert daemon.scheduler.version == before


async def test_long_prompt_gets_a_warning(api):
    session, _ = api
    async with session.patch("/v1/params", json={"prompt": "a castle on a hill " * 20}) as r:
        body = await r.json()
    assert r.status == 200 and "CLIP reads 77" in body["warnings"][0]


async def test_bad_query_and_unknown_route(api):
    session, _ = api
    async with session.get("/v1/frame.png?timeout=999") as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "timeout"
    async with session.get("/v1/nope") as r:
        assert r.status == 404 and "error" in await r.json()
    async with session.patch("/v1/params", data=b"x" * 100_000) as r:
        assert r.status == 413


async def test_binds_loopback_only_by_default(api):
    _, daemon = api
    assert daemon.config.host == "127.0.0.1"
    assert daemon.http_address[0] == "127.0.0.1" and daemon.osc_address[0] == "127.0.0.1"
