"""Krita's "Layer as control" inside the real Krita (the Debian package, under Xvfb): a driver
plugin paints a line sketch into its own layer, picks it in the docker with a ControlNet name,
canny and a scale, and presses "Layer as control"; the daemon (demo model, two demo ControlNets)
must hold exactly the strokes over white paper, with the preprocess and scale, and render a
steered frame; an unknown name is reported in the docker."""

from __future__ import annotations

import pytest

from krita_harness import REFERENCE_NAME, krita_missing, run_real_krita

DAEMON_ARGS = ("--controlnet", "lines=demo", "--controlnet", "depth=demo")  # for conftest's demo_daemon


@pytest.mark.skipif(krita_missing() is not None, reason=str(krita_missing()))
def test_layer_as_control_inside_real_krita(tmp_path, demo_daemon):
    report, out, _ = run_real_krita(tmp_path, demo_daemon.url, mode="control")
    assert "error" not in report, report["error"]
    assert report["layer_roundtrip"] and report["connected"], report
    assert "sketch" in report["layers_listed"] and REFERENCE_NAME not in report["layers_listed"]
    assert report["control_sent"], report["control_state"]  # the strokes over white, pixel for pixel
    assert report["control_params"]["preprocess"] == "canny"
    assert report["control_params"]["scale"] == pytest.approx(1.2)
    assert report["control_state"]["active"] and report["steered_frame"]
    assert "layer sent as control 'lines'" in report["status_sent"]
    assert report["refused"], report["status_refused"]
    assert (out / "krita.png").stat().st_size > 10_000
