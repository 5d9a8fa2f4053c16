"""The live page in a real browser: Debian's Chromium, driven by Playwright, against the demo model."""

import asyncio
import contextlib
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest

async_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"  # Playwright's own browser download does not work here
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
FIELDS = ("prompt", "seed", "guidance", "steps", "width", "height")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture
async def browser():
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Live:
    """The page, the daemon behind it, and what the browser reported."""

    def __init__(self, page, daemon, session):
        self.page, self.daemon, self.session = page, daemon, session
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))

    async def shown(self) -> dict:
        """The displayed frame's seq, version, format and size (the canvas's data attributes)."""
        return await self.page.evaluate("() => ({...document.getElementById('frame').dataset})")

    async def controls(self) -> dict:
        values = await self.page.evaluate(
            "(fields) => Object.fromEntries(fields.map(f => [f, document.getElementById(f).value]))", list(FIELDS))
        return {"prompt": values["prompt"], "seed": int(values["seed"]), "guidance": float(values["guidance"]),
                **{f: int(values[f]) for f in ("steps", "width", "height")}}

    async def daemon_params(self) -> dict:
        async with self.session.get("/v1/params") as r:
            return await r.json()

    async def patch(self, change: dict) -> None:
        async with self.session.patch("/v1/params", json=change) as r:
            assert r.status == 200, await r.text()

    async def until(self, check, what: str, timeout: float = 30):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := await check()):
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)
        return result

    async def params_where(self, predicate, what: str) -> dict:
        """Wait until the daemon's params satisfy ``predicate``; return them."""
        async def check():
            params = await self.daemon_params()
            return params if predicate(params) else None
        return await self.until(check, what)

    async def shown_where(self, predicate) -> dict | None:
        shown = await self.shown()
        return shown if predicate(shown) else None

    async def settled(self) -> dict:
        """Wait until the page shows the daemon's newest frame; return the daemon's params."""
        async def check():
            params = await self.daemon_params()
            return params if (await self.shown())["version"] == str(params["version"]) else None
        return await self.until(check, "the page to show the daemon's newest params version")

    async def canvas_pixels(self) -> np.ndarray:
        data = await self.page.evaluate("""() => {
            const c = document.getElementById('frame');
            const copy = new OffscreenCanvas(c.width, c.height);
            const context = copy.getContext('2d', {willReadFrequently: true});
            context.drawImage(c, 0, 0);
            return [c.width, c.height, Array.from(context.getImageData(0, 0, c.width, c.height).data)];
        }""")
        width, height, values = data
        return np.array(values, np.uint8).reshape(height, width, 4)


@contextlib.asynccontextmanager
async def open_live(daemon, browser, height: int = 700):
    """The live page of ``daemon`` in a new browser page, once its first frame is shown."""
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with aiohttp.ClientSession(base) as session:
        page = await browser.new_page(viewport={"width": 1100, "height": height})
        live = Live(page, daemon, session)
        await page.goto(base + "/")
        await live.until(lambda: live.shown_where(lambda shown: int(shown["seq"]) >= 1), "the first frame")
        yield live
        await page.close()  # before the daemon stops: a closing socket is no page error
    assert all(url.startswith(base + "/") or url.startswith("data:") for url in live.requests), live.requests


@pytest.fixture
async def live(config, daemon_factory, browser, request):
    extra = getattr(request, "param", {})  # more daemon options, by indirect parametrisation
    async with daemon_factory(config, initial=config.initial.merged({"width": 128, "height": 128}), **extra) as daemon:
        async with open_live(daemon, browser) as live:
            yield live


async def test_typing_renders_frames_and_the_page_shows_the_daemons_params(live):
    params = await live.settled()
    assert await live.controls() == {f: params[f] for f in FIELDS}
    before = await live.shown()
    image_before = await live.page.evaluate("() => document.getElementById('frame').toDataURL()")
    changes_before = live.daemon.scheduler.stats.changes

    typed = "a cat on a windowsill"
    await live.page.locator("#prompt").press_sequentially(typed, delay=15)
    await live.params_where(lambda p: p["prompt"] == typed, "the daemon to get the typed prompt")
    params = await live.settled()

    assert live.daemon.scheduler.stats.changes - changes_before == len(typed)  # every keystroke is a change
    after = await live.shown()
    assert int(after["seq"]) > int(before["seq"])
    assert await live.page.evaluate("() => document.getElementById('frame').toDataURL()") != image_before
    assert await live.controls() == {f: params[f] for f in FIELDS}
    assert typed in await live.page.locator("#shown-params").text_content()
    assert after["width"] == "128" and after["format"] == "jpeg"
    assert re.fullmatch(r"\d+ ms", await live.page.locator("#latency").text_content())
    assert re.fullmatch(r"\d+\.\d ms", await live.page.locator("#render-ms").text_content())
    assert await live.page.locator("#link").text_content() == "live"
    assert await live.page.locator("#strip li").count() >= 2

    ARTIFACTS.mkdir(exist_ok=True)
    await live.page.screenshot(path=ARTIFACTS / "live-page.png")
    assert live.problems == []


