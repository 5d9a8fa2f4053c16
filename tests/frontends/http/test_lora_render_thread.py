"""LoRAs on the render thread, through a real daemon: no file read there, a file removed while
folded, and a failure repeated on every frame (issue 24 item 5 and its "Degraded" LoRA findings).

- 12 LoRAs over 3 channels on one device made 52 file reloads on the render thread in 20 s (the
  catalog kept 8 loaded): now the files each channel shows stay loaded, so switching channels
  folds from memory; ``LoraCatalog.reads`` counts the files read, by thread.
- A LoRA idle past the catalog's grace (60 s) was evicted by other channels' loads and read again
  on the render thread: now every LoRA a channel uses is pinned while it does (bounded by the
  gate's capacity, past which a change is refused), and a change waits until its channel's whole
  set is loaded. The grace is made short here, so only the pins can keep them.
- A LoRA file removed while folded made every change a render error with a traceback: its
  loaded weights stay in use, warned once.
- A failure repeated on every frame (a seed flood) logged its traceback each time: now once, then
  counted lines.
"""

import asyncio
import logging
import shutil

import aiohttp
import pytest

from bridge.core.renderer import NullRenderer
from bridge.engine.loras import RESCAN_S
from waiting import frame_at, until

NAMES = [f"look{i:02d}" for i in range(20)]


@pytest.fixture
async def api(config, daemon_factory, tmp_path, cache_dir):
    folder = tmp_path / "loras"
    folder.mkdir()
    async with daemon_factory(config, lora_dir=folder) as daemon:
        demo = sorted(cache_dir.glob("demo-loras-sdxl-*/demo-*.safetensors"))
        for i, name in enumerate(NAMES):
            shutil.copy(demo[i % len(demo)], folder / f"{name}.safetensors")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, folder


async def patch(session, path, change):
    async with session.patch(path, json=change) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def test_switching_channels_with_12_loras_never_reads_a_file_on_the_render_thread(api):
    session, daemon, _ = api
    paths = {"main": "/v1/params", "left": "/v1/channels/left/params", "right": "/v1/channels/right/params"}
    for k, path in enumerate(paths.values()):
        await patch(session, path, {"loras": {name: 0.5 for name in NAMES[4 * k:4 * k + 4]}})
    catalog = daemon.scheduler.loras._catalog
    for seed in range(12):  # every channel renders again and again: the device switches LoRAs each time
        for name, path in paths.items():
            body = await patch(session, path, {"seed": seed})
            await frame_at(session, body["version"], None if name == "main" else name)  # this change's own frame
    readers = dict(catalog.reads)
    assert sum(readers.values()) == 12, readers  # each file once
    assert all(thread.startswith("lora-loader") for thread in readers), readers


async def test_a_lora_idle_past_its_grace_stays_loaded_while_its_channel_uses_it(api):
    session, daemon, _ = api
    catalog = daemon.scheduler.loras._catalog
    catalog.in_use_s = 0.05  # an unpinned file's grace (60 s in a show): only the pins can keep main's LoRAs
    body = await patch(session, "/v1/params", {"loras": {name: 0.5 for name in NAMES[:4]}})
    await frame_at(session, body["version"])
    await asyncio.sleep(0.2)  # main's LoRAs now idle past the grace
    previous: list[str] = []
    for k in range(1, 5):  # another channel goes through 16 more, four at a time: 12 unpinned, 8 kept
        now = NAMES[4 * k:4 * k + 4]
        body = await patch(session, "/v1/channels/other/params",
                           {"loras": {**{n: 0 for n in previous}, **{n: 0.5 for n in now}}})
        # Its own frame (the render thread has folded these, the last use that counts for the grace), then
        # past the grace: a file goes only when a later load finds it idle that long (LoraCatalog._keep).
        await frame_at(session, body["version"], "other")
        await asyncio.sleep(0.2)
        previous = now
    assert catalog.ready(NAMES[:4]) and not catalog.ready(NAMES[4:8])  # pinned kept; the oldest unpinned went
    body = await patch(session, "/v1/params", {"seed": 5})  # main renders again: folds from memory
    await frame_at(session, body["version"])
    readers = dict(catalog.reads)
    assert sum(readers.values()) == 20, readers  # each file once: none of main's read again
    assert all(thread.startswith("lora-loader") for thread in readers), readers
    assert daemon.health()["devices"][0]["lora_loader"]["in_use"] == 8


