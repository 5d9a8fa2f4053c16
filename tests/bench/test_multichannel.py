"""The multi-channel latency mode through a real daemon process (null and demo models).

Each measured phase's figures come from the daemon's ``/v1/health`` counters (before and after the
phase); the checks hold them against what the closed loops counted themselves."""

import pytest

from bridge.bench.multichannel import MultiReport, format_multichannel, run_multichannel
from bridge.bench.phase_render import PhaseRender


def resolution(p: PhaseRender) -> float:
    """How far a share can read above the truth: /v1/health rounds busy_s to 1 ms (a difference of
    two is off by up to 1 ms), and the share is rounded to 3 decimals."""
    return 0.001 / p.wall_s + 0.0005


def check_phase(p: PhaseRender, most_in_flight: float) -> None:
    """A phase's counters against the loops and against each other."""
    # One change in flight per loop, each its own frame: with no change timed out, the daemon
    # rendered exactly the frames the loops saw (a warm-up's frames counted in would make it more;
    # an earlier phase's frame taken for a change's own would make the loops' count more).
    assert p.frames == p.frames_seen > 0, p
    assert sum(int(rows) * count for rows, count in p.batch_rows.items()) == p.frames, p
    assert sum(p.batch_rows.values()) == p.batches <= p.frames, p
    assert p.mean_rows_per_batch == round(p.frames / p.batches, 3), p
    assert p.rounds >= 1 and len(p.mean_batches_in_flight) == 1, p  # one device
    assert all(0 < share <= most_in_flight + resolution(p) for share in p.mean_batches_in_flight.values()), p


def check_report(report: MultiReport, most_in_flight: float) -> None:
    assert report.timeouts == 0
    check_phase(report.alone_phase, most_in_flight)
    check_phase(report.together_phase, most_in_flight)
    # Alone, main is the only channel: every batch is one frame, every round one batch.
    assert report.alone_phase.batch_rows == {"1": report.alone_phase.frames} == {"1": report.alone_phase.rounds}
    # The together phase counts the loops of every channel, not only main's.
    assert report.together_phase.frames_seen >= report.channels
    text = format_multichannel(report)
    for label, p in (("alone", report.alone_phase), (f"{report.channels} channels", report.together_phase)):
        assert f"{label}: {p.frames} frames (the loops saw {p.frames_seen}) in {p.rounds} rounds" in text


@pytest.mark.parametrize("overlap, most_in_flight", [("off", 1.0), ("on", 2.0)])  # core.renderer.MAX_IN_FLIGHT
def test_every_channel_gets_its_own_frames(overlap, most_in_flight, monkeypatch, cache_dir):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_multichannel("null", "full", 64, 3, 1.0, ["--overlap", overlap], warmup_s=0.3, startup_timeout=120)
    assert set(report.per_channel_fps) == {"main", "ch1", "ch2"}
    assert all(fps > 0 for fps in report.per_channel_fps.values()) and report.alone_fps > 0
    assert report.overlap == (overlap == "on")
    check_report(report, most_in_flight)
    assert "3 channels" in format_multichannel(report)
    assert f"--overlap {overlap}:" in format_multichannel(report)
    assert report.daemon_options == ("--overlap", overlap)  # the JSON says how the daemon ran
    assert f"daemon --overlap {overlap})" in format_multichannel(report)


def test_demo_model_channels_batch(monkeypatch, cache_dir):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    # Warm-ups this short give each loop one frame: the case where the frame left in a segment by
    # one phase could pass for the next phase's first change (check_phase: frames == frames_seen).
    report = run_multichannel("demo", "full", 64, 2, 2.0, [], warmup_s=0.01, timeout=120, startup_timeout=300)
    assert all(fps > 0 for fps in report.per_channel_fps.values())
    check_report(report, most_in_flight=1.0)
    # Both channels due at once (the tool's one bundle of both changes): one batch of two, in the
    # warm-ups between the phases, not in the alone phase.
    assert report.warmup_batch_rows.get("2", 0) >= 1, report.warmup_batch_rows
