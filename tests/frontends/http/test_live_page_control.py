"""The live page's ControlNet controls in a real browser (Debian's Chromium via Playwright): a
dropped image becomes the control image, the slider sets the scale, an unknown-size error shows."""

import io

import aiohttp
import numpy as np
import pytest
from PIL import Image

from bridge.core.controls import ControlNetSpec
from test_live_page import CHROMIUM, Live, browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason="no Debian chromium")


@pytest.fixture
async def live(config, daemon_factory, browser):  # noqa: F811
    specs = (ControlNetSpec("depth", "demo"), ControlNetSpec("edges", "demo"))
    async with daemon_factory(config, controlnets=specs) as daemon:
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with aiohttp.ClientSession(base) as session:
            page = await browser.new_page(viewport={"width": 1100, "height": 700})
            live = Live(page, daemon, session)
            await page.goto(base + "/")
            await live.until(lambda: live.shown_where(lambda shown: int(shown["seq"]) >= 1), "the first frame")
            yield live
            await page.close()


def png_bytes(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return pixels, out.getvalue()


async def test_pick_an_image_and_slide_the_scale(live):
    page, sched = live.page, live.daemon.scheduler
    assert await page.is_visible("#control")
    assert await page.eval_on_selector_all("#control-name option", "os => os.map(o => o.value)") == ["depth", "edges"]
    await page.select_option("#control-name", "edges")
    pixels, data = png_bytes(40, 24)
    await page.set_input_files("#control-file", files=[{"name": "lines.png", "mimeType": "image/png",
                                                        "buffer": data}])
    image = await live.until(lambda: _async(sched.control("edges")), "the control image")
    assert image.source == "rest" and np.array_equal(image.pixels[..., :3], pixels)
    await page.fill("#control-scale", "1.25")  # a range input: fill sets the value and fires input
    params = await live.params_where(lambda p: p["controls"].get("edges", {}).get("scale") == 1.25, "the scale")
    assert params["controls"]["edges"]["preprocess"] == "none" and sched.control_active("edges")
    await live.settled()
    await page.eval_on_selector("#control-scale", "e => e.blur()")  # let go of the slider
    await live.patch({"controls": {"edges": 0.5}})  # the slider follows the daemon
    await live.until(lambda: _slider(page, "0.5"), "the slider to follow")
    assert not live.problems, live.problems


async def test_drop_an_image_and_a_bad_one_shows_the_error(live):
    page, sched = live.page, live.daemon.scheduler
    pixels, data = png_bytes(16, 16, seed=3)
    await drop_file(page, "control", data, "image/png")
    image = await live.until(lambda: _async(sched.control("depth")), "the dropped image")
    assert np.array_equal(image.pixels[..., :3], pixels)
    await drop_file(page, "control", b"not a png", "image/png")
    text = await live.until(lambda: _error_text(page), "the error")
    assert "control: control is not a valid PNG image" in text
    assert sched.control("depth").digest == image.digest  # untouched
    live.problems = [p for p in live.problems if "400" not in p]  # the browser logs the refused request
    assert not live.problems, live.problems


async def drop_file(page, box: str, data: bytes, mime: str) -> None:
    """Drop a file with ``data`` on the element ``box`` (a real DragEvent with a DataTransfer)."""
    await page.evaluate("""async ([box, bytes, type]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "x", { type }));
        document.getElementById(box).dispatchEvent(new DragEvent("drop", { dataTransfer: transfer,
                                                                          bubbles: true, cancelable: true }));
    }""", [box, list(data), mime])


async def _async(value):
    return value


async def _slider(page, value):
    return await page.eval_on_selector("#control-scale", "e => e.value") == value


async def _error_text(page):
    return await page.text_content("#error") if await page.is_visible("#error") else None
