"""Krita "Layer as control" against the Krita stand-in (real Qt offscreen) and a real daemon with two
demo ControlNets: a picked layer reaches the daemon as that ControlNet's control image, with the
preprocess and scale chosen in the docker; a wrong name is reported in the docker's status."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.scene import InputImage
from krita_harness import REFERENCE_NAME, pump

DAEMON_ARGS = ("--controlnet", "lines=demo", "--controlnet", "depth=demo")  # for conftest's demo_daemon


def test_a_layer_becomes_a_controlnets_control_image(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    sketch = doc.createNode("sketch", "paintlayer")
    doc.rootNode().addChildNode(sketch, None)
    lines = np.zeros((64, 64, 4), np.uint8)
    lines[..., 3] = 255
    lines[20:22, 8:56] = (255, 255, 255, 255)
    sketch.setPixelData(lines.tobytes(), 0, 0, 64, 64)  # B, G, R, A bytes
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")  # its note would replace ours
    layers = p.steering.control_layer
    layers.showPopup()  # lists the layers as they are now
    layers.hidePopup()
    assert "sketch" in [layers.itemText(i) for i in range(layers.count())]
    assert REFERENCE_NAME not in [layers.itemText(i) for i in range(layers.count())]
    layers.setCurrentText("sketch")
    p.steering.control_name.setText("lines")
    p.steering.control_preprocess.setCurrentText("canny")
    p.steering.control_scale.setValue(1.2)
    p.steering.send_control.click()
    expected = InputImage.from_pixels(lines[..., [2, 1, 0, 3]]).digest
    pump(lambda: demo_daemon.client.health()["controls"]["lines"]["digest"] == expected, what="the layer as control")
    pump(lambda: demo_daemon.client.params()["controls"].get("lines", {}).get("preprocess") == "canny",
         what="preprocess and scale")
    assert demo_daemon.client.params()["controls"]["lines"]["scale"] == pytest.approx(1.2)
    assert demo_daemon.client.health()["controls"]["lines"]["active"]
    pump(lambda: "sent as control 'lines'" in p.status.text(), what="the status")
    p.steering.control_scale.setValue(0.4)  # the scale follows the spin box
    pump(lambda: demo_daemon.client.params()["controls"]["lines"]["scale"] == pytest.approx(0.4), what="the scale")


def test_an_unknown_controlnet_name_is_reported(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")  # its note would replace ours
    p.steering.refresh_layers()
    p.steering.control_layer.setCurrentIndex(0)
    p.steering.control_name.setText("pose")
    p.steering.send_control.click()
    pump(lambda: "no ControlNet named 'pose'" in p.status.text(), what="the refusal")
    assert not p.controller.feed.send_layer_as_control("", "lines", "none", 1.0)  # no layer picked
    assert "pick a layer" in p.status.text()
    assert doc is not None