async def test_other_tools_new_seed_strip_formats_sizes_and_errors(live):
    page = live.page
    # Another tool changes the daemon: the page follows, big seeds included (beyond JS's 2**53).
    await live.patch({"seed": 4242, "guidance": 1.5, "steps": 2, "prompt": "a red door"})
    remembered = await live.settled()
    assert await live.controls() == {f: remembered[f] for f in FIELDS}
    await live.patch({"seed": 2**64 - 1})
    await live.settled()
    assert await page.locator("#seed").input_value() == str(2**64 - 1)

    await page.locator("#new-seed").click()
    params = await live.params_where(lambda p: p["seed"] != 2**64 - 1, "a new seed")
    assert await page.locator("#seed").input_value() == str(params["seed"])

    # The strip: clicking the frame of an earlier version restores its parameters.
    await live.settled()
    item = page.locator(f'#strip li[data-version="{remembered["version"]}"] button')
    await item.click()
    params = await live.params_where(lambda p: p["seed"] == 4242, "the restored seed")
    assert {f: params[f] for f in FIELDS} == {f: remembered[f] for f in FIELDS}
    assert params["version"] > remembered["version"]
    params = await live.settled()
    assert await live.controls() == {f: params[f] for f in FIELDS}

    # Lossless formats show the daemon's exact pixels; the header's size drives the canvas.
    for fmt in ("png", "rgba"):
        await page.locator("#format").select_option(fmt)
        await live.until(lambda: live.shown_where(
            lambda shown: shown["format"] == fmt and shown["version"] == str(live.daemon.scheduler.version)),
            f"a {fmt} frame")
        assert np.array_equal(await live.canvas_pixels(), live.daemon.scheduler.latest.pixels)
    await page.locator("#width").fill("192")
    await page.locator("#width").press("Tab")  # sizes are sent on change, not per digit
    params = await live.settled()
    assert params["width"] == 192 and (await live.shown())["width"] == "192"
    assert np.array_equal(await live.canvas_pixels(), live.daemon.scheduler.latest.pixels)

    # A bad value: the daemon's message shows on the page, the daemon keeps its state.
    await page.locator("#seed").fill("12x")
    await live.until(lambda: page.locator("#error").is_visible(), "the error message")
    assert "seed: seed must be an integer in [0, 2**64), got '12x'" == await page.locator("#error").text_content()
    assert await page.locator("#seed").get_attribute("aria-invalid") == "true"
    assert (await live.daemon_params())["seed"] == 4242
    await page.locator("#seed").fill("12")
    await live.params_where(lambda p: p["seed"] == 12, "the corrected seed")
    await live.until(lambda: page.locator("#error").is_hidden(), "the error to clear")

    # The MJPEG stream as a browser shows it: an <img> shows the current frame at once, then follows.
    await page.evaluate("""() => { const img = new Image(); img.id = 'mjpeg';
                                   img.src = '/v1/stream.mjpeg?quality=60'; document.body.append(img); }""")

    async def mjpeg_size(size):
        got = await page.evaluate("() => [document.getElementById('mjpeg').naturalWidth, "
                                  "document.getElementById('mjpeg').naturalHeight]")
        return got == size
    await live.until(lambda: mjpeg_size([192, 128]), "the MJPEG image to show the current frame")
    await live.patch({"height": 64})
    await live.until(lambda: mjpeg_size([192, 64]), "the MJPEG image to follow a change")
    assert live.problems == []