async def test_too_many_distinct_loras_in_use_at_once_are_refused_and_a_deleted_channel_frees_its_own(api):
    session, daemon, _ = api
    gate = daemon.scheduler.loras
    gate.capacity = 6
    await patch(session, "/v1/params", {"loras": {name: 0.5 for name in NAMES[:4]}})
    async with session.patch("/v1/channels/other/params", json={"loras": {n: 0.5 for n in NAMES[4:7]}}) as r:
        body = await r.json()
        assert r.status == 400, body
    message = body["error"]["message"]
    assert "too many distinct LoRAs in use at once on this device: 7" in message and "at most 6" in message
    assert "main: look00, look01, look02, look03" in message and "\n" not in message
    async with session.get("/v1/channels") as r:
        assert "other" not in str(await r.json())  # a refused creation leaves no channel
    assert gate.stats.loads == 4  # refused before any of its files was read
    await patch(session, "/v1/channels/other/params", {"loras": {n: 0.5 for n in NAMES[4:6]}})
    async with session.delete("/v1/channels/other") as r:
        assert r.status in (200, 204), await r.text()
    await patch(session, "/v1/channels/third/params", {"loras": {n: 0.5 for n in NAMES[8:10]}})  # other's freed


async def test_a_file_removed_while_folded_keeps_its_weights_and_is_reported_once(api, caplog):
    session, daemon, folder = api
    body = await patch(session, "/v1/params", {"loras": {"look00": 1.0}})
    folded = await frame_at(session, body["version"])
    (folder / "look00.safetensors").unlink()
    await asyncio.sleep(RESCAN_S)
    async with session.get("/v1/loras") as r:  # the folder is listed again: the name is gone from it
        assert "look00" not in {f["name"] for f in (await r.json())["loras"]}
    with caplog.at_level(logging.WARNING):
        for seed, weight in ((5, 1.0), (6, 0.5), (daemon.scheduler.params.seed, 1.0)):
            body = await patch(session, "/v1/params", {"seed": seed, "loras": {"look00": weight}})
            await frame_at(session, body["version"])
    assert daemon.scheduler.stats.render_errors == 0
    assert (await frame_at(session, body["version"]) == folded).all()  # the same weights, the same pixels
    assert sum("its file is gone" in r.getMessage() for r in caplog.records) <= 1


class FailsAfterSeed100(NullRenderer):
    def render(self, params, scene=None):
        if params.seed >= 100:
            raise RuntimeError("LoRA 'gone' cannot be read: No such file or directory")
        return super().render(params, scene)


async def test_a_failure_repeated_on_every_frame_logs_one_traceback(config, daemon_factory, caplog):
    factory = lambda config: (FailsAfterSeed100(), {"model": "fails", "device": "cpu", "dtype": "none"})  # noqa: E731
    async with daemon_factory(config, renderer_factory=factory) as daemon:
        sched = daemon.scheduler
        await sched.next_frame(0, 10)
        with caplog.at_level(logging.ERROR, logger="bridge.engine.scheduler"):
            for seed in range(100, 400):
                sched.apply({"seed": seed})
                if seed % 10 == 0:
                    await until(lambda: sched.stats.render_errors >= (seed - 100) // 10 + 1, "a failed render")
            await until(lambda: sched.stats.failing, "the failures")
        errors = [r for r in caplog.records if r.name == "bridge.engine.scheduler"]
        assert sched.stats.render_errors >= 30
        assert len(errors) == 1 and errors[0].exc_info is not None, [r.getMessage() for r in errors]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.get("/v1/health") as r:
                health = await r.json()
        assert health["status"] == "degraded" and "cannot be read" in health["last_error"]
