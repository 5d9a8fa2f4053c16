"""The TouchDesigner plugin's Send Input: an Input TOP's image into the daemon's input segment.

Against ``td_standin`` (TD has no Linux build) and a real demo_daemon (demo model); see td_harness.
"""

from __future__ import annotations

import numpy as np
import pytest
import td_standin
from td_harness import run_until, status, tb_session
from turbo_bridge_td import inputs

from bridge.core.scene import InputImage


def test_input_top_reaches_the_daemon_through_shared_memory(td, net, demo_daemon):
    """Send Input: the TOP's image (TD rows bottom-first, floats) becomes the daemon's input."""
    video = td.project.create(td_standin.OP_TYPES["moviefileinTOP"], "video")
    picture = np.random.default_rng(9).integers(0, 256, (48, 64, 4), np.uint8)
    picture[..., 3] = 255
    video.play(picture[::-1].copy())  # a TOP's first row is the image's bottom row
    net.par.Inputtop, net.par.Strength, net.par.Sendinput = video, 0.75, True
    digest = InputImage.from_pixels(picture).digest
    state = run_until(td, lambda: (s := demo_daemon.client.health()["input"])["digest"] == digest and s,
                      what="the TOP's image as the daemon's input")
    assert state["source"] == "shm" and state["active"] and state["shm"] == inputs.segment_name(net)
    assert demo_daemon.client.params()["strength"] == 0.75
    sender = tb_session.session_for(net).input
    written = sender.written
    for _ in range(20):
        td.run_frame()
    assert sender.written == written  # an unchanged TOP writes nothing
    picture[:8] = 0
    video.play(picture[::-1].copy())
    run_until(td, lambda: demo_daemon.client.health()["input"]["digest"] == InputImage.from_pixels(picture).digest,
              what="the changed image")
    net.par.Sendinput = False
    run_until(td, lambda: not demo_daemon.client.health()["input"]["present"], what="input dropped")
    assert sender.writer is None and status(net, "input") == "off"
    assert video.stalls == 0  # every download was numpyArray(delayed=True): no GPU stall


@pytest.mark.parametrize("channels", [1, 2])
def test_mono_and_rg_input_tops_become_rgba(td, net, demo_daemon, channels):
    """A TOP of one channel is grey, of two is red and green; the frames keep coming."""
    video = td.project.create(td_standin.OP_TYPES["moviefileinTOP"], "video")
    picture = np.random.default_rng(channels).integers(0, 256, (40, 56, channels), np.uint8)
    video.play(picture[::-1].copy())
    net.par.Inputtop, net.par.Sendinput = video, True
    rgba = np.full((40, 56, 4), 255, np.uint8)
    rgba[..., :3] = np.repeat(picture, 3, axis=2) if channels == 1 else 0
    if channels == 2:
        rgba[..., :2] = picture
    digest = InputImage.from_pixels(rgba).digest
    run_until(td, lambda: demo_daemon.client.health()["input"]["digest"] == digest, what=f"a {channels}-channel input")
    seq = demo_daemon.client.health()["frame_seq"]
    run_until(td, lambda: demo_daemon.client.health()["frame_seq"] > seq, what="frames after the input")
    assert "not" not in (status(net, "input") or "")


def test_as_rgba_keeps_three_and_four_channels():
    three = np.zeros((2, 3, 3), np.float32)
    four = np.ones((2, 3, 4), np.float32)
    assert inputs.as_rgba(three) is three and inputs.as_rgba(four) is four
    assert inputs.as_rgba(np.ones((2, 3), np.float32)).shape == (2, 3, 3)
