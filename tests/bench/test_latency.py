"""``turbo-bridge latency --input``: a real daemon process, input images in, frames out."""

import pytest

from bridge.bench.latency import format_latency, run_latency


@pytest.mark.parametrize("via", ["shm", "rest"])
def test_input_latency_counts_each_inputs_own_frame(via, cache_dir, monkeypatch):
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_latency("demo", "full", 64, 5, 20.0, [], startup_timeout=120, via=via)
    assert report.received == report.sent == 5 and report.input == via
    # Each input's frame was rendered after the input was sent: its latency holds its whole render time.
    # A frame counted one early (already rendering when the input came) would make the slack negative.
    assert report.mean_render_ms > 0 and report.min_slack_ms >= 0
    assert "input image in" in format_latency(report)
    assert {"imports", "setup", "model"} <= set(report.startup_phases)  # the daemon's own, from its health
    assert "(imports " in format_latency(report)


def test_control_latency_runs_with_an_adapter_steering_every_frame(cache_dir, monkeypatch):
    """``--control NAME``: the daemon's T2I-Adapter has an image and a scale before the first change."""
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_latency("demo", "full", 64, 5, 20.0, ["--controlnet", "sketch=demo-t2i"], startup_timeout=120,
                         control="sketch")
    assert report.received == report.sent == 5 and report.control == "sketch"
    assert "steered by 'sketch'" in format_latency(report)
    with pytest.raises(Exception, match="no ControlNet named 'pose'"):  # a name the daemon lacks: said at once
        run_latency("demo", "full", 64, 5, 20.0, ["--controlnet", "sketch=demo-t2i"], startup_timeout=120,
                    control="pose")


def test_null_latency_reports_the_daemons_cpu_and_wake_ups_per_change():
    report = run_latency("null", "full", 64, 100, 100.0, [], startup_timeout=120)
    assert report.received == report.sent == 100
    assert report.cpu_ms_per_change > 0
    # Each change wakes the event loop (the datagram) and the render thread (its job) at least once.
    assert report.wakeups_by_thread["event loop"] >= 1 and report.wakeups_by_thread["gpu"] >= 0.5
    assert report.wakeups_per_change == pytest.approx(sum(report.wakeups_by_thread.values()), abs=0.05)
    assert "thread wake-ups per change (event loop" in format_latency(report)
    assert report.lone_batches is None  # overlap off: no lone batches to count


def test_an_overlapping_null_daemon_collects_lone_batches_on_the_render_thread():
    """--overlap on: the null model's batches are ready once begun (``Finished``), so a lone change's batch is
    published on the render thread, never handed over; the report counts the timed changes' batches alone."""
    report = run_latency("null", "full", 64, 50, 50.0, ["--overlap", "on"], startup_timeout=120)
    assert report.received == report.sent == 50
    lone = report.lone_batches
    assert lone["lone_handed_over"] == 0 and 1 <= lone["lone_collected_here"] <= 50, lone
    assert "gpu-out" not in report.wakeups_by_thread or report.wakeups_by_thread["gpu-out"] < 0.5
    assert f"lone batches: {lone['lone_collected_here']} collected on the render thread, 0 handed over" \
        in format_latency(report)


def test_a_stream_of_changes_through_an_overlapping_daemon_renders_the_newest_and_the_last(cache_dir, monkeypatch):
    """``--stream-rate``: changes every 5 ms, far faster than the demo model's frames on the CPU:
    latest-wins renders some of them, in order, and always the last one."""
    monkeypatch.setenv("TURBO_BRIDGE_CACHE", str(cache_dir))
    report = run_latency("demo", "full", 64, 3, 20.0, ["--overlap", "on"], startup_timeout=120, stream_rate_hz=200.0)
    stream = report.stream
    assert stream["changes"] == 3 and 0 < stream["frames"] and stream["last_shown"]
    assert stream["p50_ms"] > 0 and "not waiting for frames" in format_latency(report)
    # a change every millisecond: the demo's frames take 10-12 ms here (new seed, new prompt): most are superseded
    long = run_latency("demo", "full", 64, 40, 20.0, ["--overlap", "on"], startup_timeout=120, stream_rate_hz=1000.0,
                       stream_seeds=True)
    assert long.stream["last_shown"] and long.stream["frames"] < 40  # superseded changes were never rendered
    seeds = long.seed_stream  # then new seeds alone, the same way
    assert seeds["change"] == "seed" and seeds["last_shown"] and 0 < seeds["frames"] < 40 and seeds["p50_ms"] > 0
    assert "new seeds (the prompt unchanged)" in format_latency(long) and long.stream["change"] == "prompt"
