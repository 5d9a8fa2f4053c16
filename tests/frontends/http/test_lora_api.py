"""LoRAs through a real daemon (demo model, real sockets): GET /v1/loras, the loras parameter over
REST, WebSocket and OSC (/bridge/lora s f), and bad input refused with the state untouched."""

import json

import aiohttp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402
from waiting import frame_at, until  # noqa: E402


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("api-loras")
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    for i, name in enumerate(["ink", "paper", "clay", "glass", "smoke"]):
        write_diffusers(lora_layers(pipe, seed=10 + i, text=(name == "ink")), folder / f"{name}.safetensors")
    (folder / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    wrong = {k: (d[:, :3], u) for k, (d, u) in lora_layers(pipe, seed=20, conv=False, text=False).items()}
    write_diffusers(wrong, folder / "sd15.safetensors")
    (folder / "notes.txt").write_text("not a LoRA")
    return folder


@pytest.fixture
async def api(config, daemon_factory, lora_dir):
    async with daemon_factory(config, lora_dir=lora_dir) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


async def patch(session, change):
    async with session.patch("/v1/params", json=change) as r:
        return r.status, await r.json()


async def test_listing_rest_patch_and_weight_zero(api, lora_dir):
    session, daemon = api
    async with session.get("/v1/loras") as r:
        listing = await r.json()
    files = {f["name"]: f for f in listing["loras"]}
    # not notes.txt; and the demo model's own two (test_demo_loras.py)
    assert set(files) == {"ink", "paper", "clay", "glass", "smoke", "corrupt", "sd15", "demo-a", "demo-b"}
    assert [name for name, f in files.items() if f.get("demo")] == ["demo-a", "demo-b"]
    assert files["ink"]["targets"] == ["unet", "text_encoder", "text_encoder_2"] and files["ink"]["rank"] == 4
    assert files["paper"]["targets"] == ["unet"] \
        and files["paper"]["size"] == (lora_dir / "paper.safetensors").stat().st_size
    assert "error" in files["corrupt"] and listing["active"] == {}

    base = await frame_at(session, daemon.scheduler.version)
    status, body = await patch(session, {"loras": {"ink": 0.8}})
    assert status == 200, body
    styled = await frame_at(session, body["version"])
    assert not np.array_equal(styled, base)
    status, body = await patch(session, {"loras": {"paper": -1}})  # merged per name
    assert status == 200 and dict(daemon.scheduler.params.loras) == {"ink": 0.8, "paper": -1.0}
    async with session.get("/v1/params") as r:
        assert (await r.json())["loras"] == {"ink": 0.8, "paper": -1.0}
    status, body = await patch(session, {"loras": {"ink": 0, "paper": 0}})
    assert status == 200 and daemon.scheduler.params.loras == ()
    assert np.array_equal(await frame_at(session, body["version"]), base)


@pytest.mark.parametrize("change,message", [
    ({"loras": {"nobody": 1}}, "unknown LoRA"),
    ({"loras": {"../ink": 1}}, "no folders"),
    ({"loras": {"ink": 2.5}}, "from -2 to 2"),
    ({"loras": {"ink": "1"}}, "from -2 to 2"),
    ({"loras": ["ink"]}, "object of name"),
    ({"loras": {"ink": 1, "paper": 1, "clay": 1, "glass": 1, "smoke": 1}}, "at most 4"),
    ({"loras": {"corrupt": 1}}, "not a readable LoRA"),
    ({"loras": {"sd15": 1}}, "does not fit this model"),
    ({"loras": {"ink": 1, "sd15": 1}, "seed": 77}, "does not fit"),
])
async def test_bad_input_is_refused_and_nothing_changes(api, change, message):
    session, daemon = api
    before, version = daemon.scheduler.params, daemon.scheduler.version
    status, body = await patch(session, change)
    assert status == 400 and body["error"]["field"] == "loras" and message in body["error"]["message"], body
    assert daemon.scheduler.params == before and daemon.scheduler.version == version


async def test_fifth_lora_is_refused_when_four_are_active(api):
    session, daemon = api
    status, _ = await patch(session, {"loras": {"ink": 1, "paper": 1, "clay": 1, "glass": 1}})
    assert status == 200
    status, body = await patch(session, {"loras": {"smoke": 0.5}})
    assert status == 400 and "at most 4" in body["error"]["message"]
    status, _ = await patch(session, {"loras": {"glass": 0, "smoke": 0.5}})  # one out, one in: fine
    assert status == 200 and dict(daemon.scheduler.params.loras) == {"ink": 1, "paper": 1, "clay": 1, "smoke": 0.5}


async def next_reply(ws) -> dict:
    """The next applied/error message; frames (binary) and other notices in between are skipped."""
    while True:
        message = await ws.receive(timeout=60)
        if message.type == aiohttp.WSMsgType.TEXT and (reply := message.json()).get("type") in ("applied", "error"):
            return reply
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message


async def test_websocket_and_osc(api):
    session, daemon = api
    async with session.ws_connect("/v1/ws") as ws:
        await ws.send_json({"params": {"loras": {"clay": 1.5}}})
        reply = await next_reply(ws)
        assert reply["type"] == "applied", reply
        await ws.send_json({"params": {"loras": {"nobody": 1.5}}})
        reply = await next_reply(ws)
        assert reply["type"] == "error" and reply["error"]["field"] == "loras"
    osc = SimpleUDPClient("127.0.0.1", daemon.osc_port)
    osc.send_message("/bridge/lora", ["glass", 0.25])  # first use: loaded off the loop, then applied
    await until(lambda: dict(daemon.scheduler.params.loras).get("glass") == 0.25, "the OSC LoRA change")
    osc.send_message("/bridge/lora", ["clay", 0.0])
    await until(lambda: "clay" not in dict(daemon.scheduler.params.loras), "the OSC removal")
    osc.send_message("/bridge/params", json.dumps({"loras": {"glass": -0.5}}))
    await until(lambda: dict(daemon.scheduler.params.loras).get("glass") == -0.5, "loras in /bridge/params")
    rejected = daemon.osc.stats.rejected
    osc.send_message("/bridge/lora", ["nobody", 1.0])
    await until(lambda: daemon.osc.stats.rejected == rejected + 1, "the OSC refusal")
    assert dict(daemon.scheduler.params.loras) == {"glass": -0.5}
    await frame_at(session, daemon.scheduler.version)  # the folded state renders


async def test_osc_bundle_of_lora_messages_is_one_change(api):
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    session, daemon = api
    status, _ = await patch(session, {"loras": {"ink": 1, "paper": 1, "clay": 1, "glass": 1}})
    assert status == 200
    bundle = OscBundleBuilder(IMMEDIATELY)
    for name, weight in (("glass", 0.0), ("smoke", 0.5)):  # one out, one in: within the limit of 4
        message = OscMessageBuilder("/bridge/lora")
        message.add_arg(name)
        message.add_arg(weight)
        bundle.add_content(message.build())
    SimpleUDPClient("127.0.0.1", daemon.osc_port).send(bundle.build())
    await until(lambda: "smoke" in dict(daemon.scheduler.params.loras), "the bundle")
    assert dict(daemon.scheduler.params.loras) == {"ink": 1, "paper": 1, "clay": 1, "smoke": 0.5}


async def test_sd2_daemon_refuses_an_sdxl_lora_and_folds_its_own(config, daemon_factory, cache_dir, tmp_path):
    """--model demo-sd: a LoRA made for SDXL is refused (400, state untouched, the daemon keeps
    rendering); one made for the SD 2.x model (UNet and its one text encoder) is folded and shows."""
    write_diffusers(lora_layers(load_pipeline("demo", "cpu", torch.float32, cache_dir), seed=30),
                    tmp_path / "xl.safetensors")
    write_diffusers(lora_layers(load_pipeline("demo-sd", "cpu", torch.float32, cache_dir), seed=31),
                    tmp_path / "sd.safetensors")
    async with daemon_factory(config, model="demo-sd", lora_dir=tmp_path) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            status, body = await patch(session, {"seed": 5, "guidance": 1.5, "negative_prompt": "blurry"})
            assert status == 200, body
            base = await frame_at(session, body["version"])
            status, body = await patch(session, {"loras": {"xl": 1.0}})
            assert status == 400 and body["error"]["field"] == "loras", body
            async with session.get("/v1/params") as r:
                assert (await r.json())["loras"] == {}
            status, body = await patch(session, {"loras": {"sd": 1.0}})
            assert status == 200, body
            folded = await frame_at(session, body["version"])
            assert not np.array_equal(folded, base)
            status, body = await patch(session, {"loras": {"sd": 0.0}})
            assert status == 200, body
            assert np.array_equal(await frame_at(session, body["version"]), base)  # the base weights restored
            async with session.get("/v1/health") as r:
                health = await r.json()
            assert health["family"] == "sd2" and health["render_errors"] == 0 and health["status"] == "ok", health


async def test_loras_are_per_channel(api):
    """Channels share one UNet per device: each frame is folded with its own channel's LoRAs."""
    session, daemon = api
    base = await frame_at(session, daemon.scheduler.version)
    async with session.patch("/v1/channels/left/params", json={"loras": {"paper": 1}}) as r:
        assert r.status == 200, await r.text()
        left_version = (await r.json())["version"]
    left = await frame_at(session, left_version, "left")
    assert np.abs(left.astype(int) - base.astype(int)).max() > 1
    async with session.get("/v1/channels/left/loras") as r:
        assert (await r.json())["active"] == {"paper": 1.0}
    async with session.get("/v1/loras") as r:
        assert (await r.json())["active"] == {}
    # main, rendered after left's folded frames, still shows the base weights' frame.
    prompt = daemon.scheduler.params.prompt
    status, body = await patch(session, {"prompt": prompt + " x"})
    status, body = await patch(session, {"prompt": prompt})
    assert status == 200
    assert np.array_equal(await frame_at(session, body["version"]), base)
    status, body = await patch(session, {"loras": {"paper": 1}})  # main with left's LoRA: left's frame
    assert status == 200
    main = await frame_at(session, body["version"])
    assert np.abs(main.astype(int) - left.astype(int)).max() <= 1  # alone or batched with left: CPU rounding
