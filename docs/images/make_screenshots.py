"""Make docs/images/live-page.png from the running page: a demo daemon, Debian's Chromium driven by
Playwright (the ``test`` extra), a prompt typed, a demo LoRA turned up, the frame settled.

    python docs/images/make_screenshots.py                 # rewrites docs/images/live-page.png
    python docs/images/make_screenshots.py --out /tmp/x.png

Run it after a change to the live page, so the README's picture shows what the page shows.
``tests/test_docs.py`` runs it into a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images" / "live-page.png"
CHROMIUM = "/usr/bin/chromium"  # Playwright's own browser download is not used
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PROMPT = "a lighthouse at dusk, oil painting"
TIMEOUT_S = 120
STRIP = 8  # the page keeps the last 8 frames


async def until(check, what: str):
    deadline = time.monotonic() + TIMEOUT_S
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return result


async def shoot(base: str, out: Path) -> list[str]:
    """The page with a typed prompt and demo-a at 0.6, once it shows the daemon's newest frame;
    returns what the browser complained about (console errors, page errors)."""
    from playwright.async_api import async_playwright

    def get_params() -> dict:
        with urllib.request.urlopen(base + "/v1/params") as r:
            return json.load(r)

    async def params() -> dict:
        return await asyncio.to_thread(get_params)  # off the loop that drives the browser

    async def took_the_changes() -> bool:
        now = await params()
        return now["loras"] == {"demo-a": 0.6} and now["prompt"] == PROMPT and now["negative_prompt"] == "blurry"

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(base + "/")
            await page.locator("#prompt").press_sequentially(PROMPT, delay=20)
            await page.locator("#negative_prompt").fill("blurry")
            await page.locator('#loras input[data-name="demo-a"]').fill("0.6")
            await until(took_the_changes, "the daemon to take the prompt, the negative prompt and the LoRA")

            async def settled():
                shown = await page.evaluate("() => document.getElementById('frame').dataset.version")
                return shown == str((await params())["version"])

            await until(settled, "the page to show the newest frame")
            while await page.locator("#strip li").count() < STRIP:  # a full strip of last frames: new seeds
                await page.locator("#new-seed").click()
                await until(settled, "the page to show the new seed's frame")
            await page.locator("#prompt").blur()
            await page.screenshot(path=str(out), full_page=True)
        finally:
            await browser.close()
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache-dir", default=None, help="the demo model's cache (default: turbo-bridge's own)")
    parser.add_argument("--size", type=int, default=256, help="the frames' width and height")
    args = parser.parse_args(argv)
    from bridge.bench.latency import start_daemon, stop_daemon

    # The daemon runs this checkout's bridge too, installed or not.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="tb-shot-") as output_dir:  # --output-dir: the Record button works
        cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
        proc, http_port, _, _ = start_daemon("demo", "full", args.size, "", ["--output-dir", output_dir, *cache],
                                             TIMEOUT_S)
        try:
            problems = asyncio.run(shoot(f"http://127.0.0.1:{http_port}", args.out))
        finally:
            stop_daemon(proc)
    if problems:
        print("the page reported: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's bridge, wherever the script runs from
    sys.exit(main(sys.argv[1:]))
