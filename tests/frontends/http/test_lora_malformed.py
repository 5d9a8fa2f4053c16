"""Malformed LoRA files beside good ones, through a real daemon (demo model, real sockets).

Issue 24 item 4: one file whose header was nested 200,000 deep, held a tensor entry that is not an
object, or a nested shape made ``GET /v1/loras`` and every LoRA change answer 500 with a traceback,
also for the good files. Now each bad file is listed with its reason and refused in one line;
the good ones list and apply.
"""

import shutil
import struct

import aiohttp
import pytest

from bridge.app.frontends import OSC
from waiting import frame_at, until

BAD = {
    "deep": b"[" * 200_000 + b"]" * 200_000,
    "not_an_object": b'{"unet.a.lora_A.weight": 5}',
    "nested_shape": b'{"unet.a.lora_A.weight": {"dtype": "F32", "shape": [[4], 8], "data_offsets": [0, 128]}}',
    "garbage": bytes(range(7, 250)) * 4,
}


@pytest.fixture
async def api(config, daemon_factory, tmp_path, cache_dir):
    folder = tmp_path / "loras"
    folder.mkdir()
    for name, header in BAD.items():
        (folder / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(128))
    async with daemon_factory(config, lora_dir=folder) as daemon:
        # a good file of the folder's own: the demo model's first LoRA, made at start in the cache
        shutil.copy(next(cache_dir.glob("demo-loras-sdxl-*/demo-a.safetensors")), folder / "ink.safetensors")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def test_a_malformed_file_is_listed_with_its_reason_and_refused_while_the_good_ones_work(api):
    session, daemon = api
    async with session.get("/v1/loras") as r:
        assert r.status == 200, await r.text()
        files = {f["name"]: f for f in (await r.json())["loras"]}
    assert {"ink", "demo-a", "demo-b", *BAD} <= set(files), files
    for name in ("ink", "demo-a", "demo-b"):
        assert "error" not in files[name] and files[name]["targets"], files[name]
    for name in BAD:
        reason = files[name]["error"]
        assert reason.startswith("not a safetensors file") and "\n" not in reason and len(reason) < 300, reason
    assert "nested too deeply" in files["deep"]["error"]

    for name in BAD:
        async with session.patch("/v1/params", json={"loras": {name: 1}}) as r:
            body = await r.json()
        assert r.status == 400 and body["error"]["field"] == "loras", body
        message = body["error"]["message"]
        assert f"LoRA {name!r} is not a readable LoRA file" in message and "\n" not in message, message

    async with session.patch("/v1/params", json={"loras": {"ink": 0.5, "demo-b": 0.3}}) as r:
        body = await r.json()
    assert r.status == 200, body
    await frame_at(session, body["version"])
    assert dict(daemon.scheduler.params.loras) == {"ink": 0.5, "demo-b": 0.3}

    # OSC: the bad one refused, a good one after it applies
    from pythonosc.udp_client import SimpleUDPClient

    osc = SimpleUDPClient("127.0.0.1", daemon.osc_port)
    osc.send_message("/bridge/lora", ["deep", 1.0])
    osc.send_message("/bridge/lora", ["demo-a", 0.25])
    await until(lambda: dict(daemon.scheduler.params.loras).get("demo-a") == 0.25, "the OSC change after the bad one")
    assert daemon.app[OSC].stats.rejected == 1, daemon.app[OSC].stats
