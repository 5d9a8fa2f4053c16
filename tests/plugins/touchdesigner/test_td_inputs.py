"""The TouchDesigner plugin's Send Input: an Input TOP's image into the daemon's input segment.

Against ``td_standin`` (TD has no Linux build) and a real demo_daemon (demo model); see td_harness.
"""

from __future__ import annotations

import numpy as np
import pytest

import td_standin
from bridge.client import ShmReader
from bridge.core.scene import InputImage
from td_harness import run_until, status, tb_session
from turbo_bridge_td import downscale, inputs, upload


def movie(td, picture: np.ndarray):
    """A Movie File In TOP showing ``picture`` (rows top-first here; a TOP's first row is the bottom)."""
    video = td.project.create(td_standin.OP_TYPES["moviefileinTOP"], "video")
    video.play(picture[::-1].copy())
    return video


def test_input_top_reaches_the_daemon_through_shared_memory(td, net, demo_daemon):
    """Send Input: the TOP's image (TD rows bottom-first, floats) becomes the daemon's input."""
    picture = np.random.default_rng(9).integers(0, 256, (48, 64, 4), np.uint8)
    picture[..., 3] = 255
    video = movie(td, picture)
    net.par.Inputtop, net.par.Strength, net.par.Sendinput = video, 0.75, True
    digest = InputImage.from_pixels(picture).digest
    state = run_until(td, lambda: (s := demo_daemon.client.health()["input"])["digest"] == digest and s,
                      what="the TOP's image as the daemon's input")
    sender = tb_session.session_for(net).input
    uploader = sender.uploader
    assert state["source"] == "shm" and state["active"] and state["shm"] == uploader.name
    assert uploader.name.startswith(inputs.segment_name(net))
    assert demo_daemon.client.params()["strength"] == 0.75
    fit = net.op("input_fit")
    written, downloads = sender.written, fit.downloads
    for _ in range(20):
        td.run_frame()
    assert sender.written == written and fit.downloads == downloads  # unchanged: not even downloaded
    picture[:8] = 0
    video.play(picture[::-1].copy())
    run_until(td, lambda: demo_daemon.client.health()["input"]["digest"] == InputImage.from_pixels(picture).digest,
              what="the changed image")
    net.par.Sendinput = False
    run_until(td, lambda: not demo_daemon.client.health()["input"]["present"], what="input dropped")
    assert sender.uploader is None and status(net, "input") == "off"
    assert uploader.join(timeout=10)
    with pytest.raises(FileNotFoundError):  # the uploader unlinked its segment
        ShmReader(uploader.name)
    assert fit.stalls == 0 and video.downloads == 0  # only delayed downloads, of the Fit TOP's image


def test_an_hd_top_reaches_python_at_the_frame_size_and_only_when_it_changes(td, net, demo_daemon):
    """A 1920x1080 TOP is stretched by the Fit TOP (TouchDesigner's GPU) to the frame size before
    any download; the HD image itself is never downloaded; a frame without a new image downloads
    nothing; a cook with the same pixels is downloaded but not written again."""
    net.par.Width, net.par.Height = 96, 64
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (1080, 1920, 4), np.uint8)
    video = movie(td, picture)
    net.par.Inputtop, net.par.Sendinput = video, True
    fit = net.op("input_fit")
    sender = tb_session.session_for(net).input

    def scaled():  # what the Fit TOP holds, as the daemon must get it: rows top-first
        return InputImage.from_pixels(fit._texture[::-1]).digest

    run_until(td, lambda: demo_daemon.client.health()["input"]["digest"] == scaled(), what="the scaled image")
    assert (fit.width, fit.height) == (96, 64) and str(fit.par.outputresolution) == "custom"
    assert video.downloads == 0 and fit.stalls == 0
    downloads, written = fit.downloads, sender.written
    for _ in range(10):
        td.run_frame()
    assert fit.downloads == downloads  # no new image: no download
    picture = rng.integers(0, 256, (1080, 1920, 4), np.uint8)
    video.play(picture[::-1].copy())
    run_until(td, lambda: demo_daemon.client.health()["input"]["digest"] == scaled(), what="the next camera frame")
    assert fit.downloads == downloads + 2  # the one that started the download, the one that took it
    taken, written = sender.uploader.taken, sender.written
    video.play(picture[::-1].copy())  # the camera cooked, the picture is the same
    run_until(td, lambda: sender.uploader.taken >= taken + 1, what="the same picture at the uploader")
    assert sender.written == written  # dropped off the main thread: nothing written, nothing sent


def test_a_network_without_the_fit_top_says_to_run_the_setup_script(td, net, demo_daemon):
    net.op("input_fit").destroy()
    net.par.Inputtop, net.par.Sendinput = movie(td, np.zeros((8, 8, 4), np.uint8)), True
    text = run_until(td, lambda: (s := status(net, "input")) and "setup script" in s and s, what="the hint")
    assert "input_fit" in text and tb_session.session_for(net).input.uploader is None


@pytest.mark.parametrize("channels", [1, 2])
def test_mono_and_rg_input_tops_become_rgba(td, net, demo_daemon, channels):
    """A TOP of one channel is grey, of two is red and green; the frames keep coming."""
    picture = np.random.default_rng(channels).integers(0, 256, (40, 56, channels), np.uint8)
    video = movie(td, picture)
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


def test_the_fit_tops_resolution_shrinks_never_grows():
    assert downscale.resolution((1920, 1080), (512, 512), keep_aspect=False) == ("custom", 512, 512)
    assert downscale.resolution((1920, 300), (512, 512), keep_aspect=False) == ("custom", 512, 512)
    assert downscale.resolution((320, 240), (512, 512), keep_aspect=False)[0] == "useinput"
    assert downscale.resolution((320, 240), (512, 512), keep_aspect=True) == ("limit", 512, 512)


def test_as_rgba_keeps_three_and_four_channels():
    three = np.zeros((2, 3, 3), np.float32)
    four = np.ones((2, 3, 4), np.float32)
    assert upload.as_rgba(three) is three and upload.as_rgba(four) is four
    assert upload.as_rgba(np.ones((2, 3), np.float32)).shape == (2, 3, 3)
