"""The live page's style image controls in a real browser (Debian's Chromium via Playwright): a
dropped image becomes the style image, the slider sets style_scale and follows the daemon, a bad
image shows the daemon's error; without --ip-adapter the controls stay hidden."""

import aiohttp
import numpy as np
import pytest

from test_live_page import CHROMIUM, Live, browser  # noqa: F401  (the fixture)
from test_live_page_control import _async, _error_text, drop_file, png_bytes

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason="no Debian chromium")

async def page_on(daemon, browser):  # noqa: F811
    base = f"http://127.0.0.1:{daemon.http_port}"
    session = aiohttp.ClientSession(base)
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    live = Live(page, daemon, session)
    await page.goto(base + "/")
    await live.until(lambda: live.shown_where(lambda shown: int(shown["seq"]) >= 1), "the first frame")
    return live


async def test_drop_a_style_image_and_slide_its_scale(config, daemon_factory, browser):  # noqa: F811
    async with daemon_factory(config, ip_adapter="demo") as daemon:
        live = await page_on(daemon, browser)
        try:
            page, sched = live.page, daemon.scheduler
            await live.until(lambda: page.is_visible("#style"), "the style controls")
            pixels, data = png_bytes(48, 32, seed=5)
            await drop_file(page, "style", data, "image/png")
            image = await live.until(lambda: _async(sched.style), "the dropped style image")
            assert image.source == "rest" and np.array_equal(image.pixels[..., :3], pixels)
            await page.fill("#style-scale", "1.25")  # a range input: fill sets the value and fires input
            await live.params_where(lambda p: p["style_scale"] == 1.25, "the style scale")
            assert sched.style_active
            await live.settled()
            await page.eval_on_selector("#style-scale", "e => e.blur()")  # let go of the slider
            await live.patch({"style_scale": 0.5})  # the slider follows the daemon
            await live.until(lambda: _value(page, "#style-scale", "0.5"), "the slider to follow")
            await drop_file(page, "style", b"not a png", "image/png")
            text = await live.until(lambda: _error_text(page), "the error")
            assert "style: style is not a valid PNG image" in text
            assert sched.style.digest == image.digest  # untouched
            live.problems = [p for p in live.problems if "400" not in p]  # the browser logs the refused request
            assert not live.problems, live.problems
        finally:
            await live.page.close()
            await live.session.close()


async def test_style_controls_hidden_without_ip_adapter(config, daemon_factory, browser):  # noqa: F811
    async with daemon_factory(config) as daemon:
        live = await page_on(daemon, browser)
        try:
            await live.until(lambda: _value(live.page, "#width", str(config.max_size), prop="max"), "the schema")
            assert not await live.page.is_visible("#style")
        finally:
            await live.page.close()
            await live.session.close()


async def _value(page, selector, value, prop="value"):
    return await page.eval_on_selector(selector, f"e => String(e.{prop})") == value
