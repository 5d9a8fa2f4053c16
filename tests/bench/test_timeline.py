"""``bench --modes timeline``' reading of the profiler's events as a card gives them (no card here):
kernels with their streams, the CPU ranges, the markers that name the streams, and the frames cut
between the publications, the first (begun alone) and the last (collected with nothing after) left out."""

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from torch.autograd import DeviceType  # noqa: E402

from bridge.bench.timeline import _row, kernels_and_ranges  # noqa: E402

CUDA = torch.device("cuda")


def event(name, start, end, device=DeviceType.CUDA, stream=0, annotation=False):
    """A ``FunctionEvent`` as far as the timeline reads it."""
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type=device,
                           is_user_annotation=annotation, device_resource_id=stream)


def cpu(name, start, end):
    return event(name, start, end, DeviceType.CPU, stream=1234)  # a CPU event's resource: its thread


# Markers 5-25 (render, stream 7) and 30-50 (decode, stream 13); four frames published at 100, 200, 300 and 400:
# two frames between 100 and 300; the last publication (400) only ends the loop.
EVENTS = [
    cpu("stream:render", 5, 25), event("vectorized_elementwise_kernel", 10, 12, stream=7),
    cpu("stream:decode", 30, 50), event("vectorized_elementwise_kernel", 35, 36, stream=13),
    *(cpu("publish", t - 5, t) for t in (100, 200, 300, 400)),
    cpu("begin", 100, 110), cpu("aten::copy_", 101, 102), cpu("ProfilerStep#1", 0, 400),
    event("begin", 100, 180, annotation=True),  # a range's GPU-side copy: no kernel
    event("ProfilerStep#1", 0, 400), event("Event Sync", 150, 199, stream=7),  # neither a kernel
    event("nvjet_gemm", 120, 180, stream=7), event("Memcpy DtoH (Device -> Pinned)", 150, 190, stream=13),
    event("nvjet_gemm", 220, 290, stream=7),
    event("Memcpy DtoH (Device -> Pinned)", 390, 395, stream=13),  # after the last frame: the drain
]


def test_the_kernels_keep_their_streams_and_the_ranges_their_names():
    kernels, ranges = kernels_and_ranges(EVENTS)
    assert [(k.name, k.stream) for k in kernels] == [
        ("vectorized_elementwise_kernel", 7), ("vectorized_elementwise_kernel", 13), ("nvjet_gemm", 7),
        ("Memcpy DtoH (Device -> Pinned)", 13), ("nvjet_gemm", 7), ("Memcpy DtoH (Device -> Pinned)", 13)]
    assert sorted({r.name for r in ranges}) == ["begin", "publish", "stream:decode", "stream:render"]


def test_the_row_has_the_frames_between_the_publications_with_the_streams_named():
    row = _row(*kernels_and_ranges(EVENTS), CUDA)
    assert (row["frames"], row["interval_ms"], row["note"]) == (2, 0.1, None)
    # frame 1: render 120-180, decode 150-190 (at once 30), busy 70; frame 2: render 220-290, busy 70
    assert (row["busy_ms"], row["idle_ms"], row["overlap_ms"]) == (0.07, 0.03, 0.015)
    assert [(s["name"], s["busy_ms"]) for s in row["streams"]] == [("render (stream 7)", 0.065),
                                                                    ("decode (stream 13)", 0.02)]
    assert "stream:render" not in row["cpu_ranges_ms"]  # the markers ran before the frames


def test_a_profile_without_device_kernels_says_so():
    cpu_events = [e for e in EVENTS if e.device_type == DeviceType.CPU]
    row = _row(*kernels_and_ranges(cpu_events), torch.device("cpu"))
    assert row["busy_ms"] is None and row["streams"] == [] and "profiled on the CPU" in row["note"]
    assert "no device kernels" in _row(*kernels_and_ranges(cpu_events), CUDA)["note"]
