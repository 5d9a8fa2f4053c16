"""Krita "Layer as style image" against a daemon started without --ip-adapter: the daemon's refusal,
which names the option, reaches the docker's status."""

from __future__ import annotations

from krita_harness import pump


def test_style_without_ip_adapter_is_reported(panel, demo_daemon, new_doc):
    doc = new_doc(64, 64)
    p = panel()
    pump(lambda: p.controller.connection is not None, what="the connection")  # its note would replace ours
    p.steering.refresh_layers()
    p.steering.style_layer.setCurrentIndex(0)
    p.steering.send_style.click()
    pump(lambda: "--ip-adapter" in p.status.text(), what="the refusal")
    assert demo_daemon.client.health()["style"]["present"] is False
    assert doc is not None
