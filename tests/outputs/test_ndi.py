"""NDI out, in loopback: a real NDI receiver (cyndilib) finds the daemon's source and gets its frames.

The sandbox has no multicast DNS, so NDI's discovery is pointed at 127.0.0.1 with an NDI config
file (``NDI_CONFIG_DIR``, "networks.ips"), the way a show network without mDNS is set up.
"""

import asyncio
import json
import os
import time

import numpy as np
import pytest

from bridge.core.errors import ConfigError
from bridge.outputs import ndi as ndi_module
from conftest import null_factory

pytest.importorskip("cyndilib")


@pytest.fixture(scope="module")
def ndi_loopback(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ndi")
    (folder / "ndi-config.v1.json").write_text(json.dumps({"ndi": {"networks": {"ips": "127.0.0.1", "discovery": ""}}}))
    os.environ["NDI_CONFIG_DIR"] = str(folder)  # read when the NDI runtime starts (first cyndilib use)
    yield


def receive(source: str, want, timeout: float = 60.0):
    """Find ``source``, connect, and return the first RGBA frame (H x W x 4) for which ``want`` is true."""
    from cyndilib.finder import Finder
    from cyndilib.receiver import Receiver
    from cyndilib.video_frame import VideoFrameSync
    from cyndilib.wrapper.ndi_recv import RecvBandwidth, RecvColorFormat

    deadline = time.monotonic() + timeout
    with Finder() as finder:
        while not (names := [n for n in finder.get_source_names() if n.endswith(f"({source})")]):
            assert time.monotonic() < deadline, f"NDI source {source!r} not found: {finder.get_source_names()}"
            finder.wait_for_sources(1.0)
        receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        video = VideoFrameSync()
        receiver.frame_sync.set_video_frame(video)
        receiver.set_source(finder.get_source(names[0]))
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
                if not receiver.is_connected():
                    continue
                receiver.frame_sync.capture_video()
                if video.xres and video.yres:
                    pixels = video.get_array().reshape(video.yres, video.xres, 4).copy()
                    if want(pixels):
                        return pixels
        finally:
            receiver.disconnect()
    raise AssertionError(f"no matching frame from NDI source {source!r}")


def near(pixels: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return int(np.abs(pixels[..., :3].astype(int) - rgb).max()) <= 16


async def test_frames_reach_an_ndi_receiver(ndi_loopback, config, daemon_factory):
    name = f"tb-test-{os.getpid()}"
    async with daemon_factory(config, renderer_factory=null_factory, ndi=name) as d:
        loop = asyncio.get_running_loop()
        # The null renderer paints (seed & 255, seed >> 8 & 255, len(prompt), 255) everywhere.
        # NDI compresses (SpeedHQ, 4:2:2): colours come back a few levels off.
        d.scheduler.apply({"seed": 200, "prompt": "x" * 100})
        got = await loop.run_in_executor(None, receive, name, lambda p: near(p, (200, 0, 100)))
        assert got.shape == (64, 64, 4)
        d.scheduler.apply({"seed": 60, "width": 96, "height": 80})  # a new size: the source is re-created
        got = await loop.run_in_executor(None, receive, name, lambda p: near(p, (60, 0, 100)))
        assert got.shape == (80, 96, 4)
        health = d.health()["ndi"]
        assert health["name"] == name and health["sent"] >= 2 and health["errors"] == 0


def test_missing_cyndilib_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cyndilib(name, *args, **kwargs):
        if name.startswith("cyndilib"):
            raise ImportError("No module named 'cyndilib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cyndilib)
    with pytest.raises(ConfigError, match="pip install cyndilib"):
        ndi_module.NdiSender("x").start()
