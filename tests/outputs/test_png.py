"""PNG files in --output-dir are complete whenever they appear."""

import asyncio
import threading

import numpy as np
from PIL import Image

from bridge.outputs.png import encode_png
from conftest import null_factory


def test_encode_png_roundtrip():
    pixels = np.random.default_rng(1).integers(0, 256, (33, 17, 4), dtype=np.uint8)
    from io import BytesIO

    assert np.array_equal(np.asarray(Image.open(BytesIO(encode_png(pixels)))), pixels)


async def test_latest_png_is_always_complete(config, daemon_factory, tmp_path):
    out = tmp_path / "frames"
    checked, bad = [], []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            path = out / "latest.png"
            if not path.exists():
                continue
            try:
                with Image.open(path) as image:
                    image.load()  # a truncated file raises here
                checked.append(image.size)
            except (OSError, SyntaxError) as exc:
                bad.append(repr(exc))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        async with daemon_factory(config, renderer_factory=null_factory, output_dir=out, keep_frames=True) as d:
            # Frames keep coming until the watcher has opened more than 10 files while they were
            # being replaced (however few turns a busy machine gives its thread), 60 at least.
            seed = 0
            while seed < 60 or len(checked) <= 10:
                seed += 1
                d.scheduler.apply({"seed": seed, "width": 256, "height": 256})
                await asyncio.sleep(0.005)
                assert seed < 100_000, f"the watcher opened {len(checked)} files"
            while d.scheduler.latest is None or d.scheduler.latest.params.seed != seed:
                await asyncio.sleep(0.01)
            for _ in range(200):
                health = d.health()["png_files"]
                if health["written"] + health["skipped"] == d.scheduler.stats.frames:
                    break
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        watcher.join()
    assert bad == [] and len(checked) > 10
    numbered = sorted(p.name for p in out.glob("frame-*.png"))
    assert numbered and not list(out.glob(".*.tmp"))
    last = np.asarray(Image.open(out / "latest.png"))
    assert last.shape == (256, 256, 4) and last[0, 0, 0] == 60  # the null renderer paints seed & 0xFF
