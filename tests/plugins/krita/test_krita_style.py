"""Krita "Layer as style image" against the Krita stand-in (real Qt offscreen) and a real daemon with
the demo IP-Adapter: a picked layer reaches the daemon as the style image with the docker's scale,
the scale then follows the spin box, and a daemon without --ip-adapter is reported (test_krita_control
has the same for ControlNets)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.scene import InputImage
from krita_harness import REFERENCE_NAME, pump

DAEMON_ARGS = ("--ip-adapter", "demo")  # for conftest's demo_daemon


def test_a_layer_becomes_the_style_image(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    painting = doc.createNode("painting", "paintlayer")
    doc.rootNode().addChildNode(painting, None)
    pixels = np.random.default_rng(4).integers(0, 256, (64, 64, 4), np.uint8)
    pixels[..., 3] = 255
    painting.setPixelData(pixels.tobytes(), 0, 0, 64, 64)  # B, G, R, A bytes
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")  # its note would replace ours
    layers = p.steering.style_layer
    layers.showPopup()  # lists the layers as they are now
    layers.hidePopup()
    names = [layers.itemText(i) for i in range(layers.count())]
    assert "painting" in names and REFERENCE_NAME not in names
    p.steering.style_layer.setCurrentText("painting")
    p.steering.style_scale.setValue(1.3)
    p.steering.send_style.click()
    expected = InputImage.from_pixels(pixels[..., [2, 1, 0, 3]]).digest
    pump(lambda: demo_daemon.client.health()["style"]["digest"] == expected, what="the layer as style image")
    pump(lambda: demo_daemon.client.params()["style_scale"] == pytest.approx(1.3), what="the scale")
    assert demo_daemon.client.health()["style"]["active"]
    pump(lambda: "sent as style image" in p.status.text(), what="the status")
    p.steering.style_scale.setValue(0.0)  # the scale follows the spin box: 0 turns the style off
    pump(lambda: demo_daemon.client.params()["style_scale"] == 0.0, what="the scale off")
    assert not demo_daemon.client.health()["style"]["active"]
    assert not p.controller.feed.send_layer_as_style("", 1.0)  # no layer picked
    assert "pick a layer" in p.status.text()
