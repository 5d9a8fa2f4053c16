"""``turbo-bridge latency --input``: a real daemon process, input images in, frames out."""

import pytest

from bridge.tools.latency import format_latency, run_latency


@pytest.mark.parametrize("via", ["shm", "rest"])
def test_input_latency_counts_each_inputs_own_frame(via, cache_dir, monkeypatch):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_latency("demo", "full", 64, 5, 20.0, [], startup_timeout=120, via=via)
    assert report.received == report.sent == 5 and report.input == via
    # A frame cannot show an input before it was rendered: a count off by one frame would be near 0 ms.
    assert report.p50_ms >= 0.5 * report.mean_render_ms > 0
    assert "input image in" in format_latency(report)
