"""TouchDesigner (stand-in): the Style page's TOP reaches the daemon as the style image through a
style segment of this process, and Style Scale travels over OSC; a real daemon with the demo
IP-Adapter.

Against ``td_standin`` and conftest's demo_daemon (``--ip-adapter demo``). What the stand-in must
model faithfully is what test_td_controlnets.py relies on already: a Script TOP's ``numpyArray()``
(rows bottom-first, floats 0-1), custom TOP/Float parameters read with ``eval()``, frame starts on
the main thread.
"""

import numpy as np

from bridge.client import HttpClient
from bridge.core.scene import InputImage
from td_harness import run_until, status, tb_session
from test_td_controlnets import top_with

DAEMON_ARGS = ("--ip-adapter", "demo")  # for conftest's demo_daemon


def test_style_top_becomes_the_style_image_and_its_scale_goes_over_osc(td, net, demo_daemon):
    client: HttpClient = demo_daemon.client
    painting = np.random.default_rng(7).integers(0, 256, (48, 64, 4), np.uint8)
    painting[..., 3] = 255
    top = top_with(td, "painting", painting)
    net.par.Styletop = top
    run_until(td, lambda: client.health()["style"]["digest"] == InputImage.from_pixels(painting).digest,
              what="the TOP as the style image")
    assert client.health()["style"]["source"] == "shm" and not client.health()["style"]["active"]
    net.par.Stylescale = 0.75  # exact in an OSC float32
    run_until(td, lambda: client.params()["style_scale"] == 0.75, what="the style scale over OSC")
    assert client.health()["style"]["active"]
    painting[:8] = 0
    top.copyNumpyArray(painting[::-1].copy())
    run_until(td, lambda: client.health()["style"]["digest"] == InputImage.from_pixels(painting).digest,
              what="the changed TOP")
    assert status(net, "style").startswith("sending to")
    net.par.Styletop = None  # the TOP cleared: the daemon drops the style image, the segment goes
    run_until(td, lambda: not client.health()["style"]["present"], what="the style image dropped")
    assert tb_session.session_for(net).style_sender.uploader is None
    net.par.Stylescale = 0.0
    run_until(td, lambda: client.params()["style_scale"] == 0.0, what="the style off")
