"""TouchDesigner (stand-in): the Control page's TOPs reach the daemon as ControlNet control images
through control segments of this process, with their scales; a real daemon with a demo ControlNet.

Against ``td_standin`` and conftest's demo_daemon with two demo ControlNets. What the stand-in
must model faithfully here is what test_touchdesigner.py relies on already: a
Script TOP's ``numpyArray()`` (rows bottom-first, floats 0-1), custom TOP/Str/Float parameters
read with ``eval()``, and frame starts on the main thread.
"""

import numpy as np

import td_standin
from bridge.client import HttpClient
from bridge.core.scene import InputImage
from td_harness import run_until, status, tb_session

DAEMON_ARGS = ("--controlnet", "depth=demo", "--controlnet", "edges=demo")  # for conftest's demo_daemon


def top_with(td, name, picture):
    top = td.project.create(td_standin.OP_TYPES["scriptTOP"], name)
    top.par.modoutsidecook = True
    top.copyNumpyArray(picture[::-1].copy())  # a TOP's first row is the image's bottom row
    return top


def test_control_tops_become_control_images_with_their_scales(td, net, demo_daemon):
    client: HttpClient = demo_daemon.client
    rng = np.random.default_rng(4)
    depth, lines = (rng.integers(0, 256, (40, 56, 4), np.uint8) for _ in range(2))
    depth[..., 3] = lines[..., 3] = 255
    net.par.Control1name, net.par.Control1top, net.par.Control1scale = "depth", top_with(td, "depthmap", depth), 0.7
    sketch = top_with(td, "sketch", lines)
    net.par.Control2name, net.par.Control2top = "edges", sketch
    want = {"depth": InputImage.from_pixels(depth).digest, "edges": InputImage.from_pixels(lines).digest}
    state = run_until(td, lambda: all((c := client.health()["controls"])[n]["digest"] == d for n, d in want.items())
                      and c, what="both TOPs as control images")
    assert state["depth"]["source"] == "shm" and state["edges"]["source"] == "shm"
    run_until(td, lambda: client.params()["controls"].get("depth", {}).get("scale") == 0.7, what="depth's scale")
    controls = client.health()["controls"]
    assert controls["depth"]["active"] and not controls["edges"]["active"]
    assert "edges" not in client.params()["controls"]  # scale 0: nothing to send beyond the default
    net.par.Control2scale = 1.5
    run_until(td, lambda: client.health()["controls"]["edges"]["active"], what="edges on")
    lines[:6] = 0
    sketch.copyNumpyArray(lines[::-1].copy())
    run_until(td, lambda: client.health()["controls"]["edges"]["digest"] == InputImage.from_pixels(lines).digest,
              what="the changed TOP")
    net.par.Control1name = ""  # the slot emptied: depth's image dropped, its segment gone
    run_until(td, lambda: not client.health()["controls"]["depth"]["present"], what="depth dropped")
    assert tb_session.session_for(net).control_senders[0].uploader is None
    assert status(net, "control2").startswith("sending to")


def test_an_unknown_controlnet_name_is_reported(td, net, demo_daemon):
    picture = np.zeros((8, 8, 4), np.uint8)
    net.par.Control1name, net.par.Control1top = "pose", top_with(td, "pose", picture)
    text = run_until(td, lambda: (s := status(net, "control1")) and "did not take" in s and s,
                     what="the refusal in the status table")
    assert "no ControlNet named 'pose'" in text
