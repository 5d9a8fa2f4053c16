"""The bench's overlapped loop (bridge/bench/overlap.py) keeps as many frames in flight as the daemon's
overlapping queue would: two, or one per render lane where there are more. (Named apart from
tests/engine/test_overlap.py, the queue's own: pytest imports both by their base names.)"""

import numpy as np
import pytest

from bridge.bench.overlap import overlapped_frames
from bridge.bench.report import OVERLAP_MODES, lanes_of
from bridge.core.frame import Rendered


class Logged:
    """A stand-in overlapped renderer: logs each begin and each collect (``result``)."""

    def __init__(self, lanes):
        self.lanes, self.log = lanes, []

    def begin_batch(self, items):
        (_, params, _), = items
        self.log.append(("begin", params.seed))
        return self

    def ready(self):
        return True

    def result(self):
        seed = next(s for kind, s in self.log if kind == "begin" and ("collect", s) not in self.log)
        self.log.append(("collect", seed))
        return [Rendered(np.zeros((8, 8, 4), np.uint8), {})]


class Published:
    def __init__(self):
        self.frames = []

    def publish(self, frame):
        self.frames.append(frame.params.seed)


@pytest.mark.parametrize("lanes, depth", [(1, 2), (2, 2), (3, 3), (4, 4)])
def test_the_loop_keeps_as_many_frames_in_flight_as_the_queue_would(lanes, depth):
    renderer, shm = Logged(lanes), Published()
    times = overlapped_frames(renderer, "seed", 64, "none", 6, shm)
    begun = [seed for kind, seed in renderer.log if kind == "begin"]
    assert len(times) == 6 and shm.frames == begun and len(set(begun)) == 6  # each frame published, in order
    in_flight, most = 0, 0
    for kind, _ in renderer.log:
        in_flight += 1 if kind == "begin" else -1
        most = max(most, in_flight)
    assert most == depth
    first_collect = renderer.log.index(next(e for e in renderer.log if e[0] == "collect"))
    assert [kind for kind, _ in renderer.log[:first_collect]] == ["begin"] * depth


def test_the_lanes_modes_name_their_lanes():
    assert [lanes_of(mode) for mode in OVERLAP_MODES] == [1, 1, 1, 1, 2, 3, 4]


def test_a_bursty_streams_frames_per_second_come_from_its_whole_length():
    """Two lanes publish two frames close together, then wait: the median interval (1 ms) would say 1000 FPS."""
    from bridge.bench.measure import stats, stream_fps

    bursty = [1.0, 15.0, 1.0, 15.0, 1.0]
    assert stream_fps(bursty) == round(1e3 * 5 / 33, 1) and stats(bursty)["fps"] == 1000.0


def test_an_overlapped_streams_memory_is_read_after_it():
    from bridge.bench.measure import streamed_vram

    plain = {"loaded": 8.7, "after_frames": 12.0, "peak_reserved": 9.1}
    assert streamed_vram(plain, {"used": 13.5, "allocated": 9.0, "peak_allocated": 9.6, "peak_reserved": 10.2}) == {
        "loaded": 8.7, "after_frames": 13.5, "peak_allocated": 9.6, "peak_reserved": 10.2}
    assert streamed_vram(plain, {}) == plain  # the CPU: nothing measured, the plain figures stay


def test_the_timed_stream_has_each_frames_latency_and_the_render_threads_begin():
    from bridge.bench.overlap import timed_overlapped

    renderer, shm = Logged(2), Published()
    times = timed_overlapped(renderer, "seed", 64, "none", 5, shm)
    assert len(times.intervals) == 4 and len(times.latencies) == len(times.begins) == 5
    assert all(0 <= begin <= latency for begin, latency in zip(times.begins, times.latencies))
    assert shm.frames == [0, 1, 2, 3, 4]  # the untimed warm-up frame (seed -1) is not published


def test_lone_frames_are_begun_and_collected_one_at_a_time_on_seeds_apart_from_the_stream():
    from bridge.bench.overlap import LONE_SEEDS, begun_and_collected, lone_frames

    renderer = Logged(1)
    times = lone_frames(begun_and_collected(renderer), "seed", 64, "none", 0.0, frames=3, gap_s=0.0)
    assert len(times) == 3 and all(t >= 0 for t in times)
    seeds = [LONE_SEEDS + i for i in range(3)]  # not the stream's seeds 0..n: their noise is kept, so not alone
    assert renderer.log == [entry for seed in seeds for entry in (("begin", seed), ("collect", seed))]
