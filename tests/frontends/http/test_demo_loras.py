"""The demo LoRAs through a real daemon: with a demo model and no LoRA file anywhere, GET /v1/loras
lists demo-a and demo-b (random weights for that family, written once into the cache dir), and they
steer the frame over REST and OSC like any LoRA file."""


import aiohttp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from bridge.pipeline.families.sd2 import SD2  # noqa: E402
from bridge.pipeline.loading.demo import ensure_demo  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.steering.demo_loras import demo_lora_folder  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402
from waiting import frame_at, until  # noqa: E402


async def listing(session) -> dict:
    async with session.get("/v1/loras") as r:
        assert r.status == 200
        return {f["name"]: f for f in (await r.json())["loras"]}


@pytest.fixture
async def api(request, config, daemon_factory, tmp_path):
    """A daemon of the parametrised model with an empty --lora-dir."""
    async with daemon_factory(config, model=request.param, lora_dir=tmp_path / "loras") as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon


@pytest.mark.parametrize("api", ["demo"], indirect=True)
async def test_the_demo_model_comes_with_two_loras_that_steer_over_rest_and_osc(api, cache_dir):
    session, daemon = api
    files = await listing(session)
    assert set(files) == {"demo-a", "demo-b"}
    assert files["demo-a"]["targets"] == ["unet", "text_encoder", "text_encoder_2"] and files["demo-a"]["demo"]
    assert files["demo-b"]["targets"] == ["unet"] and files["demo-b"]["rank"] == 4 and files["demo-b"]["demo"]
    folder = cache_dir / "demo-loras-sdxl-v1"
    assert files["demo-b"]["size"] == (folder / "demo-b.safetensors").stat().st_size  # written into the cache

    base = await frame_at(session, daemon.scheduler.version)
    async with session.patch("/v1/params", json={"loras": {"demo-a": 1}}) as r:
        assert r.status == 200, await r.text()
        styled = await frame_at(session, (await r.json())["version"])
    assert not np.array_equal(styled, base)
    SimpleUDPClient("127.0.0.1", daemon.osc_port).send_message("/bridge/lora", ["demo-b", -1.5])
    await until(lambda: dict(daemon.scheduler.params.loras) == {"demo-a": 1.0, "demo-b": -1.5}, "the OSC LoRA change")
    both = await frame_at(session, daemon.scheduler.version)
    assert not np.array_equal(both, styled)
    async with session.patch("/v1/params", json={"loras": {"demo-a": 0, "demo-b": 0}}) as r:
        assert r.status == 200
        assert np.array_equal(await frame_at(session, (await r.json())["version"]), base)  # weight 0 restores


@pytest.mark.parametrize("api, family", [("demo-sd", "sd2"), ("demo-sd15", "sd15")], indirect=["api"])
async def test_a_one_encoder_demo_gets_loras_made_for_its_own_family(api, family, cache_dir):
    session, daemon = api
    files = await listing(session)
    assert files["demo-a"]["targets"] == ["unet", "text_encoder"]  # SD 2.x and SD 1.5: one text encoder
    async with session.patch("/v1/params", json={"loras": {"demo-a": 0.5, "demo-b": 1}}) as r:
        assert r.status == 200, await r.text()  # their shapes fit the family's demo model
        await frame_at(session, (await r.json())["version"])
    assert (cache_dir / f"demo-loras-{family}-v1" / "demo-a.safetensors").is_file()


async def test_an_operators_own_file_comes_first_and_a_model_folder_has_no_demo_loras(config, daemon_factory,
                                                                                     cache_dir, tmp_path):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(pipe, seed=5, text=False), tmp_path / "demo-a.safetensors")
    async with daemon_factory(config, lora_dir=tmp_path) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            files = await listing(session)
    assert "demo" not in files["demo-a"] and files["demo-a"]["size"] == (tmp_path / "demo-a.safetensors").stat().st_size
    assert files["demo-b"]["demo"]
    # The same demo weights loaded as a model folder are not "a demo model": only the operator's files are listed.
    async with daemon_factory(config, model=str(ensure_demo(cache_dir)), lora_dir=tmp_path) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            assert set(await listing(session)) == {"demo-a"}


def test_the_demo_loras_are_made_once_and_alike_everywhere(cache_dir, tmp_path):
    pipe = load_pipeline("demo-sd", "cpu", torch.float32, cache_dir)
    folder = demo_lora_folder(tmp_path / "one", pipe)
    assert folder == tmp_path / "one" / f"demo-loras-{SD2.name}-v1"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(stamps) == {"demo-a.safetensors", "demo-b.safetensors"}
    assert demo_lora_folder(tmp_path / "one", pipe) == folder  # found, not written again
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    again = demo_lora_folder(tmp_path / "two", pipe)  # another cache: the same bytes (fixed seeds)
    assert all((again / name).read_bytes() == (folder / name).read_bytes() for name in stamps)
    assert not [p for p in (tmp_path / "one").iterdir() if p.name.startswith(".")]  # no half-written folder left