async def test_the_channel_picker_creates_and_drives_another_channel(live):
    from bridge.frontends.http import live as live_module
    from bridge.frontends.http.rest import CHANNELS

    await live.page.fill("#channel", "left")
    await live.page.dispatch_event("#channel", "change")
    registry = live.daemon.app[CHANNELS]
    await live.until(lambda: asyncio.sleep(0, registry.get("left") is not None), "the page to create channel left")
    # and to switch to it: its WebSocket is on left's frames (typing earlier would go to main's socket)
    await live.until(lambda: asyncio.sleep(0, registry.get("left").services[live_module.HUB].health()["clients"]
                                           .get("websocket") == 1), "the page's WebSocket on channel left")
    await live.page.fill("#prompt", "only on the left")
    left = registry.get("left").scheduler
    await live.until(lambda: asyncio.sleep(0, left.params.prompt == "only on the left"), "the left channel's prompt")
    assert (await live.daemon_params())["prompt"] == ""  # main untouched
    # Frames shown are the left channel's (its params version), and the datalist offers both channels.
    await live.until(lambda: live.shown_where(lambda shown: shown["version"] == str(left.version)),
                     "a frame of the left channel")
    options = await live.page.evaluate("() => [...document.querySelectorAll('#channels option')].map(o => o.value)")
    assert sorted(options) == ["left", "main"]
    # Deleting it sends the page back to main.
    async with live.session.delete("/v1/channels/left") as r:
        assert r.status == 200
    await live.until(lambda: live.page.evaluate("() => document.getElementById('channel').value === 'main'"),
                     "the page to fall back to main")
    assert not live.problems, live.problems


@pytest.fixture
async def live_loras(config, daemon_factory, browser, tmp_path, cache_dir):
    torch = pytest.importorskip("torch")
    from bridge.pipeline.loading.loader import load_pipeline
    from lora_files import lora_layers, write_diffusers

    write_diffusers(lora_layers(load_pipeline("demo", "cpu", torch.float32, cache_dir), seed=1),
                    tmp_path / "ink.safetensors")
    async with daemon_factory(config, lora_dir=tmp_path) as daemon:
        async with open_live(daemon, browser, height=800) as live:
            yield live


async def test_negative_prompt_field_and_lora_slider(live_loras):
    live, page = live_loras, live_loras.page
    await page.locator("#negative_prompt").fill("blurry")
    await live.params_where(lambda p: p["negative_prompt"] == "blurry", "the typed negative prompt")
    slider = page.locator('#loras input[data-name="ink"]')
    assert await slider.input_value() == "0" and await page.locator("#no-loras").is_hidden()
    await slider.fill("0.75")  # a range input's fill sets the value and fires input
    await live.params_where(lambda p: p["loras"] == {"ink": 0.75}, "the LoRA weight from the slider")
    await live.settled()
    await slider.blur()  # a slider being dragged is not moved under the hand
    await live.patch({"loras": {"ink": -1.5}, "negative_prompt": "fog"})  # another tool: the page follows
    await live.settled()
    assert await slider.input_value() == "-1.5"
    assert await page.locator("#negative_prompt").input_value() == "fog"
    await slider.fill("0")
    await live.params_where(lambda p: p["loras"] == {}, "the LoRA switched off")
    assert live.problems == []
@pytest.mark.parametrize("live", [{"output_dir": ARTIFACTS / "recordings"}], indirect=True)
async def test_seamless_checkbox_and_record_button(live):
    page = live.page
    await page.locator("#seamless").check()
    await live.params_where(lambda p: p["tiling"] == "xy", "tiling xy from the checkbox")
    await live.patch({"tiling": "x"})  # one axis, set by another tool: shown as indeterminate
    await live.until(lambda: page.evaluate("() => document.getElementById('seamless').indeterminate"),
                     "the checkbox to show one axis")
    await page.locator("#seamless").uncheck()
    await live.params_where(lambda p: p["tiling"] == "none", "tiling off from the checkbox")

    await page.locator("#record").click()
    await live.until(lambda: asyncio.sleep(0, live.daemon.health()["record"]["recording"]), "recording to start")
    # The daemon records as soon as it has the POST; the page marks the button when the answer is in.
    await live.until(lambda: page.evaluate("() => document.getElementById('record')"
                                           ".getAttribute('aria-pressed') === 'true'"),
                     "the button to show recording")
    for seed in (11, 12):
        await live.patch({"seed": seed})
        await live.settled()
    await live.until(lambda: asyncio.sleep(0, live.daemon.health()["record"]["frames"] >= 2), "frames to be recorded")
    await page.locator("#record").click()
    await live.until(lambda: asyncio.sleep(0, live.daemon.health()["record"]["files"]), "the file to be finished")
    name = live.daemon.health()["record"]["files"][-1]
    async def shows_file():
        return name in await page.locator("#record-state").text_content()
    await live.until(shows_file, "the page to show the file")
    assert (ARTIFACTS / "recordings" / name).stat().st_size > 0
    assert live.problems == []


async def test_record_button_is_disabled_without_output_dir(live):
    await live.until(lambda: live.page.locator("#record").is_disabled(), "the button to be disabled")
    assert "--output-dir" in await live.page.locator("#record").get_attribute("title")
