"""The multi-channel latency mode through a real daemon process (null and demo models)."""

from bridge.bench.multichannel import format_multichannel, run_multichannel


def test_every_channel_gets_its_own_frames(monkeypatch, cache_dir):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_multichannel("null", "full", 64, 3, 1.0, [], warmup_s=0.3, startup_timeout=120)
    assert set(report.per_channel_fps) == {"main", "ch1", "ch2"}
    assert all(fps > 0 for fps in report.per_channel_fps.values()) and report.alone_fps > 0
    assert report.timeouts == 0
    assert "3 channels" in format_multichannel(report)


def test_demo_model_channels_batch(monkeypatch, cache_dir):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_multichannel("demo", "full", 64, 2, 2.0, [], warmup_s=1.0, timeout=120, startup_timeout=300)
    assert all(fps > 0 for fps in report.per_channel_fps.values())
    # Both channels due at once (the tool's one bundle of both changes): one batch of two.
    assert report.batch_sizes.get("2", 0) >= 1, report.batch_sizes
